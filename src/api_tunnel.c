/*-------------------------------------------------------------------------
 *
 * api_tunnel.c
 *	  SQL API of a tunnel as a whole: tunnel_create, tunnel_alter,
 *	  tunnel_enable/disable, tunnel_drop, tunnel_public_key and
 *	  tunnel_check_setup.
 *
 * Everything is checked before anything is written, so a bad argument
 * changes nothing.  Writes happen in the caller's transaction; the worker
 * learns of them at commit (catalog.c) and disturbs only what changed
 * (worker.c, catalog_session_differs).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "api.h"
#include "api_forward.h"
#include "catalog.h"
#include "keys.h"
#include "proxy.h"
#include "settings.h"
#include "validate.h"

static Datum
opt_datum(char *s)
{
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

/*
 * A proxy URL as given to tunnel_create or tunnel_alter: its form without
 * credentials, or an error that quotes none of it (the URL may hold a
 * password; errhidestmt keeps the statement out of the server log too).
 */
static char *
check_proxy(const char *text, const char *via)
{
	TunnelProxyUrl url;
	const char *reason;
	char	   *display;

	if (!tunnel_proxy_parse(text, &url, &reason))
	{
		tunnel_proxy_wipe(&url);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid proxy URL"),
				 errdetail("%s", reason),
				 errhint("Write socks5://[user:password@]host:port, socks5h://... (the proxy resolves the bastion's name) or http://[user:password@]host:port."),
				 errhidestmt(true)));
	}
	tunnel_proxy_wipe(&url);
	/* The jump tunnel's session carries this one: a proxy would go unused. */
	if (via)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a tunnel with via cannot have a proxy"),
				 errdetail("It reaches its bastion through tunnel \"%s\"; a proxy is used for the first hop only.",
						   via),
				 errhint("Give the proxy to tunnel \"%s\" instead.", via),
				 errhidestmt(true)));
	display = tunnel_proxy_display(&url);
	return display;
}

/*
 * An error context callback that keeps the statement out of the server log
 * (log_min_error_statement): the statement of a tunnel_create or tunnel_alter
 * with a proxy may hold its password, whatever the error is about.
 */
static void
hide_statement(void *arg)
{
	errhidestmt(true);
}

static void
hide_statement_push(ErrorContextCallback *cb)
{
	cb->callback = hide_statement;
	cb->arg = NULL;
	cb->previous = error_context_stack;
	error_context_stack = cb;
}

/*
 * Store the proxy of tunnel name: the whole URL beside its private key, the
 * form without credentials in its row; NULL removes it.  Needs SPI.
 */
static void
store_proxy(const char *name, const char *text, const char *display)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(name), opt_datum((char *) display)};

	tunnel_spi_run("UPDATE tunnel_ssh.tunnel SET proxy = $2 WHERE name = $1",
				   2, types, values, display ? NULL : " n");
	if (text)
		tunnel_spi_write_secret("UPDATE tunnel_ssh.secret SET proxy = $2 WHERE tunnel = $1",
								name, text);
	else
		tunnel_spi_run("UPDATE tunnel_ssh.secret SET proxy = NULL WHERE tunnel = $1",
					   1, types, values, NULL);
}

PG_FUNCTION_INFO_V1(tunnel_check_setup);

Datum
tunnel_check_setup(PG_FUNCTION_ARGS)
{
	char	   *db = get_database_name(MyDatabaseId);

	if (strcmp(db, tunnel_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tunnel_ssh can only be created in database \"%s\"",
						tunnel_database),
				 errdetail("The tunnel worker reads its catalog from the database named by tunnel_ssh.database."),
				 errhint("Create the extension in \"%s\", or set tunnel_ssh.database to \"%s\" and restart the server.",
						 tunnel_database, db)));
	if (!tunnel_preloaded)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tunnel_ssh is not loaded through shared_preload_libraries"),
				 errdetail("No tunnel will run until the server is restarted with it."),
				 errhint("Add tunnel_ssh to shared_preload_libraries in postgresql.conf and restart the server.")));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(tunnel_create);

/*
 * tunnel_create(name, ssh_host, remote_host, remote_port, ssh_port, ssh_user,
 *				 local_port, key_type, host_key_fingerprint) returns text
 */
Datum
tunnel_create(PG_FUNCTION_ARGS)
{
	char	   *name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	char	   *ssh_host = tunnel_arg_text(fcinfo, 1, "ssh_host");
	char	   *remote_host = tunnel_arg_text(fcinfo, 2, "remote_host");
	char	   *ssh_user = tunnel_arg_text(fcinfo, 5, "ssh_user");
	char	   *key_name = tunnel_arg_text(fcinfo, 7, "key_type");
	char	   *fingerprint = PG_ARGISNULL(8) ? NULL :
		text_to_cstring(PG_GETARG_TEXT_PP(8));
	/* via came with version 1.1 of the SQL function, restricted with 1.2 */
	char	   *via = PG_NARGS() < 10 || PG_ARGISNULL(9) ? NULL :
		text_to_cstring(PG_GETARG_TEXT_PP(9));
	bool		restricted = PG_NARGS() < 11 || PG_ARGISNULL(10) ||
		PG_GETARG_BOOL(10);
	/* proxy came with 1.4; '' is no proxy, as in tunnel_alter */
	char	   *proxy = PG_NARGS() < 12 || PG_ARGISNULL(11) ? NULL :
		text_to_cstring(PG_GETARG_TEXT_PP(11));
	char	   *proxy_display = NULL;
	TunnelLines via_before = {0};
	const char *reason;
	TunnelKeyType key_type;
	TunnelKey	key;
	MemoryContext caller_cxt;
	MemoryContext old_cxt;
	int			local_port;
	char	   *comment;
	char	   *line;
	Oid			types[11] = {TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, BOOLOID};
	Datum		values[11];
	ErrorContextCallback hide_cb;
	bool		hiding = proxy != NULL;
	ValidatedBastion bastions[VALIDATE_MAX_BASTIONS];
	int			nbastions;

	if (hiding)
		hide_statement_push(&hide_cb);
	tunnel_check_arg(validate_tunnel_name(name, &reason), &reason, "tunnel name", name);
	tunnel_check_arg(validate_host(remote_host, &reason), &reason, "remote_host", remote_host);
	tunnel_arg_port(fcinfo, 3, "remote_port");
	tunnel_arg_port(fcinfo, 4, "ssh_port");
	tunnel_check_arg(validate_bastions(ssh_host, PG_GETARG_INT32(4), bastions,
									   &nbastions, &reason),
					 &reason, "ssh_host", ssh_host);
	tunnel_check_arg(validate_user(ssh_user, &reason), &reason, "ssh_user", ssh_user);
	if (!keys_type_from_name(key_name, &key_type))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown key_type \"%s\"", key_name),
				 errhint("Use \"ed25519\", \"ecdsa\" or \"rsa\".")));
	if (fingerprint)
		fingerprint = tunnel_check_host_key_pins(fingerprint);
	if (!PG_ARGISNULL(6))
		tunnel_check_local_port(PG_GETARG_INT32(6));
	if (proxy && proxy[0] == '\0')
		proxy = NULL;
	if (proxy)
		proxy_display = check_proxy(proxy, via);

	/* What outlives SPI_finish (the returned line) is made out of SPI's context. */
	caller_cxt = CurrentMemoryContext;
	SPI_connect();
	/* Serialize creators, so two cannot pick the same free port. */
	tunnel_lock_ports();
	if (tunnel_exists(name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("tunnel \"%s\" already exists", name)));
	if (via && !tunnel_exists(via))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("tunnel \"%s\" does not exist", via),
				 errdetail("via names the tunnel through which this one reaches its bastion.")));
	/* The jump tunnel's line will have to permit this bastion too. */
	if (via)
		tunnel_lines_before(via, &via_before);
	if (PG_ARGISNULL(6))
		local_port = tunnel_pick_port();
	else
	{
		local_port = PG_GETARG_INT32(6);
		tunnel_require_port_free(local_port, NULL);
	}

	if (key_type == TUNNEL_KEY_RSA)
		tunnel_notice_rsa();

	old_cxt = MemoryContextSwitchTo(caller_cxt);
	comment = psprintf("tunnel_ssh:%s", name);
	keys_generate(key_type, comment, &key);
	MemoryContextSwitchTo(old_cxt);

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(ssh_host);
	values[2] = Int32GetDatum(PG_GETARG_INT32(4));
	values[3] = CStringGetTextDatum(ssh_user);
	values[4] = CStringGetTextDatum(key_name);
	values[5] = CStringGetTextDatum(key.public_line);
	values[6] = CStringGetTextDatum(key.fingerprint);
	values[7] = fingerprint ? CStringGetTextDatum(fingerprint) : (Datum) 0;
	values[8] = BoolGetDatum(fingerprint != NULL);
	tunnel_spi_run("INSERT INTO tunnel_ssh.tunnel (name, ssh_host, ssh_port, ssh_user, key_type, "
		"public_key, key_fingerprint, host_key_fingerprint, host_key_pinned) "
		"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
		9, types, values, fingerprint ? NULL : "       n ");
	if (via)
	{
		values[1] = CStringGetTextDatum(via);
		tunnel_spi_run("UPDATE tunnel_ssh.tunnel SET via = $2 WHERE name = $1",
			2, types, values, NULL);
	}

	types[1] = INT4OID;
	values[1] = Int32GetDatum(local_port);
	types[2] = TEXTOID;
	values[2] = CStringGetTextDatum(remote_host);
	types[3] = INT4OID;
	values[3] = Int32GetDatum(PG_GETARG_INT32(3));
	tunnel_spi_run("INSERT INTO tunnel_ssh.forward (tunnel, local_port, remote_host, remote_port) "
		"VALUES ($1, $2, $3, $4)", 4, types, values, NULL);

	tunnel_spi_write_secret("INSERT INTO tunnel_ssh.secret (tunnel, private_key) VALUES ($1, $2)",
							name, key.private_pem);
	keys_wipe(key.private_pem);
	if (proxy)
	{
		store_proxy(name, proxy, proxy_display);
		keys_wipe(proxy);
	}

	line = tunnel_authorized_line(name, restricted, false);
	if (via)
		tunnel_notice_changed_lines(via, &via_before);
	SPI_finish();
	if (hiding)
		error_context_stack = hide_cb.previous;
	PG_RETURN_TEXT_P(cstring_to_text(line));
}

PG_FUNCTION_INFO_V1(tunnel_public_key);

/*
 * tunnel_public_key(name, restricted, what, principal) returns the
 * authorized_keys line of the tunnel's key (restricted to its targets
 * unless restricted is false); with what => 'key' the bare public key a CA
 * signs, with what => 'principals' the AuthorizedPrincipalsFile line for
 * principal (by default the tunnel's ssh_user), restricted like the
 * authorized_keys line.  what and principal came with version 1.4.
 */
Datum
tunnel_public_key(PG_FUNCTION_ARGS)
{
	char	   *name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	/* restricted came with version 1.2 of the SQL function */
	bool		restricted = PG_NARGS() < 2 || PG_ARGISNULL(1) ||
		PG_GETARG_BOOL(1);
	char	   *what = PG_NARGS() > 2 ? tunnel_arg_optional_text(fcinfo, 2) : NULL;
	char	   *principal = PG_NARGS() > 3 ? tunnel_arg_optional_text(fcinfo, 3) : NULL;
	char	   *line;

	if (what == NULL)
		what = "authorized_keys";
	if (strcmp(what, "authorized_keys") != 0 && strcmp(what, "key") != 0 &&
		strcmp(what, "next_key") != 0 && strcmp(what, "principals") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown value \"%s\" for \"what\"", what),
				 errhint("Use \"authorized_keys\", \"key\" (the public key for a CA to sign), \"next_key\" (the pending key of a rotation) or \"principals\" (an AuthorizedPrincipalsFile line).")));

	SPI_connect();
	line = tunnel_authorized_line(name, restricted && what[0] == 'a',
								  what[0] == 'n');
	if (line == NULL && what[0] == 'n' && tunnel_exists(name))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no key rotation is pending for tunnel \"%s\"", name)));
	if (line == NULL)
		tunnel_not_found(name);
	if (what[0] == 'p')
	{
		if (principal == NULL)
		{
			Oid			argtypes[1] = {TEXTOID};
			Datum		values[1] = {CStringGetTextDatum(name)};

			tunnel_spi_check(SPI_execute_with_args("SELECT ssh_user FROM tunnel_ssh.tunnel WHERE name = $1",
												   1, argtypes, values, NULL, true, 1));
			principal = tunnel_spi_value(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, false);
		}
		if (principal[0] == '\0' || strpbrk(principal, " \t\r\n,") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid principal \"%s\"", principal),
					 errdetail("A principal is one word without spaces or commas.")));
		line = tunnel_principals_line(name, principal);
	}
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(line));
}

PG_FUNCTION_INFO_V1(tunnel_drop);

Datum
tunnel_drop(PG_FUNCTION_ARGS)
{
	char	   *name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	/* cascade came with version 1.1 of the SQL function */
	bool		cascade = PG_NARGS() > 1 && !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	char	   *via = NULL;
	TunnelLines via_before = {0};

	/* Tunnels that jump through this one would be left without a way in. */
	SPI_connect();
	if (catalog_has_column("via"))
	{
		/* The jump tunnel's line no longer needs to permit this bastion. */
		tunnel_spi_check(SPI_execute_with_args("SELECT via FROM tunnel_ssh.tunnel WHERE name = $1",
							  1, argtypes, values, NULL, true, 1));
		if (SPI_processed > 0)
			via = tunnel_spi_value(SPI_tuptable->vals[0],
								   SPI_tuptable->tupdesc, 1, false);
		if (via)
			tunnel_lines_before(via, &via_before);

		tunnel_spi_check(SPI_execute_with_args("SELECT name FROM tunnel_ssh.tunnel WHERE via = $1 "
							  "ORDER BY name", 1, argtypes, values, NULL, true, 1));
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("tunnel \"%s\" is used as jump host by tunnel \"%s\"",
							name, SPI_getvalue(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1)),
					 errhint("Drop the tunnels that use it first.")));
	}
	if (tunnel_exists(name))
		tunnel_drop_servers(name, cascade);
	SPI_finish();

	(void) tunnel_for_existing(fcinfo,
							   "DELETE FROM tunnel_ssh.tunnel WHERE name = $1 RETURNING name",
							   false);
	if (via)
	{
		SPI_connect();
		tunnel_notice_changed_lines(via, &via_before);
		SPI_finish();
	}
	PG_RETURN_VOID();
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
	char	   *ssh_host = tunnel_arg_optional_text(fcinfo, 1);
	char	   *ssh_user = tunnel_arg_optional_text(fcinfo, 3);
	char	   *remote_host = tunnel_arg_optional_text(fcinfo, 4);
	char	   *fingerprint = tunnel_arg_optional_text(fcinfo, 7);
	/* proxy came with 1.4: NULL keeps it, '' removes it */
	char	   *proxy = PG_NARGS() < 9 ? NULL : tunnel_arg_optional_text(fcinfo, 8);
	char	   *proxy_display = NULL;
	bool		target_given = remote_host || !PG_ARGISNULL(5) || !PG_ARGISNULL(6);
	bool		new_bastion;
	bool		forget_host_key;
	const char *reason;
	TunnelRow cur;
	Oid			types[8] = {TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, BOOLOID,
	BOOLOID};
	Datum		values[8];
	char		nulls[8];
	char	   *via;
	TunnelLines before;
	TunnelLines via_before = {0};
	ErrorContextCallback hide_cb;
	bool		hiding = proxy != NULL;
	ValidatedBastion bastions[VALIDATE_MAX_BASTIONS];
	int			nbastions;

	if (hiding)
		hide_statement_push(&hide_cb);
	if (ssh_host)
		tunnel_check_arg(validate_bastions(ssh_host, 22, bastions, &nbastions, &reason),
						 &reason, "ssh_host", ssh_host);
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
	tunnel_lock_row(name, &cur);
	via = cur.via;
	/* Its targets are in its line; its bastion is in its jump tunnel's. */
	tunnel_lines_before(name, &before);
	if (via)
		tunnel_lines_before(via, &via_before);
	/* Each bastion without a port takes the ssh_port it will have. */
	if (ssh_host)
		tunnel_check_arg(validate_bastions(ssh_host,
										   PG_ARGISNULL(2) ? cur.ssh_port : PG_GETARG_INT32(2),
										   bastions, &nbastions, &reason),
						 &reason, "ssh_host", ssh_host);
	if (target_given && cur.nforwards != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg_plural("tunnel \"%s\" has %d forward",
							   "tunnel \"%s\" has %d forwards",
							   cur.nforwards, name, cur.nforwards),
				 errdetail("remote_host, remote_port and local_port of tunnel_alter apply to a tunnel with one forward."),
				 errhint("Use tunnel_forward_add and tunnel_forward_drop to change the forwards one by one.")));
	if (!PG_ARGISNULL(6))
		tunnel_require_port_free(PG_GETARG_INT32(6), name);
	if (proxy && proxy[0] != '\0')
		proxy_display = check_proxy(proxy, via);

	/*
	 * Another bastion has another host key: unless one is given, the next
	 * connection records it anew rather than failing on the old one.
	 */
	new_bastion = (ssh_host && strcmp(ssh_host, cur.ssh_host) != 0) ||
		(!PG_ARGISNULL(2) && PG_GETARG_INT32(2) != cur.ssh_port);
	forget_host_key = new_bastion && fingerprint == NULL &&
		cur.host_key_fingerprint != NULL;
	if (new_bastion)
		tunnel_forget_bastion_host_keys(name);
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
	if (proxy)
	{
		store_proxy(name, proxy_display ? proxy : NULL, proxy_display);
		keys_wipe(proxy);
	}
	tunnel_notice_changed_lines(name, &before);
	if (via)
		tunnel_notice_changed_lines(via, &via_before);
	SPI_finish();
	if (hiding)
		error_context_stack = hide_cb.previous;
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
