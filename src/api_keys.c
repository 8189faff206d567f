/*-------------------------------------------------------------------------
 *
 * api_keys.c
 *	  SQL API of a tunnel's keys: tunnel_rotate_key, tunnel_rotate_cancel
 *	  and tunnel_host_key_reset.
 *
 * Like tunnel_create, each checks everything before it writes, and writes
 * in the caller's transaction; the worker applies the change at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "api.h"
#include "keys.h"
#include "validate.h"

PG_FUNCTION_INFO_V1(tunnel_host_key_reset);

/* After a legitimate bastion rebuild: trust on first use again. */
Datum
tunnel_host_key_reset(PG_FUNCTION_ARGS)
{
	char	   *name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	TunnelRow cur;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	SPI_connect();
	tunnel_lock_row(name, &cur);
	tunnel_spi_run("UPDATE tunnel_ssh.tunnel SET host_key_fingerprint = NULL, "
				   "       host_key_pinned = false WHERE name = $1",
				   1, argtypes, values, NULL);
	tunnel_forget_bastion_host_keys(name);
	SPI_finish();

	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("host key of tunnel \"%s\" forgotten", name),
			 errdetail("The next connection to %s port %d will trust and record whatever host key the bastion presents (it was %s).",
					   cur.ssh_host, cur.ssh_port,
					   cur.host_key_fingerprint ? cur.host_key_fingerprint : "not recorded yet"),
			 errhint("Compare host_key_fingerprint in tunnel_ssh.status with \"ssh-keygen -lf\" of the bastion's host key.")));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(tunnel_rotate_key);

/*
 * tunnel_rotate_key(name, key_type) returns the new authorized_keys line.
 * The old key stays in use until the bastion accepts the new one.
 */
Datum
tunnel_rotate_key(PG_FUNCTION_ARGS)
{
	char	   *name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	char	   *key_name = tunnel_arg_optional_text(fcinfo, 1);
	/* restricted came with version 1.2 of the SQL function */
	bool		restricted = PG_NARGS() < 3 || PG_ARGISNULL(2) ||
		PG_GETARG_BOOL(2);
	char	   *line;
	TunnelRow cur;
	TunnelKeyType key_type;
	TunnelKey	key;
	MemoryContext caller_cxt;
	MemoryContext old_cxt;
	char	   *comment;
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[5];

	if (key_name && !keys_type_from_name(key_name, &key_type))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown key_type \"%s\"", key_name),
				 errhint("Use \"ed25519\", \"ecdsa\" or \"rsa\".")));

	/* What outlives SPI_finish (the returned line) is made out of SPI's context. */
	caller_cxt = CurrentMemoryContext;
	SPI_connect();
	tunnel_lock_row(name, &cur);
	if (cur.next_key_fingerprint)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a key rotation is already pending for tunnel \"%s\"", name),
				 errdetail("The bastion has not accepted key %s yet.",
						   cur.next_key_fingerprint),
				 errhint("Add next_public_key from tunnel_ssh.tunnels to authorized_keys on the bastion, or call tunnel_rotate_cancel('%s') first.",
						 name)));
	if (key_name == NULL)
	{
		key_name = cur.key_type;
		if (!keys_type_from_name(key_name, &key_type))
			key_type = TUNNEL_KEY_ED25519;
	}
	if (key_type == TUNNEL_KEY_RSA)
		tunnel_notice_rsa();

	/* A comment of its own, so the DBA can tell the two lines apart. */
	{
		time_t		now = time(NULL);
		struct tm	tm;
		char		day[16];

		gmtime_r(&now, &tm);
		strftime(day, sizeof(day), "%Y%m%d", &tm);
		comment = psprintf("tunnel_ssh:%s:%s", name, day);
	}
	old_cxt = MemoryContextSwitchTo(caller_cxt);
	keys_generate(key_type, comment, &key);
	MemoryContextSwitchTo(old_cxt);

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(keys_type_name(key_type));
	values[2] = CStringGetTextDatum(key.public_line);
	values[3] = CStringGetTextDatum(key.fingerprint);
	tunnel_spi_run("UPDATE tunnel_ssh.tunnel SET next_key_type = $2, "
				   "       next_public_key = $3, next_key_fingerprint = $4, "
				   "       rotation_started = now() WHERE name = $1",
				   4, types, values, NULL);
	tunnel_spi_write_secret("UPDATE tunnel_ssh.secret SET next_private_key = $2 "
							"WHERE tunnel = $1",
							name, key.private_pem);
	keys_wipe(key.private_pem);
	line = tunnel_authorized_line(name, restricted, true);
	SPI_finish();

	ereport(NOTICE,
			(errmsg("key %s stays in use until the bastion accepts the new key %s",
					cur.key_fingerprint, key.fingerprint),
			 errhint("Add the returned line to ~%s/.ssh/authorized_keys on %s; once tunnel_ssh.status shows rotation_pending false, remove the old line.",
					 cur.ssh_user, cur.ssh_host)));
	PG_RETURN_TEXT_P(cstring_to_text(line));
}

PG_FUNCTION_INFO_V1(tunnel_rotate_cancel);

Datum
tunnel_rotate_cancel(PG_FUNCTION_ARGS)
{
	char	   *name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	TunnelRow cur;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	SPI_connect();
	tunnel_lock_row(name, &cur);
	if (cur.next_key_fingerprint == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no key rotation is pending for tunnel \"%s\"", name)));
	tunnel_spi_run("UPDATE tunnel_ssh.tunnel SET next_key_type = NULL, "
				   "       next_public_key = NULL, next_key_fingerprint = NULL, "
				   "       rotation_started = NULL WHERE name = $1",
				   1, argtypes, values, NULL);
	tunnel_spi_run("UPDATE tunnel_ssh.secret SET next_private_key = NULL "
				   "WHERE tunnel = $1",
				   1, argtypes, values, NULL);
	SPI_finish();

	ereport(NOTICE,
			(errmsg("key rotation of tunnel \"%s\" cancelled; key %s stays in use",
					name, cur.key_fingerprint),
			 errhint("Remove the line of key %s from authorized_keys on the bastion if it was added.",
					 cur.next_key_fingerprint)));
	PG_RETURN_VOID();
}
