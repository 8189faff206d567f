/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background worker: one event loop for every tunnel.
 *
 * The worker keeps, per tunnel, its definition, its status slot, its
 * forwards (their listeners: forwards.c) and its SSH session.  Each round
 * it runs the sessions' timers, gives libssh2 its turn
 * (tunnel_conn_service_all), then sleeps in one WaitEventSet over the
 * latch, postmaster death and every socket.  Catalog changes arrive through
 * the latch at commit (catalog.c); a slow poll only backs that up, and
 * covers hot standbys, where triggers do not fire.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/resource.h>
#include <unistd.h>
#include <libssh2.h>

#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "channel.h"
#include "clients.h"
#include "conn.h"
#include "forwards.h"
#include "hostkeys.h"
#include "keys.h"
#if LIBSSH2_VERSION_NUM < 0x010b00
#include "keystream.h"
#endif
#include "listener.h"
#include "pool.h"
#include "settings.h"
#include "status.h"
#include "validate.h"
#include "watch.h"
#include "worker.h"

/* Backstop for missed signals; on a standby the only way to see changes. */
#define POLL_INTERVAL_MS		60000
#define STANDBY_POLL_INTERVAL_MS 5000
/*
 * A catalog that could not be read (a lock held past lock_timeout, an
 * error) is read again after this, doubling up to the cap: each try may
 * hold up every tunnel for up to the lock timeout.
 */
#define CATALOG_RETRY_FIRST_MS	250
#define CATALOG_RETRY_MAX_MS	2000
/*
 * A pending rotation's key is tried 10 s after the rotation starts, then
 * ever less often, down to once in 5 minutes.  Each try the bastion refuses
 * is a failed login, which OpenSSH 9.8+ penalises (see pool.c).
 */
#define KEY_CHECK_FIRST_MS		10000
#define KEY_CHECK_MAX_MS		300000

typedef struct WorkerTunnel WorkerTunnel;

struct WorkerTunnel
{
	MemoryContext cxt;
	MemoryContext def_cxt;		/* holds def only, replaced on change */
	TunnelDef  *def;
	TunnelStatusSlot *slot;
	TunnelPool *pool;			/* NULL when disabled, invalid or unbound */
	TunnelForwards forwards;	/* their listeners (forwards.c) */
	bool		runnable;		/* enabled and valid */
	bool		key_usable;		/* def's private key parses and matches */

	/* a rotation's key, tried beside a session that uses the old one */
	TunnelKeyCheck *key_check;
	TimestampTz key_check_at;
	int			key_check_failures;
};

static MemoryContext worker_cxt;
static MemoryContext round_cxt;	/* emptied after every round of the loop */
static List *tunnels = NIL;
/* The listen settings the listeners were made with. */
static char *bound_address = NULL;
/* A client on one of t's ports (forwards.c): its session serves it. */
static void
on_accept(void *arg, pgsocket client, const char *remote_host,
		  int remote_port, TunnelForwardSlot *slot)
{
	WorkerTunnel *t = (WorkerTunnel *) arg;

	if (t->pool == NULL)
	{
		close(client);
		return;
	}
	tunnel_pool_add_client(t->pool, client, remote_host, remote_port,
							  slot);
}

/*
 * Parse the stored key with OpenSSL before libssh2 sees it: libssh2 reports
 * a damaged key as a generic authentication error, which would read as a
 * network problem and be retried for ever.  Done when the key text changes
 * (set_def), not on every reload or bind retry.
 */
static bool
key_matches(const char *private_key, const char *fingerprint)
{
	char	   *line;
	char	   *seen;
	bool		ok;

	if (private_key == NULL || fingerprint == NULL ||
		!keys_public_from_private(private_key, "", &line, &seen))
		return false;
	ok = strcmp(seen, fingerprint) == 0;
	pfree(line);
	pfree(seen);
	return ok;
}

/*
 * A superuser can write anything into the catalog by hand; what we cannot
 * use puts only this tunnel into state "invalid".
 */
static const char *
invalid_reason(const WorkerTunnel *t)
{
	const TunnelDef *def = t->def;
	const char *reason;
	ListCell   *lc;
	ValidatedBastion bastions[VALIDATE_MAX_BASTIONS];
	int			nbastions;

	if (!validate_bastions(def->ssh_host, def->ssh_port, bastions, &nbastions,
						   &reason) ||
		!validate_port(def->ssh_port, &reason) ||
		!validate_user(def->ssh_user, &reason))
		return reason;
	if (def->private_key == NULL || def->key_fingerprint == NULL ||
		def->key_type == NULL)
		return "The tunnel has no private key.";
	if (!t->key_usable)
		return "The stored private key cannot be read or does not match key_fingerprint; recreate the tunnel.";
	if (def->forwards == NIL)
		return "The tunnel has no forward.";
	if (def->via && strcmp(def->via, def->name) == 0)
		return "A tunnel cannot jump through itself.";
	foreach(lc, def->forwards)
	{
		ForwardDef *fd = lfirst(lc);

		if (!validate_host(fd->remote_host, &reason) ||
			!validate_port(fd->remote_port, &reason) ||
			!validate_port(fd->local_port, &reason))
			return reason;
	}
	return NULL;
}

/* For pool.c (tunnel_pool_set_lookup): a jump tunnel's pool. */
static TunnelPool *
pool_of(const char *name)
{
	ListCell   *lc;

	foreach(lc, tunnels)
	{
		WorkerTunnel *t = lfirst(lc);

		if (strcmp(t->def->name, name) == 0)
			return t->pool;
	}
	return NULL;
}

static void
stop_key_check(WorkerTunnel *t)
{
	if (t->key_check)
		tunnel_key_check_destroy(t->key_check);
	t->key_check = NULL;
}

/* Bring sockets and session in line with t->def. */
static void
apply(WorkerTunnel *t)
{
	const char *reason = invalid_reason(t);

	tunnel_status_set_definition(t->slot, t->def->next_key_fingerprint,
								 t->def->rotation_started, t->def->via);
	t->runnable = reason == NULL && t->def->enabled;
	if (!t->runnable)
	{
		if (t->pool)
			tunnel_pool_destroy(t->pool);
		t->pool = NULL;
		stop_key_check(t);
		tunnel_forwards_close(&t->forwards);
		if (reason)
		{
			char		text[TUNNEL_ERROR_MAXLEN];

			snprintf(text, sizeof(text), "invalid definition: %s", reason);
			tunnel_status_set_state(t->slot, TUNNEL_STATE_INVALID, text);
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("tunnel \"%s\" has an invalid definition and is not started",
							t->def->name),
					 errdetail("%s", reason)));
		}
		else
			tunnel_status_set_state(t->slot, TUNNEL_STATE_DISABLED, "");
		return;
	}

	tunnel_forwards_sync(&t->forwards, t->def);
	if (!tunnel_forwards_bind(&t->forwards))
	{
		t->forwards.bind_retry_at =
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										TUNNEL_FORWARDS_BIND_RETRY_MS);
		/* A tunnel that cannot listen anywhere has no use for a session yet. */
		if (t->pool == NULL && list_length(t->forwards.list) == 1)
			return;
	}
	else if (t->forwards.bind_failed)
	{
		/* Every port listens again: a running session shows again. */
		t->forwards.bind_failed = false;
		if (t->pool && tunnel_pool_ready(t->pool))
			tunnel_status_set_state(t->slot, TUNNEL_STATE_CONNECTED, "");
	}
	if (t->pool == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(t->cxt);

		t->pool = tunnel_pool_create(t->def, t->slot);
		MemoryContextSwitchTo(old);
	}
	else
		tunnel_pool_set_def(t->pool, t->def);
}

static void
set_def(WorkerTunnel *t, const TunnelDef *def)
{
	MemoryContext def_cxt = AllocSetContextCreate(t->cxt, "tunnel definition",
												  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(def_cxt);
	TunnelDef  *copy = catalog_copy_def(def);

	MemoryContextSwitchTo(old);
	if (t->def == NULL || catalog_stored_key_differs(t->def, copy))
		t->key_usable = key_matches(copy->private_key, copy->key_fingerprint);
	if (t->def)
	{
		if (t->def->private_key)
			keys_wipe(t->def->private_key);
		if (t->def->next_private_key)
			keys_wipe(t->def->next_private_key);
		MemoryContextDelete(t->def_cxt);
	}
	t->def = copy;
	t->def_cxt = def_cxt;
}

static WorkerTunnel *
tunnel_start(const TunnelDef *def)
{
	WorkerTunnel *t;
	MemoryContext cxt = AllocSetContextCreate(worker_cxt, "tunnel",
											  ALLOCSET_DEFAULT_SIZES);

	t = MemoryContextAllocZero(cxt, sizeof(WorkerTunnel));
	t->cxt = cxt;
	t->slot = tunnel_status_acquire(def->name);
	if (t->slot == NULL)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("tunnel \"%s\" has no status slot", def->name),
				 errhint("Raise tunnel_ssh.max_tunnels.")));
	tunnel_forwards_init(&t->forwards, def->name, t->slot, cxt, on_accept, t);
	set_def(t, def);
	apply(t);
	return t;
}

static void
tunnel_stop(WorkerTunnel *t)
{
	if (t->pool)
		tunnel_pool_destroy(t->pool);
	stop_key_check(t);
	tunnel_forwards_release(&t->forwards);
	if (t->def->private_key)
		keys_wipe(t->def->private_key);
	if (t->def->next_private_key)
		keys_wipe(t->def->next_private_key);
	tunnel_status_release(t->slot);
	MemoryContextDelete(t->cxt);
}

static void
tunnel_update(WorkerTunnel *t, const TunnelDef *def)
{
	bool		new_session = catalog_session_differs(t->def, def);
	bool		same_rotation;

	/*
	 * A host key recorded or pinned while a session trusted the bastion at
	 * first use: the session stays only if the catalog admits the key it
	 * saw (the worker's own record of it does).
	 */
	if (!new_session && t->pool && t->def->host_key_fingerprint == NULL &&
		def->host_key_fingerprint != NULL)
	{
		const char *seen = tunnel_pool_seen_host_key(t->pool);

		if (seen != NULL && !hostkeys_match(def->host_key_fingerprint, seen))
		{
			ereport(LOG,
					(errmsg("tunnel \"%s\": the host key pinned does not admit the key of the running session, %s: reconnecting",
							def->name, seen)));
			new_session = true;
		}
	}

	same_rotation = !new_session &&
		t->def->next_key_fingerprint != NULL &&
		def->next_key_fingerprint != NULL &&
		strcmp(t->def->next_key_fingerprint, def->next_key_fingerprint) == 0;

	/* A new bastion, account or key needs a new session; a target does not. */
	if (t->pool && new_session)
	{
		tunnel_pool_destroy(t->pool);
		t->pool = NULL;
	}

	/*
	 * A reload (on a standby, every few seconds) keeps the pace of the checks
	 * of a rotation still pending; only a new rotation or bastion starts it
	 * anew.
	 */
	if (!same_rotation)
	{
		stop_key_check(t);
		t->key_check_at = 0;
		t->key_check_failures = 0;
	}
	if (t->pool && !new_session &&
		catalog_certificate_differs(t->def, def))
		tunnel_pool_credentials_changed(t->pool);
	set_def(t, def);
	if (t->key_check)
		tunnel_key_check_set_def(t->key_check, t->def);
	apply(t);
}

static TunnelDef *
find_def(List *defs, const char *name)
{
	ListCell   *lc;

	foreach(lc, defs)
	{
		TunnelDef  *def = lfirst(lc);

		if (strcmp(def->name, name) == 0)
			return def;
	}
	return NULL;
}

/*
 * Read the catalog and bring every tunnel in line with it.  False if it
 * could not be read now (catalog_load says why, at elevel): every tunnel
 * keeps running as it was, and the caller tries again a little later.
 */
static bool
reload(int elevel)
{
	MemoryContext load_cxt = AllocSetContextCreate(worker_cxt, "catalog load",
												   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(load_cxt);
	bool		installed;
	List	   *defs;
	List	   *kept = NIL;
	ListCell   *lc;

	if (!catalog_load(&installed, &defs, elevel))
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(load_cxt);
		return false;
	}

	/*
	 * Foreign servers of tunnel_server_create use this data directory's
	 * sockets; with none usable (TCP off, the directory refused) they are
	 * left as they are.
	 */
	if (installed && tunnel_status_connect_host() != NULL)
		(void) catalog_servers_follow_host(tunnel_status_connect_host());
	MemoryContextSwitchTo(old);
	foreach(lc, tunnels)
	{
		WorkerTunnel *t = lfirst(lc);
		TunnelDef  *def = find_def(defs, t->def->name);

		if (def == NULL)
		{
			ereport(LOG, (errmsg("tunnel \"%s\" stopped", t->def->name)));
			tunnel_stop(t);
			continue;
		}
		tunnel_update(t, def);
		def->name[0] = '\0';	/* matched: not new */
		kept = lappend(kept, t);
	}
	foreach(lc, defs)
	{
		TunnelDef  *def = lfirst(lc);

		if (def->name[0] == '\0')
			continue;
		ereport(LOG, (errmsg("tunnel \"%s\" started", def->name)));
		old = MemoryContextSwitchTo(worker_cxt);
		kept = lappend(kept, tunnel_start(def));
		MemoryContextSwitchTo(old);
	}
	old = MemoryContextSwitchTo(worker_cxt);
	list_free(tunnels);
	tunnels = list_copy(kept);
	MemoryContextSwitchTo(old);

	foreach(lc, defs)
		catalog_free_def(lfirst(lc));
	MemoryContextDelete(load_cxt);
	return true;
}

static void
rebind_all(void)
{
	ListCell   *lc;

	foreach(lc, tunnels)
	{
		WorkerTunnel *t = lfirst(lc);

		tunnel_forwards_close(&t->forwards);
		if (t->runnable)
			apply(t);
	}
}

/*
 * A tunnel whose session authenticated with the old key checks, beside it,
 * whether the bastion accepts the new one yet; the session itself is never
 * disturbed.  Returns the time until this needs a look again (-1: never).
 */
static long
run_key_check(WorkerTunnel *t, TimestampTz now)
{
	int			result;

	if (t->def->next_private_key == NULL || t->pool == NULL ||
		!tunnel_pool_ready(t->pool))
	{
		stop_key_check(t);
		return -1;
	}

	/*
	 * The check verifies the bastion against the catalog's host key: until
	 * the session's first-use record of it is written, an unverified host
	 * could otherwise accept the new key and have the old one erased.
	 */
	if (t->def->host_key_fingerprint == NULL)
	{
		stop_key_check(t);
		return 1000;
	}
	if (t->key_check == NULL)
	{
		MemoryContext old;

		/* Give the DBA time to paste the line before the first try. */
		if (t->key_check_at == 0)
			t->key_check_at = TimestampTzPlusMilliseconds(now,
														  KEY_CHECK_FIRST_MS);
		if (now < t->key_check_at)
			return (long) ((t->key_check_at - now + 999) / 1000);

		/*
		 * A rotation edited by hand whose key is not the one its fingerprint
		 * names must never be promoted: the key the DBA was shown would not
		 * be the one that logs in.
		 */
		if (!key_matches(t->def->next_private_key,
						 t->def->next_key_fingerprint))
		{
			ereport(WARNING,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("tunnel \"%s\": the new key of the pending rotation does not match its fingerprint %s",
							t->def->name, t->def->next_key_fingerprint),
					 errhint("Cancel the rotation with tunnel_rotate_cancel(), or start another with tunnel_rotate_key().")));
			t->key_check_failures++;
			t->key_check_at = TimestampTzPlusMilliseconds(now, KEY_CHECK_MAX_MS);
			return KEY_CHECK_MAX_MS;
		}
		old = MemoryContextSwitchTo(t->cxt);
		t->key_check = tunnel_key_check_create(t->def);
		MemoryContextSwitchTo(old);
	}
	result = tunnel_key_check_result(t->key_check);
	if (result == 0)
		return tunnel_key_check_tick(t->key_check, now);

	/* Accepted: the catalog change brings the new definition.  Else wait. */
	stop_key_check(t);
	t->key_check_failures++;
	t->key_check_at = TimestampTzPlusMilliseconds(now,
												  Min(KEY_CHECK_MAX_MS,
													  KEY_CHECK_FIRST_MS << Min(t->key_check_failures, 5)));
	return result > 0 ? 0 : (long) ((t->key_check_at - now) / 1000);
}

static long
ms_until_retry(WorkerTunnel *t, TimestampTz now)
{
	return t->forwards.bind_retry_at <= now ? 0 :
		(long) ((t->forwards.bind_retry_at - now + 999) / 1000);
}

/* Timers of every tunnel; returns the time until the next one. */
static long
run_timers(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = listener_resume_due(now);
	ListCell   *lc;

	foreach(lc, tunnels)
	{
		WorkerTunnel *t = lfirst(lc);
		long		t_timeout = -1;

		if (!t->runnable)
			continue;
		/* A port another process holds is retried, once a second. */
		if (t->forwards.bind_retry_at != 0)
		{
			if (now >= t->forwards.bind_retry_at)
			{
				t->forwards.bind_retry_at = 0;
				apply(t);
			}
			if (t->forwards.bind_retry_at != 0)
				t_timeout = ms_until_retry(t, now);
		}
		if (t->pool)
		{
			long		s_timeout = tunnel_pool_tick(t->pool, now);

			if (s_timeout >= 0 && (t_timeout < 0 || s_timeout < t_timeout))
				t_timeout = s_timeout;
		}
		{
			long		k_timeout = run_key_check(t, now);

			if (k_timeout >= 0 && (t_timeout < 0 || k_timeout < t_timeout))
				t_timeout = k_timeout;
		}
		if (t_timeout >= 0 && (timeout < 0 || t_timeout < timeout))
			timeout = t_timeout;
	}
	return timeout;
}

/*
 * Every client connection holds a socket of this one process; the soft
 * limit a service starts with (often 1024) is far below what a busy worker
 * needs, the hard limit rarely is.
 */
static void
raise_file_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
		ereport(DEBUG1,
				(errmsg("tunnel_ssh worker open files limit raised to %lu",
						(unsigned long) rl.rlim_cur)));
}

/*
 * libssh2 allocates every packet it receives and frees it once the channel
 * has been read; in a bulk transfer a window's worth of packets (megabytes)
 * comes and goes at the top of the heap.  glibc gives back whatever exceeds
 * 128 kB there, so the worker faulted the same pages in again and again:
 * 9 % of its CPU during a COPY.  Keeping some freed memory costs at most
 * this much resident memory.
 */
#define HEAP_KEEP_BYTES (8 * 1024 * 1024)

static void
keep_freed_heap(void)
{
#ifdef __GLIBC__
	(void) mallopt(M_TRIM_THRESHOLD, HEAP_KEEP_BYTES);
#endif
}

/*
 * When most channels have gone (clients that stopped reading left, a bulk
 * load ended), hand the heap they used back to the system: glibc returns
 * only what lies at the top of the heap by itself.
 */
static void
give_memory_back(TimestampTz now)
{
#ifdef __GLIBC__
	static int	peak = 0;
	static TimestampTz last_trim = 0;
	int			open = channel_count_open();

	if (open > peak)
		peak = open;
	if (peak >= 16 && open * 2 <= peak &&
		now - last_trim >= 5 * USECS_PER_SEC)
	{
		(void) malloc_trim(HEAP_KEEP_BYTES);
		peak = open;
		last_trim = now;
	}
#endif
}

/*
 * SIGTERM (server shutdown, or pg_terminate_backend): every tunnel says
 * goodbye to its bastion (SSH_MSG_DISCONNECT, so sshd logs a clean
 * disconnect, not a dropped connection) and its clients are closed.  Exit
 * code 1, as after die(): the postmaster starts the worker again unless it
 * is shutting down.
 */
static void
shut_down(void)
{
	ListCell   *lc;

	ereport(LOG,
			(errmsg("tunnel_ssh worker shutting down"),
			 errdetail_plural("%d tunnel closes its SSH session.",
							  "%d tunnels close their SSH sessions.",
							  list_length(tunnels), list_length(tunnels))));
	foreach(lc, tunnels)
		tunnel_stop(lfirst(lc));
	list_free(tunnels);
	tunnels = NIL;
	proc_exit(1);
}

static void
worker_exit(int code, Datum arg)
{
	tunnel_status_set_worker_latch(NULL);
}

void
tunnel_worker_main(Datum main_arg)
{
	uint64		seen_generation = 0;
	TimestampTz next_poll = 0;
	bool		first = true;
	int			load_failures = 0;
	TimestampTz load_retry_at = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);

	/* pg_cancel_backend() ends no connection (catalog_handle_sigint). */
	pqsignal(SIGINT, catalog_handle_sigint);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(tunnel_database, NULL, 0);
	pgstat_report_appname("tunnel_ssh worker");
	catalog_worker_settings();

	if (libssh2_init(0) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialize libssh2")));
#if LIBSSH2_VERSION_NUM < 0x010b00
	if (tunnel_bulk_keystream)
		(void) tunnel_keystream_install();
#endif

	raise_file_limit();
	keep_freed_heap();
	worker_cxt = AllocSetContextCreate(TopMemoryContext, "tunnel_ssh worker",
									   ALLOCSET_DEFAULT_SIZES);

	/*
	 * Each round of the loop runs in a context of its own, emptied when the
	 * round ends: what a round builds for itself (error texts, method lists,
	 * SPI results) cannot pile up over months.  What outlives the round is
	 * allocated in the context of its owner: a tunnel's sessions, channels and
	 * listeners in the tunnel's (t->cxt), the tunnel list in worker_cxt.
	 */
	round_cxt = AllocSetContextCreate(worker_cxt, "tunnel_ssh worker round",
									  ALLOCSET_DEFAULT_SIZES);
	bound_address = tunnel_forwards_listen_settings(worker_cxt);
	tunnel_pool_set_lookup(pool_of);
	tunnel_status_release_all();
	tunnel_clients_reset();
	tunnel_status_set_worker_latch(MyLatch);
	before_shmem_exit(worker_exit, (Datum) 0);

	for (;;)
	{
		TimestampTz now;
		uint64		generation;
		long		timeout;

		MemoryContextSwitchTo(round_cxt);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			shut_down();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			{
				char	   *now_bound = tunnel_forwards_listen_settings(worker_cxt);

				if (strcmp(bound_address, now_bound) != 0)
				{
					pfree(bound_address);
					bound_address = now_bound;
					rebind_all();
				}
				else
					pfree(now_bound);
			}
		}

		now = GetCurrentTimestamp();
		generation = tunnel_status_catalog_generation();
		if ((first || generation != seen_generation || now >= next_poll) &&
			now >= load_retry_at)
		{
			if (reload(load_failures == 0 ? LOG : DEBUG1))
			{
				if (load_failures > 0)
					ereport(LOG,
							(errmsg("tunnel_ssh worker read the tunnel catalog after %d failed attempts",
									load_failures)));
				first = false;
				seen_generation = generation;
				load_failures = 0;
				load_retry_at = 0;
				next_poll = TimestampTzPlusMilliseconds(now,
														RecoveryInProgress() ?
														STANDBY_POLL_INTERVAL_MS :
														POLL_INTERVAL_MS);
			}
			else
			{
				/* Changes wait; the tunnels run on as they were. */
				load_retry_at = TimestampTzPlusMilliseconds(now,
															Min(CATALOG_RETRY_MAX_MS,
																CATALOG_RETRY_FIRST_MS << Min(load_failures, 4)));
				next_poll = load_retry_at;
				load_failures++;
			}
		}

		/*
		 * libssh2 first: what it does can change every timer.  A session
		 * that moved bytes gets another round at once (its clients may follow
		 * now); asking the kernel first would mostly cost an epoll_wait that
		 * finds nothing.  Two such rounds, then the others' events.
		 */
		tunnel_conn_service_all();
		for (int round = 0; round < 2 && tunnel_conn_pending(); round++)
			tunnel_conn_service_all();
		timeout = run_timers();
		give_memory_back(now);
		if (tunnel_conn_pending())
			timeout = 0;
		else
		{
			long		until_poll = (long) ((next_poll - now) / 1000);

			if (timeout < 0 || until_poll < timeout)
				timeout = Max(until_poll, 0);
		}
		watch_wait(timeout, PG_WAIT_EXTENSION);
		MemoryContextReset(round_cxt);
	}
}

void
tunnel_worker_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* Consistent state: a hot standby runs the same tunnels, read-only. */
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 2;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "tunnel_ssh");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "tunnel_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "tunnel_ssh worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "tunnel_ssh worker");
	RegisterBackgroundWorker(&worker);
}
