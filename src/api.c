/*-------------------------------------------------------------------------
 *
 * api.c
 *	  What the SQL-callable functions (api_*.c) share: argument checks that raise the
 *	  documented errors, local port allocation, and catalog access via SPI.
 *
 * All of these run inside SPI_connect()/SPI_finish() of the caller, except
 * the argument checks, which run before anything is read or written.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>
#include <libssh2.h>

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/params.h"
#include "utils/builtins.h"

#include "catalog.h"
#include "keys.h"
#include "api.h"
#include "settings.h"
#include "validate.h"

void
tunnel_lock_row(const char *name, TunnelRow *cur)
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

char *
tunnel_arg_optional_text(FunctionCallInfo fcinfo, int argno)
{
	return PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

char *
tunnel_arg_text(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

void
tunnel_check_arg(bool ok, const char *const *reason, const char *what, const char *value)
{
	/* reason is read only here, after the validator has set it */
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s \"%s\"", what, value),
				 errdetail("%s", *reason)));
}

void
tunnel_arg_port(FunctionCallInfo fcinfo, int argno, const char *what)
{
	const char *reason;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	if (!validate_port(PG_GETARG_INT32(argno), &reason))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %d", what, PG_GETARG_INT32(argno)),
				 errdetail("%s", reason)));
}

char *
tunnel_check_host_key_pins(const char *text)
{
	char	   *pins = palloc(VALIDATE_PINS_MAXLEN);
	const char *reason;

	tunnel_check_arg(validate_host_key_pins(text, pins, VALIDATE_PINS_MAXLEN,
											&reason),
					 &reason, "host_key_fingerprint", text);
	return pins;
}

void
tunnel_check_local_port(int port)
{
	if (port < 1024 || port > 65535)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid local_port: %d", port),
				 errdetail("A local port must be between 1024 and 65535.")));
}

/*
 * libssh2 1.10 signs RSA authentication with ssh-rsa (SHA-1) only; 1.11
 * and later use rsa-sha2-512 or rsa-sha2-256 where the server takes them,
 * as every OpenSSH since 7.2 does, and need no warning.
 */
void
tunnel_notice_rsa(void)
{
#if LIBSSH2_VERSION_NUM < 0x010b00
	ereport(NOTICE,
			(errmsg("RSA authentication from this server uses ssh-rsa (SHA-1) signatures"),
			 errdetail("OpenSSH 8.8 and later refuse them by default."),
			 errhint("Set \"PubkeyAcceptedAlgorithms +ssh-rsa\" in the bastion's sshd_config, or use key_type ed25519.")));
#endif
}

char *
tunnel_port_holder(int port)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(port)};

	tunnel_spi_check(SPI_execute_with_args("SELECT tunnel FROM tunnel_ssh.forward WHERE local_port = $1",
						  1, argtypes, values, NULL, true, 1));
	return SPI_processed > 0 ? SPI_getvalue(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1) : NULL;
}

static bool
port_bindable(int port)
{
	struct addrinfo hints = {0};
	struct addrinfo *ai;
	char		service[16];
	bool		ok = true;
	int			fd;

	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	snprintf(service, sizeof(service), "%d", port);
	if (getaddrinfo(tunnel_listen_address, service, &hints, &ai) != 0)
		return true;			/* the worker reports a bad address */
	fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd >= 0)
	{
		int			one = 1;

		(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		ok = bind(fd, ai->ai_addr, ai->ai_addrlen) == 0;
		close(fd);
	}
	freeaddrinfo(ai);
	return ok;
}

void
tunnel_require_port_free(int port, const char *except)
{
	char	   *holder = tunnel_port_holder(port);

	if (holder && (except == NULL || strcmp(holder, except) != 0))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("local port %d is already used by tunnel \"%s\"",
						port, holder)));
}

void
tunnel_lock_ports(void)
{
	tunnel_spi_check(SPI_execute("LOCK TABLE tunnel_ssh.forward IN SHARE ROW EXCLUSIVE MODE",
								 false, 0));
}

int
tunnel_pick_port(void)
{
	int			low,
				high;
	const char *reason;

	if (!validate_port_range(tunnel_port_range, &low, &high, &reason))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid tunnel_ssh.port_range \"%s\"", tunnel_port_range),
				 errdetail("%s", reason)));
	for (int port = low; port <= high; port++)
		if (tunnel_port_holder(port) == NULL && port_bindable(port))
			return port;
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("no free local port in tunnel_ssh.port_range \"%s\"",
					tunnel_port_range),
			 errhint("Widen tunnel_ssh.port_range, or pass local_port.")));
	return 0;					/* keep compiler quiet */
}

bool
tunnel_exists(const char *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	tunnel_spi_check(SPI_execute_with_args("SELECT 1 FROM tunnel_ssh.tunnel WHERE name = $1",
						  1, argtypes, values, NULL, true, 1));
	return SPI_processed > 0;
}

void
tunnel_not_found(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("tunnel \"%s\" does not exist", name)));
}

void
tunnel_require(const char *name)
{
	if (!tunnel_exists(name))
		tunnel_not_found(name);
}

char *
tunnel_for_existing(FunctionCallInfo fcinfo, const char *sql, bool read_only)
{
	char	   *name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	char	   *result = NULL;

	SPI_connect();
	tunnel_spi_check(SPI_execute_with_args(sql, 1, argtypes, values, NULL, read_only, 0));
	if (SPI_processed == 0)
		tunnel_not_found(name);
	if (SPI_tuptable)
		result = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (result)
		result = MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, result);
	SPI_finish();
	return result;
}

int
tunnel_spi_check(int rc)
{
	if (rc < 0)
		elog(ERROR, "tunnel_ssh: SPI could not run a statement: %s",
			 SPI_result_code_string(rc));
	return rc;
}

void
tunnel_spi_run(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls,
										   false, 0);

	if (rc < 0)
		elog(ERROR, "tunnel_ssh catalog write failed: %s",
			 SPI_result_code_string(rc));
}

/*
 * The parameters of tunnel_spi_write_secret, served one at a time to the
 * executor.  A ParamListInfo with a fetch hook is one PostgreSQL never
 * prints (BuildParamLogString gives up on it, so neither auto_explain's
 * parameter logging nor an error's CONTEXT shows the values), and
 * declining the planner's speculative fetch keeps the key out of the plan:
 * folded into a constant, it would stand in what EXPLAIN VERBOSE,
 * auto_explain.log_verbose and debug_print_plan print.
 */
static ParamExternData *
secret_param_fetch(ParamListInfo params, int paramid, bool speculative,
				   ParamExternData *workspace)
{
	Datum	   *values = (Datum *) params->paramFetchArg;

	if (paramid < 1 || paramid > params->numParams)
		elog(ERROR, "tunnel_ssh: no parameter $%d", paramid);
	workspace->isnull = false;
	workspace->pflags = 0;
	if (speculative)
	{
		workspace->value = (Datum) 0;
		workspace->ptype = InvalidOid;
		return workspace;
	}
	workspace->value = values[paramid - 1];
	workspace->ptype = TEXTOID;
	return workspace;
}

void
tunnel_spi_write_secret(const char *sql, const char *tunnel, const char *secret)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	ParamListInfo params;
	SPIPlanPtr	plan;
	text	   *secret_text;
	int			rc;

	plan = SPI_prepare(sql, 2, types);
	if (plan == NULL)
		elog(ERROR, "tunnel_ssh: could not prepare a catalog write: %s",
			 SPI_result_code_string(SPI_result));
	secret_text = cstring_to_text(secret);
	values[0] = CStringGetTextDatum(tunnel);
	values[1] = PointerGetDatum(secret_text);
	params = makeParamList(2);
	params->paramFetch = secret_param_fetch;
	params->paramFetchArg = values;
	rc = SPI_execute_plan_with_paramlist(plan, params, false, 0);
	explicit_bzero(VARDATA(secret_text), VARSIZE(secret_text) - VARHDRSZ);
	if (rc < 0)
		elog(ERROR, "tunnel_ssh catalog write failed: %s",
			 SPI_result_code_string(rc));
	SPI_freeplan(plan);
}

char *
tunnel_spi_value(HeapTuple tuple, TupleDesc desc, int attno, bool secret)
{
	char	   *v = SPI_getvalue(tuple, desc, attno);
	char	   *copy;

	if (v == NULL)
		return NULL;
	copy = SPI_palloc(strlen(v) + 1);
	strcpy(copy, v);
	if (secret)
		keys_wipe(v);
	return copy;
}

/*
 * What a restricted key may run: shell and exec requests get this forced
 * command, which refuses and exits.  Double quotes are not allowed in it
 * (authorized_keys quoting).
 */
#define TUNNEL_FORCED_COMMAND \
	"echo 'tunnel_ssh: this key only forwards to its permitted targets' >&2; exit 1"

/*
 * The permitlisten that refuses every TCP listen (ssh -R in any form) on the
 * bastion.  "port-forwarding" gives back remote forwarding as well as local,
 * and permitopen limits local forwards only.  authorized_keys has no
 * permitlisten that means "none" (sshd rejects the whole line for
 * permitlisten="none": it wants a port), and any host:port we could name is
 * one that root, or any user where ip_unprivileged_port_start is lowered (as
 * in containers), can bind.  So the host is one no request can match: sshd
 * lowercases the requested listen host before matching it against the
 * pattern, and the pattern has capitals.  Should sshd ever match without
 * regard to case, what is left is port 1, which on a stock system only root
 * can bind.  Checked on OpenSSH 9.2, 10.0 and 10.6 (e2e).  Nothing
 * in authorized_keys closes a remote forward to a Unix socket
 * (streamlocal-forward@openssh.com): sshd checks it against no list; README
 * tells the bastion's admin to set AllowStreamLocalForwarding no.
 */
#define TUNNEL_NO_LISTEN "permitlisten=\"NONE:1\","

/*
 * The reads below are not read-only: they must see what the calling
 * function wrote before (a read-only SPI query keeps the caller's snapshot).
 */

/* Append permitopen="host:port" for each target of the tunnel; how many. */
typedef struct Permit
{
	char	   *host;
	int			port;
} Permit;

static int
permit_cmp(const void *a, const void *b)
{
	const Permit *x = a;
	const Permit *y = b;
	int			c = strcmp(x->host, y->host);

	return c != 0 ? c : x->port - y->port;
}

/*
 * The permitopen options of tunnel name's line: its targets, and every
 * bastion of the tunnels that go through it (via), sorted, each once.
 */
static uint64
append_permitopen(StringInfo line, const char *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	bool		has_via = catalog_has_column("via");
	Permit	   *permits = NULL;
	int			n = 0;
	int			cap = 0;
	int			ret;

	ret = SPI_execute_with_args(has_via ?
								"SELECT remote_host, remote_port, false FROM tunnel_ssh.forward "
								"WHERE tunnel = $1 "
								"UNION ALL SELECT ssh_host, ssh_port, true FROM tunnel_ssh.tunnel "
								"WHERE via = $1" :
								"SELECT remote_host, remote_port, false "
								"FROM tunnel_ssh.forward WHERE tunnel = $1",
								1, argtypes, values, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tunnel_ssh catalog: %s",
			 SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *host = SPI_getvalue(tuple, desc, 1);
		int			port = atoi(SPI_getvalue(tuple, desc, 2));
		bool		list = strcmp(SPI_getvalue(tuple, desc, 3), "t") == 0;
		ValidatedBastion bastions[VALIDATE_MAX_BASTIONS];
		const char *reason;
		int			nb = 0;

		if (list && validate_bastions(host, port, bastions, &nb, &reason))
			;
		else
		{
			nb = 1;
			strlcpy(bastions[0].host, host, sizeof(bastions[0].host));
			bastions[0].port = port;
		}
		for (int b = 0; b < nb; b++)
		{
			if (n == cap)
			{
				cap = cap ? cap * 2 : 16;
				permits = permits ? repalloc(permits, cap * sizeof(Permit)) :
					palloc(cap * sizeof(Permit));
			}
			permits[n].host = pstrdup(bastions[b].host);
			permits[n].port = bastions[b].port;
			n++;
		}
	}
	if (n > 1)
		qsort(permits, n, sizeof(Permit), permit_cmp);
	for (int i = 0; i < n; i++)
	{
		if (i > 0 && permit_cmp(&permits[i - 1], &permits[i]) == 0)
			continue;
		/* sshd takes an IPv6 literal in brackets, and compares it bare */
		appendStringInfo(line,
						 strchr(permits[i].host, ':') ? "permitopen=\"[%s]:%d\"," :
						 "permitopen=\"%s:%d\",",
						 permits[i].host, permits[i].port);
	}
	return n;
}

void
tunnel_forget_bastion_host_keys(const char *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	bool		isnull;

	/* Before 1.4 there is no such table (the module runs older catalogs). */
	tunnel_spi_check(SPI_execute("SELECT pg_catalog.to_regclass('tunnel_ssh.bastion_host_key') IS NOT NULL",
								 true, 1));
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									1, &isnull)))
		return;
	tunnel_spi_run("DELETE FROM tunnel_ssh.bastion_host_key WHERE tunnel = $1",
				   1, argtypes, values, NULL);
}

void
tunnel_bastion_host_keys(const char *name, const ValidatedBastion *bastions,
						 int n, char **keys, char **algorithms)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	tunnel_spi_check(SPI_execute("SELECT pg_catalog.to_regclass('tunnel_ssh.bastion_host_key') IS NOT NULL",
								 true, 1));
	if (strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") != 0)
		return;
	tunnel_spi_check(SPI_execute_with_args("SELECT host, port, host_key_fingerprint, host_key_algorithm "
										   "FROM tunnel_ssh.bastion_host_key WHERE tunnel = $1",
										   1, argtypes, values, NULL, true, 0));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *host = SPI_getvalue(tuple, desc, 1);
		int			port = atoi(SPI_getvalue(tuple, desc, 2));

		for (int i = 1; i < n; i++)
			if (bastions[i].port == port && strcmp(bastions[i].host, host) == 0)
			{
				keys[i] = tunnel_spi_value(tuple, desc, 3, false);
				algorithms[i] = tunnel_spi_value(tuple, desc, 4, false);
			}
	}
}

PG_FUNCTION_INFO_V1(tunnel_bastions);

/* tunnel_ssh.bastions(ssh_host, ssh_port): the list, one row per bastion. */
Datum
tunnel_bastions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *list = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ValidatedBastion bastions[VALIDATE_MAX_BASTIONS];
	const char *reason;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	if (!validate_bastions(list, PG_GETARG_INT32(1), bastions, &n, &reason))
		return (Datum) 0;
	for (int i = 0; i < n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {0};

		values[0] = Int32GetDatum(i + 1);
		values[1] = CStringGetTextDatum(bastions[i].host);
		values[2] = Int32GetDatum(bastions[i].port);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* A line made in SPI's context, copied to outlive SPI_finish. */
static char *
spi_copy(StringInfo line)
{
	char	   *result = SPI_palloc(line->len + 1);

	memcpy(result, line->data, line->len + 1);
	pfree(line->data);
	return result;
}

/*
 * The options that restrict a key (or a certificate's principal) to the
 * tunnel's targets, followed by a space: authorized_keys and
 * AuthorizedPrincipalsFile take the same ones.
 */
static void
append_restrictions(StringInfo line, const char *name)
{
	StringInfoData targets;

	/* No target (a catalog edited by hand): no forwarding at all. */
	initStringInfo(&targets);
	appendStringInfoString(line, "restrict,");
	if (append_permitopen(&targets, name) > 0)
		appendStringInfo(line, "port-forwarding,%s" TUNNEL_NO_LISTEN,
						 targets.data);
	appendStringInfoString(line,
						   "command=\"" TUNNEL_FORCED_COMMAND "\" ");
	pfree(targets.data);
}

char *
tunnel_authorized_line(const char *name, bool restricted, bool next)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	StringInfoData line;
	char	   *key;

	tunnel_spi_check(SPI_execute_with_args(next ?
						  "SELECT next_public_key FROM tunnel_ssh.tunnel WHERE name = $1" :
						  "SELECT public_key FROM tunnel_ssh.tunnel WHERE name = $1",
						  1, argtypes, values, NULL, false, 1));
	if (SPI_processed == 0)
		return NULL;
	key = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (key == NULL)
		return NULL;

	initStringInfo(&line);
	if (restricted)
		append_restrictions(&line, name);
	appendStringInfoString(&line, key);
	return spi_copy(&line);
}

char *
tunnel_principals_line(const char *name, const char *principal)
{
	StringInfoData line;

	initStringInfo(&line);
	append_restrictions(&line, name);
	appendStringInfoString(&line, principal);
	return spi_copy(&line);
}

void
tunnel_lines_before(const char *name, TunnelLines *before)
{
	before->current = tunnel_authorized_line(name, true, false);
	before->next = catalog_has_column("next_public_key") ?
		tunnel_authorized_line(name, true, true) : NULL;
}

static bool
line_changed(const char *before, const char *after)
{
	return after != NULL && (before == NULL || strcmp(before, after) != 0);
}

void
tunnel_notice_changed_lines(const char *name, const TunnelLines *before)
{
	TunnelLines after;

	tunnel_lines_before(name, &after);
	if (line_changed(before->current, after.current))
		ereport(NOTICE,
				(errmsg("the authorized_keys line of tunnel \"%s\" has changed",
						name),
				 errdetail("The tunnel's targets changed, and with them the permitopen list of its line.  sshd grants a session what the line permitted at its login: the worker logs in again when a client uses a target added since, and established connections stay on the previous session until they end."),
				 errhint("Replace the tunnel's line in authorized_keys on the bastion with: %s",
						 after.current)));
	if (line_changed(before->next, after.next))
		ereport(NOTICE,
				(errmsg("the authorized_keys line of the pending key of tunnel \"%s\" has changed",
						name),
				 errdetail("The tunnel's targets changed, and with them the permitopen list of its line."),
				 errhint("Use this line for the new key in authorized_keys on the bastion: %s",
						 after.next)));
}
