/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Cumulative counters per tunnel and per forward; tunnel_stat() and
 *	  tunnel_stat_reset().
 *
 * The worker is the only one to add to the counters (atomics, so that the
 * forwarding path takes no lock) and the only one to take entries.  An
 * entry's spinlock guards its key, its target and its session times, and
 * its pins: tunnel_stat_reset() frees an entry nobody pins and zeroes the
 * others, and must not free one the worker is taking at that moment.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "stats.h"
#include "tunnel_limits.h"

struct TunnelStats
{
	slock_t		mutex;
	bool		in_use;
	int			pins;
	int			local_port;		/* 0: the tunnel's own entry */
	int			remote_port;
	TimestampTz last_unpinned;	/* the oldest unpinned is reused first */
	TimestampTz up_since;		/* its session logged in then; 0: down */
	bool		ever_up;
	TimestampTz stats_reset;
	char		tunnel[TUNNEL_NAME_MAXLEN + 1];
	char		remote_host[TUNNEL_HOST_MAXLEN + 1];
	char		last_bastion[TUNNEL_HOST_MAXLEN + 9];

	pg_atomic_uint64 connections;
	pg_atomic_uint64 open_failures[TUNNEL_OPEN_FAILURES];
	pg_atomic_uint64 reconnects;
	pg_atomic_uint64 failovers;
	pg_atomic_uint64 bytes_in;
	pg_atomic_uint64 bytes_out;
	pg_atomic_uint64 connected_us;	/* of sessions that ended */
};

typedef struct TunnelStatsTable
{
	int			nentries;
	TunnelStats entries[FLEXIBLE_ARRAY_MEMBER];
} TunnelStatsTable;

static TunnelStatsTable *table = NULL;

static const char *const open_failure_names[TUNNEL_OPEN_FAILURES] = {
	[TUNNEL_OPEN_PROHIBITED] = "prohibited",
	[TUNNEL_OPEN_CONNECT_FAILED] = "connect_failed",
	[TUNNEL_OPEN_TIMEOUT] = "timeout",
	[TUNNEL_OPEN_NO_SESSION] = "no_session",
	[TUNNEL_OPEN_OTHER] = "other",
};

const char *
tunnel_open_failure_name(TunnelOpenFailure why)
{
	return open_failure_names[why];
}

/* Every tunnel's own entry, and one per forward (its own port included). */
static int
table_entries(void)
{
	return 2 * tunnel_max_tunnels + tunnel_max_forwards;
}

Size
tunnel_stats_shmem_size(void)
{
	return add_size(offsetof(TunnelStatsTable, entries),
					mul_size(table_entries(), sizeof(TunnelStats)));
}

static void
zero_counters(TunnelStats *s)
{
	pg_atomic_write_u64(&s->connections, 0);
	for (int i = 0; i < TUNNEL_OPEN_FAILURES; i++)
		pg_atomic_write_u64(&s->open_failures[i], 0);
	pg_atomic_write_u64(&s->reconnects, 0);
	pg_atomic_write_u64(&s->failovers, 0);
	pg_atomic_write_u64(&s->bytes_in, 0);
	pg_atomic_write_u64(&s->bytes_out, 0);
	pg_atomic_write_u64(&s->connected_us, 0);
}

/* Called under AddinShmemInitLock. */
void
tunnel_stats_shmem_init(void)
{
	bool		found;

	table = ShmemInitStruct("tunnel_ssh statistics", tunnel_stats_shmem_size(),
							&found);
	if (found)
		return;
	table->nentries = table_entries();
	for (int i = 0; i < table->nentries; i++)
	{
		TunnelStats *s = &table->entries[i];

		memset(s, 0, offsetof(TunnelStats, connections));
		SpinLockInit(&s->mutex);
		pg_atomic_init_u64(&s->connections, 0);
		for (int j = 0; j < TUNNEL_OPEN_FAILURES; j++)
			pg_atomic_init_u64(&s->open_failures[j], 0);
		pg_atomic_init_u64(&s->reconnects, 0);
		pg_atomic_init_u64(&s->failovers, 0);
		pg_atomic_init_u64(&s->bytes_in, 0);
		pg_atomic_init_u64(&s->bytes_out, 0);
		pg_atomic_init_u64(&s->connected_us, 0);
	}
}

static bool
has_key(TunnelStats *s, const char *tunnel, int local_port)
{
	return s->in_use && s->local_port == local_port &&
		strcmp(s->tunnel, tunnel) == 0;
}

/*
 * The entry of tunnel and local_port, pinned: the existing one, else a free
 * one, else the one unpinned the longest ago (its counts are lost).  NULL
 * only when every entry is pinned.
 */
TunnelStats *
tunnel_stats_pin(const char *tunnel, int local_port)
{
	TunnelStats *spare = NULL;

	if (table == NULL)
		return NULL;
	for (int i = 0; i < table->nentries; i++)
	{
		TunnelStats *s = &table->entries[i];
		bool		mine;

		SpinLockAcquire(&s->mutex);
		mine = has_key(s, tunnel, local_port);
		if (mine)
			s->pins++;
		SpinLockRelease(&s->mutex);
		if (mine)
			return s;
		if (!s->in_use)
		{
			if (spare == NULL || spare->in_use)
				spare = s;
		}
		else if (s->pins == 0 &&
				 (spare == NULL ||
				  (spare->in_use && s->last_unpinned < spare->last_unpinned)))
			spare = s;
	}
	if (spare == NULL)
		return NULL;

	SpinLockAcquire(&spare->mutex);
	spare->in_use = true;
	spare->pins = 1;
	spare->local_port = local_port;
	spare->remote_port = 0;
	spare->up_since = 0;
	spare->ever_up = false;
	spare->stats_reset = 0;
	strlcpy(spare->tunnel, tunnel, sizeof(spare->tunnel));
	spare->remote_host[0] = '\0';
	spare->last_bastion[0] = '\0';
	zero_counters(spare);
	SpinLockRelease(&spare->mutex);
	return spare;
}

void
tunnel_stats_pin_again(TunnelStats *s)
{
	if (s == NULL)
		return;
	SpinLockAcquire(&s->mutex);
	s->pins++;
	SpinLockRelease(&s->mutex);
}

void
tunnel_stats_unpin(TunnelStats *s)
{
	TimestampTz now = GetCurrentTimestamp();

	if (s == NULL)
		return;
	SpinLockAcquire(&s->mutex);
	if (s->pins > 0 && --s->pins == 0)
		s->last_unpinned = now;
	SpinLockRelease(&s->mutex);
}

void
tunnel_stats_unpin_all(void)
{
	if (table == NULL)
		return;
	for (int i = 0; i < table->nentries; i++)
	{
		TunnelStats *s = &table->entries[i];

		SpinLockAcquire(&s->mutex);
		s->pins = 0;
		s->up_since = 0;		/* its session died with the old worker */
		SpinLockRelease(&s->mutex);
	}
}

void
tunnel_stats_set_target(TunnelStats *s, const char *remote_host,
						int remote_port)
{
	if (s == NULL)
		return;
	SpinLockAcquire(&s->mutex);
	strlcpy(s->remote_host, remote_host, sizeof(s->remote_host));
	s->remote_port = remote_port;
	SpinLockRelease(&s->mutex);
}

void
tunnel_stats_count_connection(TunnelStats *s)
{
	if (s)
		pg_atomic_fetch_add_u64(&s->connections, 1);
}

void
tunnel_stats_count_open_failure(TunnelStats *s, TunnelOpenFailure why)
{
	if (s)
		pg_atomic_fetch_add_u64(&s->open_failures[why], 1);
}

void
tunnel_stats_count_bytes(TunnelStats *s, uint64 bytes_in, uint64 bytes_out)
{
	if (s == NULL)
		return;
	if (bytes_in)
		pg_atomic_fetch_add_u64(&s->bytes_in, bytes_in);
	if (bytes_out)
		pg_atomic_fetch_add_u64(&s->bytes_out, bytes_out);
}

void
tunnel_stats_session_up(TunnelStats *s, const char *bastion)
{
	bool		reconnect;
	bool		failover;

	if (s == NULL)
		return;
	SpinLockAcquire(&s->mutex);
	reconnect = s->up_since == 0 && s->ever_up;
	failover = s->last_bastion[0] != '\0' &&
		strcmp(s->last_bastion, bastion) != 0;
	if (s->up_since == 0)
		s->up_since = GetCurrentTimestamp();
	s->ever_up = true;
	strlcpy(s->last_bastion, bastion, sizeof(s->last_bastion));
	SpinLockRelease(&s->mutex);
	if (reconnect)
		pg_atomic_fetch_add_u64(&s->reconnects, 1);
	if (failover)
		pg_atomic_fetch_add_u64(&s->failovers, 1);
}

void
tunnel_stats_session_down(TunnelStats *s)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz since;

	if (s == NULL)
		return;
	SpinLockAcquire(&s->mutex);
	since = s->up_since;
	s->up_since = 0;
	SpinLockRelease(&s->mutex);
	if (since != 0 && now > since)
		pg_atomic_fetch_add_u64(&s->connected_us, (uint64) (now - since));
}

/* ---------- SQL ---------- */

static void
require_table(void)
{
	if (table == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tunnel_ssh is not loaded"),
				 errhint("Add tunnel_ssh to shared_preload_libraries and restart the server.")));
}

PG_FUNCTION_INFO_V1(tunnel_stat);

/*
 * tunnel_stat(): one row per entry.  The tunnel's own entry (local_port
 * NULL) has its sessions' counters, a forward's its connections'; the views
 * stat_tunnels and stat_forwards shape them.
 */
Datum
tunnel_stat(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now = GetCurrentTimestamp();

	InitMaterializedSRF(fcinfo, 0);
	require_table();

	for (int i = 0; i < table->nentries; i++)
	{
		TunnelStats *s = &table->entries[i];
		TunnelStats copy;
		Datum		values[16];
		bool		nulls[16] = {0};
		uint64		connected_us;

		if (!s->in_use)
			continue;
		SpinLockAcquire(&s->mutex);
		memcpy(&copy, s, offsetof(TunnelStats, connections));
		SpinLockRelease(&s->mutex);
		if (!copy.in_use)
			continue;

		values[0] = CStringGetTextDatum(copy.tunnel);
		values[1] = Int32GetDatum(copy.local_port);
		nulls[1] = copy.local_port == 0;
		values[2] = CStringGetTextDatum(copy.remote_host);
		nulls[2] = copy.remote_host[0] == '\0';
		values[3] = Int32GetDatum(copy.remote_port);
		nulls[3] = copy.remote_port == 0;
		values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&s->connections));
		for (int j = 0; j < TUNNEL_OPEN_FAILURES; j++)
			values[5 + j] = Int64GetDatum((int64) pg_atomic_read_u64(&s->open_failures[j]));
		values[10] = Int64GetDatum((int64) pg_atomic_read_u64(&s->reconnects));
		values[11] = Int64GetDatum((int64) pg_atomic_read_u64(&s->failovers));
		values[12] = Int64GetDatum((int64) pg_atomic_read_u64(&s->bytes_in));
		values[13] = Int64GetDatum((int64) pg_atomic_read_u64(&s->bytes_out));
		connected_us = pg_atomic_read_u64(&s->connected_us);
		if (copy.up_since != 0 && now > copy.up_since)
			connected_us += (uint64) (now - copy.up_since);
		values[14] = Float8GetDatum((double) connected_us / USECS_PER_SEC);
		values[15] = TimestampTzGetDatum(copy.stats_reset);
		nulls[15] = copy.stats_reset == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(tunnel_stat_reset);

/*
 * tunnel_stat_reset(tunnel DEFAULT NULL): zero one tunnel's counters, or
 * all.  An entry the worker no longer uses (a tunnel dropped) goes away.
 */
Datum
tunnel_stat_reset(PG_FUNCTION_ARGS)
{
	char	   *tunnel = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	TimestampTz now = GetCurrentTimestamp();
	bool		matched = false;

	require_table();
	for (int i = 0; i < table->nentries; i++)
	{
		TunnelStats *s = &table->entries[i];

		SpinLockAcquire(&s->mutex);
		if (s->in_use && (tunnel == NULL || strcmp(s->tunnel, tunnel) == 0))
		{
			matched = true;
			if (s->pins == 0)
				s->in_use = false;
			else
			{
				zero_counters(s);
				s->stats_reset = now;
				if (s->up_since != 0)
					s->up_since = now;
			}
		}
		SpinLockRelease(&s->mutex);
	}
	if (tunnel != NULL && !matched)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("tunnel \"%s\" has no statistics", tunnel),
				 errdetail("The worker has not run a tunnel of that name since the server started or its statistics were last reset.")));
	PG_RETURN_VOID();
}
