/*-------------------------------------------------------------------------
 *
 * dayops.c
 *	  Day-2 SQL functions: tunnel_alter, tunnel_disable/enable,
 *	  tunnel_host_key_reset, tunnel_rotate_key and tunnel_rotate_cancel.
 *
 * Like tunnel_create, each checks everything before it writes, and writes
 * in the caller's transaction; the worker applies the change at commit and
 * disturbs only what changed (worker.c, catalog_session_differs).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "keys.h"
#include "sqlapi.h"
#include "tunnel_ssh.h"
#include "validate.h"

/* The tunnel's row, locked against concurrent day-2 changes. */
typedef struct CurrentTunnel
{
	char	   *ssh_host;
	int			ssh_port;
	char	   *ssh_user;
	char	   *key_type;
	char	   *key_fingerprint;
	char	   *host_key_fingerprint;
	char	   *next_key_fingerprint;
	char	   *via;			/* jump tunnel, or NULL */
	int			nforwards;
} CurrentTunnel;

static void
lock_tunnel(const char *name, CurrentTunnel *cur)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;

	tunnel_spi_check(SPI_execute_with_args("SELECT ssh_host, ssh_port, ssh_user, key_type, key_fingerprint, "
						  "       host_key_fingerprint, next_key_fingerprint, "
						  "       (SELECT count(*) FROM tunnel_ssh.forward f "
						  "         WHERE f.tunnel = t.name)::int, via "
						  "FROM tunnel_ssh.tunnel t WHERE name = $1 FOR UPDATE",
						  1, argtypes, values, NULL, false, 1));
	if (SPI_processed == 0)
		tunnel_not_found(name);
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	cur->ssh_host = tunnel_spi_value(tuple, desc, 1, false);
	cur->ssh_port = DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull));
	cur->ssh_user = tunnel_spi_value(tuple, desc, 3, false);
	cur->key_type = tunnel_spi_value(tuple, desc, 4, false);
	cur->key_fingerprint = tunnel_spi_value(tuple, desc, 5, false);
	cur->host_key_fingerprint = tunnel_spi_value(tuple, desc, 6, false);
	cur->next_key_fingerprint = tunnel_spi_value(tuple, desc, 7, false);
	cur->nforwards = DatumGetInt32(SPI_getbinval(tuple, desc, 8, &isnull));
	cur->via = tunnel_spi_value(tuple, desc, 9, false);
}

static char *
opt_text(FunctionCallInfo fcinfo, int argno)
{
	return PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

static Datum
opt_datum(char *s)
{
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

PG_FUNCTION_INFO_V1(tunnel_alter);

/*
 * tunnel_alter(name, ssh_host, ssh_port, ssh_user, remote_host, remote_port,
 *				local_port, host_key_fingerprint): NULL keeps a value.
 */
Datum
tunnel_alter(PG_FUNCTION_ARGS)
{
	char	   *name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	char	   *ssh_host = opt_text(fcinfo, 1);
	char	   *ssh_user = opt_text(fcinfo, 3);
	char	   *remote_host = opt_text(fcinfo, 4);
	char	   *fingerprint = opt_text(fcinfo, 7);
	bool		target_given = remote_host || !PG_ARGISNULL(5) || !PG_ARGISNULL(6);
	bool		new_bastion;
	bool		forget_host_key;
	const char *reason;
	CurrentTunnel cur;
	Oid			types[8] = {TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, BOOLOID,
	BOOLOID};
	Datum		values[8];
	char		nulls[8];
	char	   *via;
	TunnelLines before;
	TunnelLines via_before = {0};

	if (ssh_host)
		tunnel_check_arg(validate_host(ssh_host, &reason), &reason, "ssh_host", ssh_host);
	if (!PG_ARGISNULL(2))
		tunnel_arg_port(fcinfo, 2, "ssh_port");
	if (ssh_user)
		tunnel_check_arg(validate_user(ssh_user, &reason), &reason, "ssh_user", ssh_user);
	if (remote_host)
		tunnel_check_arg(validate_host(remote_host, &reason), &reason, "remote_host", remote_host);
	if (!PG_ARGISNULL(5))
		tunnel_arg_port(fcinfo, 5, "remote_port");
	if (!PG_ARGISNULL(6))
		tunnel_check_local_port(PG_GETARG_INT32(6));
	if (fingerprint)
		fingerprint = tunnel_check_host_key_pins(fingerprint);

	SPI_connect();
	/* As tunnel_create: two changes cannot take the same port. */
	tunnel_lock_ports();
	lock_tunnel(name, &cur);
	via = cur.via;
	/* Its targets are in its line; its bastion is in its jump tunnel's. */
	tunnel_lines_before(name, &before);
	if (via)
		tunnel_lines_before(via, &via_before);
	if (target_given && cur.nforwards != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tunnel \"%s\" has %d forwards", name, cur.nforwards),
				 errdetail("remote_host, remote_port and local_port of tunnel_alter apply to a tunnel with one forward."),
				 errhint("Use tunnel_forward_add and tunnel_forward_drop to change the forwards one by one.")));
	if (!PG_ARGISNULL(6))
		tunnel_require_port_free(PG_GETARG_INT32(6), name);

	/*
	 * Another bastion has another host key: unless one is given, the next
	 * connection records it anew rather than failing on the old one.
	 */
	new_bastion = (ssh_host && strcmp(ssh_host, cur.ssh_host) != 0) ||
		(!PG_ARGISNULL(2) && PG_GETARG_INT32(2) != cur.ssh_port);
	forget_host_key = new_bastion && fingerprint == NULL &&
		cur.host_key_fingerprint != NULL;
	if (forget_host_key)
		ereport(NOTICE,
				(errmsg("the host key of the new bastion will be recorded on the first connection"),
				 errhint("Pass host_key_fingerprint to pin it instead.")));

	values[0] = CStringGetTextDatum(name);
	values[1] = opt_datum(ssh_host);
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : Int32GetDatum(PG_GETARG_INT32(2));
	values[3] = opt_datum(ssh_user);
	values[4] = opt_datum(fingerprint);
	values[5] = BoolGetDatum(forget_host_key);
	values[6] = BoolGetDatum(fingerprint != NULL);
	memcpy(nulls, "       ", 8);
	nulls[1] = ssh_host ? ' ' : 'n';
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	nulls[3] = ssh_user ? ' ' : 'n';
	nulls[4] = fingerprint ? ' ' : 'n';
	tunnel_spi_run("UPDATE tunnel_ssh.tunnel SET "
				   "  ssh_host = coalesce($2, ssh_host), "
				   "  ssh_port = coalesce($3, ssh_port), "
				   "  ssh_user = coalesce($4, ssh_user), "
				   "  host_key_fingerprint = CASE WHEN $7 THEN $5 "
				   "    WHEN $6 THEN NULL ELSE host_key_fingerprint END, "
				   "  host_key_pinned = CASE WHEN $7 THEN true "
				   "    WHEN $6 THEN false ELSE host_key_pinned END "
				   "WHERE name = $1",
				   7, types, values, nulls);

	if (target_given)
	{
		/* Foreign servers follow a new local port (tunnel_ssh.server). */
		types[1] = TEXTOID;
		types[2] = INT4OID;
		types[3] = INT4OID;
		values[1] = opt_datum(remote_host);
		values[2] = PG_ARGISNULL(5) ? (Datum) 0 : Int32GetDatum(PG_GETARG_INT32(5));
		values[3] = PG_ARGISNULL(6) ? (Datum) 0 : Int32GetDatum(PG_GETARG_INT32(6));
		nulls[1] = remote_host ? ' ' : 'n';
		nulls[2] = PG_ARGISNULL(5) ? 'n' : ' ';
		nulls[3] = PG_ARGISNULL(6) ? 'n' : ' ';
		tunnel_spi_run("UPDATE tunnel_ssh.forward SET "
					   "  remote_host = coalesce($2, remote_host), "
					   "  remote_port = coalesce($3, remote_port), "
					   "  local_port = coalesce($4, local_port) "
					   "WHERE tunnel = $1",
					   4, types, values, nulls);
	}
	tunnel_notice_changed_lines(name, &before);
	if (via)
		tunnel_notice_changed_lines(via, &via_before);
	SPI_finish();
	PG_RETURN_VOID();
}

static void
set_enabled(FunctionCallInfo fcinfo, bool enabled)
{
	(void) tunnel_for_existing(fcinfo,
							   enabled ?
							   "UPDATE tunnel_ssh.tunnel SET enabled = true WHERE name = $1 RETURNING name" :
							   "UPDATE tunnel_ssh.tunnel SET enabled = false WHERE name = $1 RETURNING name",
							   false);
}

PG_FUNCTION_INFO_V1(tunnel_disable);

/* Close the port and the session; keep the definition and the keys. */
Datum
tunnel_disable(PG_FUNCTION_ARGS)
{
	set_enabled(fcinfo, false);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(tunnel_enable);

Datum
tunnel_enable(PG_FUNCTION_ARGS)
{
	set_enabled(fcinfo, true);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(tunnel_host_key_reset);

/* After a legitimate bastion rebuild: trust on first use again. */
Datum
tunnel_host_key_reset(PG_FUNCTION_ARGS)
{
	char	   *name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	CurrentTunnel cur;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	SPI_connect();
	lock_tunnel(name, &cur);
	tunnel_spi_run("UPDATE tunnel_ssh.tunnel SET host_key_fingerprint = NULL, "
				   "       host_key_pinned = false WHERE name = $1",
				   1, argtypes, values, NULL);
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
	char	   *key_name = opt_text(fcinfo, 1);
	/* restricted came with version 1.2 of the SQL function */
	bool		restricted = PG_NARGS() < 3 || PG_ARGISNULL(2) ||
		PG_GETARG_BOOL(2);
	char	   *line;
	CurrentTunnel cur;
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
	lock_tunnel(name, &cur);
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
	values[1] = CStringGetTextDatum(key.private_pem);
	keys_wipe(key.private_pem);
	tunnel_spi_run("UPDATE tunnel_ssh.secret SET next_private_key = $2 "
				   "WHERE tunnel = $1",
				   2, types, values, NULL);
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
	CurrentTunnel cur;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	SPI_connect();
	lock_tunnel(name, &cur);
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
