/*-------------------------------------------------------------------------
 *
 * api_cert.c
 *	  SQL API of OpenSSH user certificates: tunnel_certificate_set, and
 *	  tunnel_ssh.certificate_info behind tunnel_status's certificate
 *	  columns.
 *
 * A certificate is stored only when the worker can log in with it: it
 * parses (cert.c), it is a user certificate, it certifies the tunnel's key
 * (or, during a rotation, the pending key) and this server's libssh2 can
 * sign with it.  The worker uses it from the next login on; established
 * sessions keep what they logged in with.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "api.h"
#include "cert.h"

static const char *const validity_words[] = {
	[CERT_VALID] = "valid",
	[CERT_EXPIRING] = "expires soon",
	[CERT_EXPIRED] = "expired",
	[CERT_NOT_YET_VALID] = "not yet valid",
};

/* Parse or refuse: nothing is written before every check passed. */
static void
check_certificate(const char *name, const char *line, const TunnelRow *cur,
				  TunnelCert *cert, bool *next)
{
	const char *error;
	char		when[64];

	if (!cert_parse(line, cert, &error))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid OpenSSH certificate for tunnel \"%s\"", name),
				 errdetail("%s", error),
				 errhint("Pass the whole line of the KEY-cert.pub file that \"ssh-keygen -s\" wrote.")));
	if (cert->cert_type != TUNNEL_CERT_USER)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("certificate \"%s\" is a host certificate, not a user certificate",
						cert->key_id),
				 errdetail("A tunnel logs in to its bastion with a user certificate; this one was made with \"ssh-keygen -h\"."),
				 errhint("Sign the key from tunnel_public_key('%s', what => 'key') without -h.",
						 name)));
	if (cur->key_fingerprint && strcmp(cert->key_fingerprint, cur->key_fingerprint) == 0)
		*next = false;
	else if (cur->next_key_fingerprint &&
			 strcmp(cert->key_fingerprint, cur->next_key_fingerprint) == 0)
		*next = true;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("certificate \"%s\" is not of the key of tunnel \"%s\"",
						cert->key_id, name),
				 cur->next_key_fingerprint ?
				 errdetail("The certificate is of key %s; the tunnel's key is %s and its pending key %s.",
						   cert->key_fingerprint, cur->key_fingerprint,
						   cur->next_key_fingerprint) :
				 errdetail("The certificate is of key %s; the tunnel's key is %s.",
						   cert->key_fingerprint, cur->key_fingerprint),
				 errhint("Have the CA sign the key from tunnel_public_key('%s', what => 'key').",
						 name)));
	if (!cert_libssh2_can(cert->type, &error))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("this server's libssh2 %s cannot log in with a %s certificate",
						libssh2_version(0), cert->type),
				 errdetail("%s", error),
				 errhint("Use an ECDSA key (tunnel_rotate_key('%s', 'ecdsa')) or libssh2 1.11 or later.",
						 name)));
	switch (cert_validity(cert, (uint64) time(NULL)))
	{
		case CERT_EXPIRED:
			cert_format_time(cert->valid_before, when, sizeof(when));
			ereport(WARNING,
					(errcode(ERRCODE_WARNING),
					 errmsg("certificate \"%s\" expired at %s", cert->key_id, when),
					 errdetail("Tunnel \"%s\" cannot log in with it: its next login ends in auth_failed.", name)));
			break;
		case CERT_NOT_YET_VALID:
			cert_format_time(cert->valid_after, when, sizeof(when));
			ereport(WARNING,
					(errcode(ERRCODE_WARNING),
					 errmsg("certificate \"%s\" is not valid before %s", cert->key_id, when),
					 errdetail("Tunnel \"%s\" cannot log in with it before then.", name)));
			break;
		default:
			break;
	}
}

PG_FUNCTION_INFO_V1(tunnel_certificate_set);

/*
 * tunnel_certificate_set(name, certificate): store an OpenSSH user
 * certificate of the tunnel's key (or of the pending key of a rotation);
 * NULL removes the tunnel's certificates, and it logs in with the plain key.
 */
Datum
tunnel_certificate_set(PG_FUNCTION_ARGS)
{
	char	   *name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	char	   *line = tunnel_arg_optional_text(fcinfo, 1);
	TunnelRow	cur;
	TunnelCert	cert;
	bool		next = false;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	SPI_connect();
	tunnel_lock_row(name, &cur);
	values[0] = CStringGetTextDatum(name);
	if (line == NULL)
	{
		tunnel_spi_run("UPDATE tunnel_ssh.tunnel SET certificate = NULL, "
					   "       next_certificate = NULL WHERE name = $1",
					   1, types, values, NULL);
		SPI_finish();
		ereport(NOTICE,
				(errmsg("tunnel \"%s\" logs in with its plain key %s from its next login on",
						name, cur.key_fingerprint),
				 errhint("The bastion must accept the key itself: add the line from tunnel_public_key('%s') to authorized_keys.",
						 name)));
		PG_RETURN_VOID();
	}
	check_certificate(name, line, &cur, &cert, &next);
	values[1] = CStringGetTextDatum(line);
	tunnel_spi_run(next ?
				   "UPDATE tunnel_ssh.tunnel SET next_certificate = btrim($2) WHERE name = $1" :
				   "UPDATE tunnel_ssh.tunnel SET certificate = btrim($2) WHERE name = $1",
				   2, types, values, NULL);
	SPI_finish();
	if (next)
		ereport(NOTICE,
				(errmsg("certificate \"%s\" stored for the pending key %s of tunnel \"%s\"",
						cert.key_id, cert.key_fingerprint, name),
				 errdetail("The worker offers it with the new key; it becomes the tunnel's certificate when the bastion accepts the new key.")));
	PG_RETURN_VOID();
}

static TimestampTz
cert_time(uint64 t, bool after)
{
	TimestampTz ts;

	if (t == 0 && after)
		TIMESTAMP_NOBEGIN(ts);
	else if (t > (uint64) INT64CONST(253402300799))
		TIMESTAMP_NOEND(ts);
	else
		ts = time_t_to_timestamptz((pg_time_t) t);
	return ts;
}

PG_FUNCTION_INFO_V1(tunnel_certificate_info);

/* tunnel_ssh.certificate_info(certificate): what it says, or NULLs. */
Datum
tunnel_certificate_info(PG_FUNCTION_ARGS)
{
	char	   *line = text_to_cstring(PG_GETARG_TEXT_PP(0));
	TupleDesc	desc;
	TunnelCert	cert;
	const char *error;
	Datum		values[6];
	bool		nulls[6] = {0};
	Datum	   *principals;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);
	if (!cert_parse(line, &cert, &error))
		PG_RETURN_NULL();
	principals = palloc(sizeof(Datum) * (cert.nprincipals + 1));
	for (int i = 0; i < cert.nprincipals; i++)
		principals[i] = CStringGetTextDatum(cert.principals[i]);
	values[0] = PointerGetDatum(construct_array(principals, cert.nprincipals,
												TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = CStringGetTextDatum(cert.key_id);
	values[2] = CStringGetTextDatum(cert.ca_fingerprint);
	values[3] = TimestampTzGetDatum(cert_time(cert.valid_after, true));
	values[4] = TimestampTzGetDatum(cert_time(cert.valid_before, false));
	values[5] = CStringGetTextDatum(validity_words[cert_validity(&cert, (uint64) time(NULL))]);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
