/*-------------------------------------------------------------------------
 *
 * api_forward.c
 *	  SQL API of forwards and the foreign servers made for them:
 *	  tunnel_forward_add/drop, tunnel_server_create, tunnel_server_follow_port.
 *
 * A tunnel is a bastion, an account and a key; each forward is a target
 * behind it with a local port, carried by the same SSH session.  The
 * foreign servers that tunnel_server_create() makes are remembered in
 * tunnel_ssh.server, whose local_port follows the forward's (ON UPDATE
 * CASCADE), and a trigger there keeps the server's "port" option in step:
 * whatever changes a local port, users never copy port numbers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "api.h"
#include "catalog.h"
#include "api_forward.h"
#include "tunnel_ssh.h"
#include "validate.h"

/* Count of rows a one-text-one-int query returns. */
static uint64
count_rows(const char *sql, const char *tunnel, int port)
{
	Oid			types[2] = {TEXTOID, INT4OID};
	Datum		values[2] = {CStringGetTextDatum(tunnel), Int32GetDatum(port)};

	if (SPI_execute_with_args(sql, 2, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read tunnel_ssh catalog");
	return SPI_processed;
}

static void
require_forward(const char *tunnel, int port)
{
	if (count_rows("SELECT 1 FROM tunnel_ssh.forward WHERE tunnel = $1 AND local_port = $2",
				   tunnel, port) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("tunnel \"%s\" has no forward on local port %d",
						tunnel, port)));
}

/* The first foreign server made for a forward that still exists, or NULL. */
static char *
server_on_port(int port)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(port)};

	tunnel_spi_check(SPI_execute_with_args("SELECT s.server FROM tunnel_ssh.server s "
						  "  JOIN pg_catalog.pg_foreign_server fs ON fs.srvname = s.server "
						  "WHERE s.local_port = $1 AND " SERVER_IS_OURS_SQL " ORDER BY 1",
						  1, types, values, NULL, true, 1));
	return SPI_processed > 0 ?
		SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
}

PG_FUNCTION_INFO_V1(tunnel_forward_add);

/*
 * tunnel_forward_add(tunnel, remote_host, remote_port, local_port) returns
 * the local port.  The running session gains a listener at commit; traffic
 * on the tunnel's other forwards is not touched.
 */
Datum
tunnel_forward_add(PG_FUNCTION_ARGS)
{
	char	   *tunnel = tunnel_arg_text(fcinfo, 0, "tunnel name");
	char	   *remote_host = tunnel_arg_text(fcinfo, 1, "remote_host");
	const char *reason;
	int			local_port;
	Oid			types[4] = {TEXTOID, INT4OID, TEXTOID, INT4OID};
	Datum		values[4];
	TunnelLines before;

	tunnel_check_arg(validate_host(remote_host, &reason), &reason,
					 "remote_host", remote_host);
	tunnel_arg_port(fcinfo, 2, "remote_port");
	if (!PG_ARGISNULL(3))
		tunnel_check_local_port(PG_GETARG_INT32(3));

	SPI_connect();
	/* Serialize with tunnel_create, so two cannot pick the same port. */
	tunnel_lock_ports();
	tunnel_require(tunnel);
	tunnel_lines_before(tunnel, &before);
	if (PG_ARGISNULL(3))
		local_port = tunnel_pick_port();
	else
	{
		local_port = PG_GETARG_INT32(3);
		tunnel_require_port_free(local_port, NULL);
	}

	values[0] = CStringGetTextDatum(tunnel);
	values[1] = Int32GetDatum(local_port);
	values[2] = CStringGetTextDatum(remote_host);
	values[3] = Int32GetDatum(PG_GETARG_INT32(2));
	tunnel_spi_run("INSERT INTO tunnel_ssh.forward (tunnel, local_port, remote_host, remote_port) "
				   "VALUES ($1, $2, $3, $4)", 4, types, values, NULL);
	tunnel_notice_changed_lines(tunnel, &before);
	SPI_finish();
	PG_RETURN_INT32(local_port);
}

PG_FUNCTION_INFO_V1(tunnel_forward_drop);

/* tunnel_forward_drop(tunnel, local_port) */
Datum
tunnel_forward_drop(PG_FUNCTION_ARGS)
{
	char	   *tunnel = tunnel_arg_text(fcinfo, 0, "tunnel name");
	int			local_port;
	char	   *server;
	Oid			types[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	TunnelLines before;

	tunnel_arg_port(fcinfo, 1, "local_port");
	local_port = PG_GETARG_INT32(1);

	SPI_connect();
	tunnel_lock_ports();
	tunnel_require(tunnel);
	require_forward(tunnel, local_port);
	if (count_rows("SELECT 1 FROM tunnel_ssh.forward WHERE tunnel = $1 AND local_port <> $2",
				   tunnel, local_port) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("local port %d is the last forward of tunnel \"%s\"",
						local_port, tunnel),
				 errhint("Use tunnel_drop() to drop the tunnel.")));
	server = server_on_port(local_port);
	if (server)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("foreign server \"%s\" uses local port %d",
						server, local_port),
				 errhint("Drop the server first, or point it at another forward.")));

	tunnel_lines_before(tunnel, &before);
	values[0] = CStringGetTextDatum(tunnel);
	values[1] = Int32GetDatum(local_port);
	tunnel_spi_run("DELETE FROM tunnel_ssh.server WHERE local_port = $2 AND tunnel = $1",
				   2, types, values, NULL);
	tunnel_spi_run("DELETE FROM tunnel_ssh.forward WHERE tunnel = $1 AND local_port = $2",
				   2, types, values, NULL);
	tunnel_notice_changed_lines(tunnel, &before);
	SPI_finish();
	PG_RETURN_VOID();
}


/* Append "key 'value'" for each "key=value" element of options. */
static void
append_options(StringInfo sql, ArrayType *options)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(options, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *item;
		char	   *eq;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("options must not contain null")));
		item = TextDatumGetCString(elems[i]);
		eq = strchr(item, '=');
		if (eq == NULL || eq == item)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid option \"%s\"", item),
					 errhint("Write each option as name=value, for example 'fetch_size=10000'.")));
		*eq = '\0';
		if (strcmp(item, "host") == 0 || strcmp(item, "port") == 0 ||
			strcmp(item, "hostaddr") == 0 || strcmp(item, "dbname") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" is set by tunnel_server_create", item),
					 errdetail("The server's host and port are the tunnel's local endpoint, and dbname is an argument.")));
		appendStringInfo(sql, ", %s %s", quote_identifier(item),
						 quote_literal_cstr(eq + 1));
	}
}

/*
 * Fail unless foreign-data wrapper fdw exists in this database, with the
 * extension that provides it as the hint.  CREATE SERVER would say only that
 * the wrapper does not exist; a new user who has just installed tunnel_ssh
 * has most likely not run CREATE EXTENSION postgres_fdw yet.  The wrapper is
 * not created here: which extensions a database has is the DBA's choice.
 */
static void
require_fdw(const char *fdw)
{
	const char *extension = NULL;

	if (OidIsValid(get_foreign_data_wrapper_oid(fdw, true)))
		return;
	if (strcmp(fdw, "postgres_fdw") == 0)
		extension = "postgres_fdw";
	else if (strcmp(fdw, "dblink_fdw") == 0)
		extension = "dblink";
	if (extension)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("foreign-data wrapper \"%s\" does not exist", fdw),
				 errhint("Run CREATE EXTENSION %s in this database first.",
						 extension)));
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("foreign-data wrapper \"%s\" does not exist", fdw),
			 errhint("Create the foreign-data wrapper in this database first, usually with CREATE EXTENSION.")));
}

PG_FUNCTION_INFO_V1(tunnel_server_create);

/*
 * tunnel_server_create(server_name, tunnel, dbname, local_port, fdw,
 *						options)
 *
 * CREATE SERVER runs in the caller's transaction, with the usual checks of
 * the foreign-data wrapper (its validator sees every option).  A missing
 * wrapper is reported before anything is written, with the extension to
 * create.
 */
Datum
tunnel_server_create(PG_FUNCTION_ARGS)
{
	char	   *server = tunnel_arg_text(fcinfo, 0, "server_name");
	char	   *tunnel = tunnel_arg_text(fcinfo, 1, "tunnel name");
	char	   *dbname = tunnel_arg_text(fcinfo, 2, "dbname");
	char	   *fdw = tunnel_arg_text(fcinfo, 4, "fdw");
	const char *host = tunnel_connect_host();
	int			local_port;
	StringInfoData sql;
	Oid			types[3] = {TEXTOID, TEXTOID, INT4OID};
	Datum		values[3];

	require_fdw(fdw);
	if (host == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the tunnels have no local endpoint for server \"%s\"",
						server),
				 errdetail("The worker does not listen in tunnel_ssh.socket_directory, and tunnel_ssh.listen_address is empty."),
				 errhint("The server log says why the worker refused the socket directory; fix that, or set tunnel_ssh.listen_address.")));
	if (PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("options must not be null"),
				 errhint("Pass '{}' for no options.")));

	SPI_connect();
	tunnel_require(tunnel);
	if (PG_ARGISNULL(3))
	{
		values[0] = CStringGetTextDatum(tunnel);
		tunnel_spi_check(SPI_execute_with_args("SELECT local_port FROM tunnel_ssh.forward "
							  "WHERE tunnel = $1 ORDER BY local_port",
							  1, types, values, NULL, true, 0));
		if (SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg_plural("tunnel \"%s\" has %d forward",
								   "tunnel \"%s\" has %d forwards",
								   (int) SPI_processed,
								   tunnel, (int) SPI_processed),
					 errhint("Pass local_port to say which forward the server is for.")));
		local_port = atoi(SPI_getvalue(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1));
	}
	else
	{
		local_port = PG_GETARG_INT32(3);
		require_forward(tunnel, local_port);
	}

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "CREATE SERVER %s FOREIGN DATA WRAPPER %s "
					 "OPTIONS (host %s, port '%d', dbname %s",
					 quote_identifier(server), quote_identifier(fdw),
					 quote_literal_cstr(host), local_port,
					 quote_literal_cstr(dbname));
	append_options(&sql, PG_GETARG_ARRAYTYPE_P(5));
	appendStringInfoChar(&sql, ')');
	if (SPI_execute(sql.data, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not create server \"%s\"", server);

	values[0] = CStringGetTextDatum(server);
	values[1] = CStringGetTextDatum(tunnel);
	values[2] = Int32GetDatum(local_port);
	tunnel_spi_run("INSERT INTO tunnel_ssh.server (server, tunnel, local_port) "
				   "VALUES ($1, $2, $3)", 3, types, values, NULL);
	SPI_finish();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(tunnel_server_follow_port);

/*
 * Trigger on tunnel_ssh.server: a forward's local port changed (the row
 * followed by ON UPDATE CASCADE), so the foreign server's port follows too.
 */
Datum
tunnel_server_follow_port(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	newtup;
	bool		isnull;
	char	   *server;
	int			old_port;
	int			port;
	char	   *sql;
	Oid			types[2];
	Datum		values[2];

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tunnel_ssh.server_follow_port() may only be called as a row update trigger")));
	newtup = trigdata->tg_newtuple;
	server = TextDatumGetCString(heap_getattr(newtup, 1,
											  trigdata->tg_relation->rd_att,
											  &isnull));
	old_port = DatumGetInt32(heap_getattr(trigdata->tg_trigtuple, 3,
										  trigdata->tg_relation->rd_att,
										  &isnull));
	port = DatumGetInt32(heap_getattr(newtup, 3, trigdata->tg_relation->rd_att,
									  &isnull));

	/* Only while the server is still the one made for the old port. */
	types[0] = TEXTOID;
	values[0] = CStringGetTextDatum(server);
	types[1] = INT4OID;
	values[1] = Int32GetDatum(old_port);
	SPI_connect();
	tunnel_spi_check(SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_foreign_server fs, "
						  "  (SELECT $2 AS local_port) s "
						  "WHERE fs.srvname = $1 AND " SERVER_IS_OURS_SQL,
						  2, types, values, NULL, true, 1));
	if (SPI_processed > 0)
	{
		sql = psprintf("ALTER SERVER %s OPTIONS (SET port '%d')",
					   quote_identifier(server), port);
		if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not alter server \"%s\"", server);
	}
	SPI_finish();
	return PointerGetDatum(newtup);
}

/*
 * For tunnel_drop: the foreign servers made for this tunnel's forwards;
 * with cascade they are dropped (with what depends on them), else their
 * existence is an error.
 */
void
tunnel_drop_servers(const char *tunnel, bool cascade)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(tunnel)};
	List	   *servers = NIL;
	ListCell   *lc;

	tunnel_spi_check(SPI_execute("SELECT 1 FROM pg_catalog.pg_class c "
				"  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
				"WHERE n.nspname = 'tunnel_ssh' AND c.relname = 'server'", true, 1));
	if (SPI_processed == 0)
		return;					/* a 1.0 catalog */
	tunnel_spi_check(SPI_execute_with_args("SELECT s.server FROM tunnel_ssh.server s "
						  "  JOIN pg_catalog.pg_foreign_server fs ON fs.srvname = s.server "
						  "WHERE s.tunnel = $1 AND " SERVER_IS_OURS_SQL " ORDER BY 1",
						  1, types, values, NULL, true, 0));
	for (uint64 i = 0; i < SPI_processed; i++)
		servers = lappend(servers, SPI_getvalue(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 1));
	if (servers != NIL && !cascade)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("foreign server \"%s\" uses tunnel \"%s\"",
						(char *) linitial(servers), tunnel),
				 errhint("Drop the server first, or use tunnel_drop(name, cascade => true).")));
	foreach(lc, servers)
	{
		char	   *sql = psprintf("DROP SERVER %s CASCADE",
								   quote_identifier(lfirst(lc)));

		if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not drop server \"%s\"", (char *) lfirst(lc));
	}
}
