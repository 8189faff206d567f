/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Reading tunnel definitions for the worker, and the commit-time signal.
 *
 * Every statement that changes tunnel_ssh.tunnel, .forward or .secret fires
 * tunnel_ssh.catalog_changed(), which arranges for the worker to be woken
 * when (and only if) the transaction commits.  A rolled-back tunnel_create
 * therefore never reaches the worker, and a committed one does at once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "pgstat.h"
#include "catalog/namespace.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "miscadmin.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "keys.h"
#include "validate.h"
#include "status.h"

/* How long a catalog write of the worker may wait for a lock (ms). */
#define WORKER_LOCK_TIMEOUT_MS 100

static bool change_pending = false;
static ProcessUtility_hook_type prev_process_utility = NULL;
static bool xact_callback_registered = false;

static void
catalog_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (change_pending)
				tunnel_status_catalog_changed();
			change_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* A prepared change is signalled at COMMIT PREPARED. */
			change_pending = false;
			break;
		default:
			break;
	}
}

/*
 * A prepared transaction's changes become visible at COMMIT PREPARED, which
 * any session may run and where no trigger of ours fires: after every
 * COMMIT PREPARED the worker looks at the catalog again (cheap, and rare).
 */
static void
catalog_process_utility(PlannedStmt *pstmt, const char *queryString,
						bool readOnlyTree, ProcessUtilityContext context,
						ParamListInfo params, QueryEnvironment *queryEnv,
						DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
	if (IsA(parsetree, TransactionStmt) &&
		((TransactionStmt *) parsetree)->kind == TRANS_STMT_COMMIT_PREPARED)
		tunnel_status_catalog_changed();
}

void
catalog_install_hooks(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = catalog_process_utility;
}

PG_FUNCTION_INFO_V1(tunnel_catalog_changed);

/*
 * Statement trigger on the catalog tables.  The worker is only told at
 * commit, when what it will read is what was committed.
 */
Datum
tunnel_catalog_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tunnel_ssh.catalog_changed() may only be called as a trigger")));

	if (!xact_callback_registered)
	{
		RegisterXactCallback(catalog_xact_callback, NULL);
		xact_callback_registered = true;
	}
	change_pending = true;
	return PointerGetDatum(NULL);
}

static char *
text_or_null(HeapTuple tuple, TupleDesc desc, int attno)
{
	return SPI_getvalue(tuple, desc, attno);
}

static int
int_value(HeapTuple tuple, TupleDesc desc, int attno)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, attno, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

static bool
bool_value(HeapTuple tuple, TupleDesc desc, int attno)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, attno, &isnull);

	return isnull ? false : DatumGetBool(d);
}

/*
 * Run step in a short transaction of the worker's own, with SPI connected
 * and a snapshot set.  The worker serves every tunnel from one process, so
 * no catalog step may hold it up or end it: a lock wait ends after
 * WORKER_LOCK_TIMEOUT_MS (a VACUUM FULL, an ALTER EXTENSION UPDATE or a
 * transaction left open on a row would stall every tunnel's traffic), and
 * an error ends only the step: it is logged at elevel with its errcode,
 * and false tells the caller to try again later.  what is the verb for
 * the log ("read", "update").
 */
/* Is a catalog step under way (catalog_handle_sigint)? */
static volatile sig_atomic_t in_step = false;

/*
 * The worker's SIGINT handler.  A lock timeout raises its error through a
 * SIGINT the process sends itself, so a catalog step must see SIGINT as any
 * backend does; a cancel that lands in a step ends only that step (logged,
 * retried).  Outside a step, pg_cancel_backend() on the worker is ignored:
 * PostgreSQL's handler would end the process, and with it every connection
 * of every tunnel, and the worker runs nothing a cancel could usefully stop.
 */
void
catalog_handle_sigint(SIGNAL_ARGS)
{
	if (in_step)
		StatementCancelHandler(postgres_signal_arg);
}

bool
catalog_run(void (*step) (void *arg), void *arg, const char *what, int elevel)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	ResourceOwner caller_owner = CurrentResourceOwner;
	volatile bool ok = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		in_step = true;
		step(arg);
		in_step = false;
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		in_step = false;
		MemoryContextSwitchTo(caller_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		CurrentResourceOwner = caller_owner;
		ereport(elevel,
				(errcode(edata->sqlerrcode),
				 errmsg("tunnel_ssh worker could not %s the tunnel catalog, will retry",
						what),
				 errdetail_internal("%s", edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	/* A cancel that came as the step ended must not end the worker. */
	QueryCancelPending = false;
	MemoryContextSwitchTo(caller_cxt);
	return ok;
}

/*
 * The forwards come in the same result as their tunnel (ordered by name), so
 * one query and one pass build the whole list.
 */
static void
read_definitions(MemoryContext result_cxt, List **defs)
{
	TunnelDef  *current = NULL;
	int			ret;

	ret = SPI_execute("SELECT t.name, t.ssh_host, t.ssh_port, t.ssh_user, "
					  "       t.key_type, t.key_fingerprint, s.private_key, "
					  "       t.host_key_fingerprint, t.host_key_pinned, t.enabled, "
					  "       f.local_port, f.remote_host, f.remote_port, "
					  "       " TUNNEL_HOST_KEY_ALGORITHMS_SQL ", "
					  "       " TUNNEL_V14_COLUMN_SQL("certificate") ", "
					  "       " TUNNEL_V14_COLUMN_SQL("next_certificate") " "
					  "FROM tunnel_ssh.tunnel t "
					  "     LEFT JOIN tunnel_ssh.secret s ON s.tunnel = t.name "
					  "     LEFT JOIN tunnel_ssh.forward f ON f.tunnel = t.name "
					  "ORDER BY t.name, f.local_port",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tunnel_ssh catalog: %s",
			 SPI_result_code_string(ret));

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *name = text_or_null(tuple, desc, 1);
		MemoryContext old;

		old = MemoryContextSwitchTo(result_cxt);
		if (current == NULL || strcmp(current->name, name) != 0)
		{
			char	   *key = SPI_getvalue(tuple, desc, 7);

			current = palloc0(sizeof(TunnelDef));
			current->name = pstrdup(name);
			current->ssh_host = text_or_null(tuple, desc, 2);
			current->ssh_port = int_value(tuple, desc, 3);
			current->ssh_user = text_or_null(tuple, desc, 4);
			current->key_type = text_or_null(tuple, desc, 5);
			current->key_fingerprint = text_or_null(tuple, desc, 6);
			current->private_key = key ? pstrdup(key) : NULL;
			current->host_key_fingerprint = text_or_null(tuple, desc, 8);
			current->host_key_pinned = bool_value(tuple, desc, 9);
			current->enabled = bool_value(tuple, desc, 10);
			current->host_key_algorithms = text_or_null(tuple, desc, 14);
			current->certificate = text_or_null(tuple, desc, 15);
			current->next_certificate = text_or_null(tuple, desc, 16);
			catalog_parse_bastions(current);
			*defs = lappend(*defs, current);
			if (key)
				keys_wipe(key);
		}
		if (SPI_getvalue(tuple, desc, 11) != NULL)
		{
			ForwardDef *fwd = palloc0(sizeof(ForwardDef));

			fwd->local_port = int_value(tuple, desc, 11);
			fwd->remote_host = text_or_null(tuple, desc, 12);
			fwd->remote_port = int_value(tuple, desc, 13);
			current->forwards = lappend(current->forwards, fwd);
		}
		MemoryContextSwitchTo(old);
	}
}

void
catalog_parse_bastions(TunnelDef *def)
{
	ValidatedBastion list[VALIDATE_MAX_BASTIONS];
	const char *reason;
	int			n;

	def->nbastions = 0;
	if (def->ssh_host == NULL ||
		!validate_bastions(def->ssh_host, def->ssh_port, list, &n, &reason))
		return;
	for (int i = 0; i < n; i++)
	{
		strlcpy(def->bastions[i].host, list[i].host, sizeof(def->bastions[i].host));
		def->bastions[i].port = list[i].port;
	}
	def->nbastions = n;
}

/*
 * The host keys recorded for bastions other than the first (1.4): each
 * goes to its bastion of its tunnel's definition.
 */
static void
read_bastion_host_keys(MemoryContext result_cxt, List *defs)
{
	if (SPI_execute("SELECT tunnel, host, port, host_key_fingerprint, host_key_algorithm "
					"FROM tunnel_ssh.bastion_host_key", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read tunnel_ssh catalog");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *tunnel = SPI_getvalue(tuple, desc, 1);
		char	   *host = SPI_getvalue(tuple, desc, 2);
		int			port = int_value(tuple, desc, 3);
		ListCell   *lc;

		foreach(lc, defs)
		{
			TunnelDef  *def = lfirst(lc);

			if (strcmp(def->name, tunnel) != 0)
				continue;
			for (int b = 1; b < def->nbastions; b++)
			{
				MemoryContext old;

				if (def->bastions[b].port != port ||
					strcmp(def->bastions[b].host, host) != 0)
					continue;
				old = MemoryContextSwitchTo(result_cxt);
				def->bastions[b].host_key_fingerprint = text_or_null(tuple, desc, 4);
				def->bastions[b].host_key_algorithms = text_or_null(tuple, desc, 5);
				MemoryContextSwitchTo(old);
			}
		}
	}
}

/* Does this relation exist?  Needs SPI. */
static bool
to_regclass_exists(const char *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	return SPI_execute_with_args("SELECT pg_catalog.to_regclass($1) IS NOT NULL",
								 1, argtypes, values, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed > 0 &&
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0;
}

/* Does the catalog last read have version 1.2's host_key_algorithms? */
static bool catalog_v12 = false;

bool
catalog_has_column(const char *attname)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(attname)};
	int			ret;

	/* Not read-only: an ALTER EXTENSION earlier in this transaction counts. */
	ret = SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_attribute "
								"WHERE attrelid = 'tunnel_ssh.tunnel'::pg_catalog.regclass "
								"  AND attname = $1 AND NOT attisdropped",
								1, argtypes, values, NULL, false, 1);
	if (ret < 0)
		elog(ERROR, "tunnel_ssh: SPI could not run a statement: %s",
			 SPI_result_code_string(ret));
	return SPI_processed > 0;
}

/*
 * Jump tunnels and key rotation came with version 1.1 of the catalog; a 1.0
 * catalog simply has neither.
 */
static void
read_v11(List *defs, MemoryContext result_cxt)
{
	ListCell   *lc;
	int			ret;

	if (!catalog_has_column("next_key_fingerprint"))
		return;
	/* A rotation edited by hand without its public key is no rotation. */
	ret = SPI_execute("SELECT t.name, t.via, "
					  "       CASE WHEN t.next_public_key IS NOT NULL "
					  "            THEN t.next_key_fingerprint END, "
					  "       t.rotation_started, s.next_private_key "
					  "FROM tunnel_ssh.tunnel t "
					  "     LEFT JOIN tunnel_ssh.secret s ON s.tunnel = t.name "
					  "WHERE t.via IS NOT NULL OR t.next_key_fingerprint IS NOT NULL",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tunnel_ssh catalog: %s",
			 SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *name = SPI_getvalue(tuple, desc, 1);

		foreach(lc, defs)
		{
			TunnelDef  *def = lfirst(lc);
			char	   *key;
			bool		isnull;
			Datum		started;

			if (strcmp(def->name, name) != 0)
				continue;
			if (SPI_getvalue(tuple, desc, 2) != NULL)
				def->via = MemoryContextStrdup(result_cxt,
											   SPI_getvalue(tuple, desc, 2));
			key = SPI_getvalue(tuple, desc, 5);
			if (key && SPI_getvalue(tuple, desc, 3))
			{
				def->next_private_key = MemoryContextStrdup(result_cxt, key);
				def->next_key_fingerprint =
					MemoryContextStrdup(result_cxt, SPI_getvalue(tuple, desc, 3));
				started = SPI_getbinval(tuple, desc, 4, &isnull);
				def->rotation_started = isnull ? 0 : DatumGetTimestampTz(started);
			}
			if (key)
				keys_wipe(key);
		}
	}
}

/*
 * The proxy of the first hop came with version 1.4: its URL, with any
 * credentials, is kept in tunnel_ssh.secret like the private key.
 */
static void
read_proxies(List *defs, MemoryContext result_cxt)
{
	int			ret;

	if (!catalog_has_column("proxy"))
		return;
	ret = SPI_execute("SELECT s.tunnel, s.proxy FROM tunnel_ssh.secret s "
					  "WHERE s.proxy IS NOT NULL",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tunnel_ssh catalog: %s",
			 SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i],
										SPI_tuptable->tupdesc, 1);
		char	   *proxy = SPI_getvalue(SPI_tuptable->vals[i],
										 SPI_tuptable->tupdesc, 2);
		ListCell   *lc;

		foreach(lc, defs)
		{
			TunnelDef  *def = lfirst(lc);

			if (strcmp(def->name, name) == 0)
				def->proxy = MemoryContextStrdup(result_cxt, proxy);
		}
		keys_wipe(proxy);
	}
}

typedef struct LoadArgs
{
	MemoryContext result_cxt;
	bool		installed;
	List	   *defs;
} LoadArgs;

static void
load_step(void *arg)
{
	LoadArgs   *la = (LoadArgs *) arg;

	pgstat_report_activity(STATE_RUNNING, "reading tunnel definitions");
	la->installed = OidIsValid(get_extension_oid("tunnel_ssh", true));
	if (la->installed)
	{
		read_definitions(la->result_cxt, &la->defs);
		read_v11(la->defs, la->result_cxt);
		read_proxies(la->defs, la->result_cxt);
		if (to_regclass_exists("tunnel_ssh.bastion_host_key"))
			read_bastion_host_keys(la->result_cxt, la->defs);
		catalog_v12 = catalog_has_column("host_key_algorithms");
	}
}

bool
catalog_load(bool *installed, List **defs, int elevel)
{
	LoadArgs	la;
	bool		ok;

	la.result_cxt = CurrentMemoryContext;
	la.installed = false;
	la.defs = NIL;
	ok = catalog_run(load_step, &la, "read", elevel);
	pgstat_report_activity(STATE_IDLE, NULL);
	if (!ok)
	{
		/* What was read before the error holds private keys too. */
		ListCell   *lc;

		foreach(lc, la.defs)
			catalog_free_def(lfirst(lc));
		la.defs = NIL;
	}
	*installed = la.installed;
	*defs = la.defs;
	return ok;
}

static char *
dup_or_null(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

TunnelDef *
catalog_copy_def(const TunnelDef *def)
{
	TunnelDef  *copy = palloc0(sizeof(TunnelDef));
	ListCell   *lc;

	copy->name = pstrdup(def->name);
	copy->ssh_host = dup_or_null(def->ssh_host);
	copy->ssh_port = def->ssh_port;
	copy->ssh_user = dup_or_null(def->ssh_user);
	copy->key_type = dup_or_null(def->key_type);
	copy->key_fingerprint = dup_or_null(def->key_fingerprint);
	copy->private_key = dup_or_null(def->private_key);
	copy->host_key_fingerprint = dup_or_null(def->host_key_fingerprint);
	copy->host_key_pinned = def->host_key_pinned;
	copy->host_key_algorithms = dup_or_null(def->host_key_algorithms);
	copy->enabled = def->enabled;
	copy->via = dup_or_null(def->via);
	copy->proxy = dup_or_null(def->proxy);
	copy->next_private_key = dup_or_null(def->next_private_key);
	copy->next_key_fingerprint = dup_or_null(def->next_key_fingerprint);
	copy->rotation_started = def->rotation_started;
	copy->certificate = dup_or_null(def->certificate);
	copy->next_certificate = dup_or_null(def->next_certificate);
	copy->nbastions = def->nbastions;
	for (int i = 0; i < def->nbastions; i++)
	{
		copy->bastions[i] = def->bastions[i];
		copy->bastions[i].host_key_fingerprint =
			dup_or_null(def->bastions[i].host_key_fingerprint);
		copy->bastions[i].host_key_algorithms =
			dup_or_null(def->bastions[i].host_key_algorithms);
	}
	foreach(lc, def->forwards)
	{
		ForwardDef *src = lfirst(lc);
		ForwardDef *dst = palloc(sizeof(ForwardDef));

		dst->local_port = src->local_port;
		dst->remote_host = dup_or_null(src->remote_host);
		dst->remote_port = src->remote_port;
		copy->forwards = lappend(copy->forwards, dst);
	}
	return copy;
}

void
catalog_free_def(TunnelDef *def)
{
	if (def->private_key)
		keys_wipe(def->private_key);
	if (def->next_private_key)
		keys_wipe(def->next_private_key);
	if (def->proxy)
		keys_wipe(def->proxy);
	list_free_deep(def->forwards);
	pfree(def);
}

static bool
str_differs(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a != b;
	return strcmp(a, b) != 0;
}

bool
catalog_stored_key_differs(const TunnelDef *a, const TunnelDef *b)
{
	return str_differs(a->private_key, b->private_key) ||
		str_differs(a->key_fingerprint, b->key_fingerprint);
}

bool
catalog_certificate_differs(const TunnelDef *a, const TunnelDef *b)
{
	return str_differs(a->certificate, b->certificate) ||
		str_differs(a->next_certificate, b->next_certificate);
}

/*
 * A rotation that starts, ends or is cancelled leaves the session alone: it
 * keeps the key it authenticated with, which is either the old key (still
 * authorized until the new one works) or the new one, now current.
 */
static bool
key_differs(const TunnelDef *a, const TunnelDef *b)
{
	if (!str_differs(a->private_key, b->private_key))
		return false;
	return str_differs(a->next_private_key, b->private_key);
}

bool
catalog_session_differs(const TunnelDef *a, const TunnelDef *b)
{
	return str_differs(a->ssh_host, b->ssh_host) ||
		a->ssh_port != b->ssh_port ||
		str_differs(a->ssh_user, b->ssh_user) ||
		key_differs(a, b) ||
		a->enabled != b->enabled ||
		str_differs(a->via, b->via) ||
		str_differs(a->proxy, b->proxy) ||
		(str_differs(a->host_key_fingerprint, b->host_key_fingerprint) &&
		 a->host_key_fingerprint != NULL);
}

typedef struct WriteArgs
{
	const char *sql;
	int			nargs;
	Oid		   *argtypes;
	Datum	   *values;
	uint64		processed;
} WriteArgs;

static void
write_step(void *arg)
{
	WriteArgs  *wa = (WriteArgs *) arg;
	int			ret;

	ret = SPI_execute_with_args(wa->sql, wa->nargs, wa->argtypes, wa->values,
								NULL, false, 0);
	if (ret < 0)
		elog(ERROR, "SPI_execute_with_args failed: %s",
			 SPI_result_code_string(ret));
	wa->processed = SPI_processed;
}

/*
 * One write in the worker's own short transaction (catalog_run).  Returns
 * whether it committed; *processed is the number of rows changed.
 */
static bool
worker_write(const char *sql, int nargs, Oid *argtypes, Datum *values,
			 uint64 *processed)
{
	WriteArgs	wa = {sql, nargs, argtypes, values, 0};
	bool		ok = catalog_run(write_step, &wa, "update", LOG);

	*processed = wa.processed;
	return ok;
}

bool
catalog_promote_key(const char *tunnel, const char *fingerprint)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	uint64		processed;

	if (RecoveryInProgress())
		return false;			/* the primary's worker does it */

	values[0] = CStringGetTextDatum(tunnel);
	values[1] = CStringGetTextDatum(fingerprint);
	/* One statement, so the old private key goes in the same commit. */
	return worker_write("WITH t AS ("
						"  UPDATE tunnel_ssh.tunnel SET key_type = next_key_type, "
						"         public_key = next_public_key, "
						"         key_fingerprint = next_key_fingerprint, "
						"         next_key_type = NULL, next_public_key = NULL, "
						"         next_key_fingerprint = NULL, rotation_started = NULL "
						"  WHERE name = $1 AND next_key_fingerprint = $2 "
						"  RETURNING name) "
						"UPDATE tunnel_ssh.secret s SET private_key = s.next_private_key, "
						"       next_private_key = NULL "
						"FROM t WHERE s.tunnel = t.name AND s.next_private_key IS NOT NULL",
						2, argtypes, values, &processed) && processed > 0;
}

CatalogWrite
catalog_record_host_key(const char *tunnel, const char *fingerprint,
						const char *algorithm)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	uint64		processed;
	bool		ok;

	if (RecoveryInProgress())
		return CATALOG_WRITE_NONE;	/* a standby keeps it in memory only */

	values[0] = CStringGetTextDatum(fingerprint);
	values[1] = CStringGetTextDatum(tunnel);
	values[2] = CStringGetTextDatum(algorithm ? algorithm : "");
	if (catalog_v12 && algorithm != NULL)
		ok = worker_write("UPDATE tunnel_ssh.tunnel SET host_key_fingerprint = $1, "
						  "       host_key_algorithms = $3 "
						  "WHERE name = $2 AND host_key_fingerprint IS NULL",
						  3, argtypes, values, &processed);
	else
		ok = worker_write("UPDATE tunnel_ssh.tunnel SET host_key_fingerprint = $1 "
						  "WHERE name = $2 AND host_key_fingerprint IS NULL",
						  2, argtypes, values, &processed);
	if (!ok)
		return CATALOG_WRITE_RETRY;
	return processed > 0 ? CATALOG_WRITE_DONE : CATALOG_WRITE_NONE;
}

CatalogWrite
catalog_record_bastion_host_key(const char *tunnel, const char *host, int port,
								const char *fingerprint, const char *algorithm)
{
	Oid			argtypes[5] = {TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID};
	Datum		values[5];
	uint64		processed;

	if (RecoveryInProgress())
		return CATALOG_WRITE_NONE;	/* a standby keeps it in memory only */
	values[0] = CStringGetTextDatum(tunnel);
	values[1] = CStringGetTextDatum(host);
	values[2] = Int32GetDatum(port);
	values[3] = CStringGetTextDatum(fingerprint);
	values[4] = CStringGetTextDatum(algorithm ? algorithm : "");
	if (!worker_write("INSERT INTO tunnel_ssh.bastion_host_key "
					  "(tunnel, host, port, host_key_fingerprint, host_key_algorithm) "
					  "SELECT $1, $2, $3, $4, NULLIF($5, '') "
					  "WHERE EXISTS (SELECT FROM tunnel_ssh.tunnel WHERE name = $1) "
					  "ON CONFLICT DO NOTHING",
					  5, argtypes, values, &processed))
		return CATALOG_WRITE_RETRY;
	return processed > 0 ? CATALOG_WRITE_DONE : CATALOG_WRITE_NONE;
}

bool
catalog_learn_host_key_algorithm(const char *tunnel, const char *pins,
								 const char *algorithm)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	uint64		processed;

	if (RecoveryInProgress() || !catalog_v12 || algorithm == NULL)
		return true;			/* nothing to write, or nowhere to */
	values[0] = CStringGetTextDatum(tunnel);
	values[1] = CStringGetTextDatum(pins);
	values[2] = CStringGetTextDatum(algorithm);
	return worker_write("UPDATE tunnel_ssh.tunnel SET host_key_algorithms = $3 "
						"WHERE name = $1 AND host_key_fingerprint = $2 "
						"  AND host_key_algorithms IS NULL",
						3, argtypes, values, &processed);
}

/*
 * The worker's own settings, whatever ALTER DATABASE or ALTER ROLE set for
 * its database: every lock it waits for is bounded (catalog_run), and no
 * object another role made can stand in for one it names without a schema.
 */
void
catalog_worker_settings(void)
{
	SetConfigOption("lock_timeout", CppAsString2(WORKER_LOCK_TIMEOUT_MS),
					PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "pg_catalog, pg_temp",
					PGC_SUSET, PGC_S_OVERRIDE);
}

typedef struct FollowArgs
{
	const char *host;
	int			failed;
} FollowArgs;

/*
 * Each server in a subtransaction of its own: one that cannot be altered
 * (a wrapper that refuses the option, a lock) leaves the others pointed.
 */
static void
follow_step(void *arg)
{
	FollowArgs *fa = (FollowArgs *) arg;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	List	   *stale = NIL;
	ListCell   *lc;
	int			ret;

	if (!to_regclass_exists("tunnel_ssh.server"))
		return;
	values[0] = CStringGetTextDatum(psprintf("host=%s", fa->host));
	ret = SPI_execute_with_args("SELECT s.server FROM tunnel_ssh.server s "
								"  JOIN pg_catalog.pg_foreign_server fs ON fs.srvname = s.server "
								"WHERE NOT $1 = ANY (coalesce(fs.srvoptions, '{}')) "
								"  AND " SERVER_IS_OURS_SQL,
								1, argtypes, values, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tunnel_ssh.server: %s",
			 SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
		stale = lappend(stale, SPI_getvalue(SPI_tuptable->vals[i],
											SPI_tuptable->tupdesc, 1));
	foreach(lc, stale)
	{
		char	   *server = lfirst(lc);
		MemoryContext cxt = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;

		BeginInternalSubTransaction(NULL);
		PG_TRY();
		{
			ret = SPI_execute(psprintf("ALTER SERVER %s OPTIONS (SET host %s)",
									   quote_identifier(server),
									   quote_literal_cstr(fa->host)),
							  false, 0);
			if (ret != SPI_OK_UTILITY)
				elog(ERROR, "SPI_execute failed: %s",
					 SPI_result_code_string(ret));
			ReleaseCurrentSubTransaction();
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			ereport(LOG,
					(errcode(edata->sqlerrcode),
					 errmsg("tunnel_ssh worker could not point foreign server \"%s\" at %s, will retry",
							server, fa->host),
					 errdetail_internal("%s", edata->message)));
			FreeErrorData(edata);
			fa->failed++;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
}

bool
catalog_servers_follow_host(const char *host)
{
	FollowArgs	fa = {host, 0};

	if (RecoveryInProgress())
		return true;
	return catalog_run(follow_step, &fa, "update", LOG) && fa.failed == 0;
}
