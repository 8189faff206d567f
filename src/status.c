/*-------------------------------------------------------------------------
 *
 * status.c
 *	  Shared-memory status table and tunnel_status().
 *
 * The worker is the only writer.  Text fields change rarely and are guarded
 * by a per-slot spinlock; counters change on every read and write and are
 * atomics, so the forwarding path never takes a lock.  Readers copy a slot
 * under its spinlock and never wait for the worker.
 *
 * The same segment carries the catalog-change generation: backends bump it
 * at commit (catalog.c) and set the worker's latch.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "status.h"
#include "tunnel_ssh.h"

struct TunnelStatusSlot
{
	slock_t		mutex;			/* guards the fields up to the counters */
	bool		in_use;
	TunnelState state;
	TimestampTz since;
	int			local_port;
	char		name[TUNNEL_NAME_MAXLEN + 1];
	char		local_address[64];
	char		host_key[TUNNEL_FINGERPRINT_LEN + 1];
	char		last_error[TUNNEL_ERROR_MAXLEN];

	pg_atomic_uint64 attempts;
	pg_atomic_uint64 total_connections;
	pg_atomic_uint64 bytes_in;
	pg_atomic_uint64 bytes_out;
	pg_atomic_uint32 active_connections;
};

typedef struct TunnelShared
{
	slock_t		mutex;			/* guards worker_latch */
	Latch	   *worker_latch;
	pg_atomic_uint64 catalog_generation;
	int			nslots;
	TunnelStatusSlot slots[FLEXIBLE_ARRAY_MEMBER];
} TunnelShared;

static TunnelShared *shared = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static const char *const state_names[] = {
	[TUNNEL_STATE_CONNECTING] = "connecting",
	[TUNNEL_STATE_CONNECTED] = "connected",
	[TUNNEL_STATE_AUTH_FAILED] = "auth_failed",
	[TUNNEL_STATE_HOST_KEY_MISMATCH] = "host_key_mismatch",
	[TUNNEL_STATE_UNREACHABLE] = "unreachable",
	[TUNNEL_STATE_BACKOFF] = "backoff",
	[TUNNEL_STATE_DISABLED] = "disabled",
	[TUNNEL_STATE_INVALID] = "invalid",
	[TUNNEL_STATE_BIND_FAILED] = "bind_failed",
};

const char *
tunnel_state_name(TunnelState state)
{
	return state_names[state];
}

static Size
shared_size(void)
{
	return add_size(offsetof(TunnelShared, slots),
					mul_size(tunnel_max_tunnels, sizeof(TunnelStatusSlot)));
}

void
tunnel_status_request_shmem(void)
{
	RequestAddinShmemSpace(shared_size());
}

static void
startup_shmem(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("tunnel_ssh status", shared_size(), &found);
	if (!found)
	{
		SpinLockInit(&shared->mutex);
		shared->worker_latch = NULL;
		pg_atomic_init_u64(&shared->catalog_generation, 0);
		shared->nslots = tunnel_max_tunnels;
		for (int i = 0; i < shared->nslots; i++)
		{
			TunnelStatusSlot *slot = &shared->slots[i];

			memset(slot, 0, sizeof(*slot));
			SpinLockInit(&slot->mutex);
			pg_atomic_init_u64(&slot->attempts, 0);
			pg_atomic_init_u64(&slot->total_connections, 0);
			pg_atomic_init_u64(&slot->bytes_in, 0);
			pg_atomic_init_u64(&slot->bytes_out, 0);
			pg_atomic_init_u32(&slot->active_connections, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

void
tunnel_status_install_hooks(void)
{
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = startup_shmem;
}

/* Backends: tell the worker that committed catalog contents changed. */
void
tunnel_status_catalog_changed(void)
{
	Latch	   *latch;

	if (shared == NULL)
		return;					/* not preloaded: there is no worker */
	pg_atomic_fetch_add_u64(&shared->catalog_generation, 1);
	SpinLockAcquire(&shared->mutex);
	latch = shared->worker_latch;
	SpinLockRelease(&shared->mutex);
	if (latch)
		SetLatch(latch);
}

uint64
tunnel_status_catalog_generation(void)
{
	return pg_atomic_read_u64(&shared->catalog_generation);
}

void
tunnel_status_set_worker_latch(Latch *latch)
{
	SpinLockAcquire(&shared->mutex);
	shared->worker_latch = latch;
	SpinLockRelease(&shared->mutex);
}

TunnelStatusSlot *
tunnel_status_acquire(const char *name)
{
	for (int i = 0; i < shared->nslots; i++)
	{
		TunnelStatusSlot *slot = &shared->slots[i];

		if (slot->in_use)
			continue;
		SpinLockAcquire(&slot->mutex);
		slot->in_use = true;
		slot->state = TUNNEL_STATE_CONNECTING;
		slot->since = GetCurrentTimestamp();
		slot->local_port = 0;
		strlcpy(slot->name, name, sizeof(slot->name));
		slot->local_address[0] = '\0';
		slot->host_key[0] = '\0';
		slot->last_error[0] = '\0';
		SpinLockRelease(&slot->mutex);
		pg_atomic_write_u64(&slot->attempts, 0);
		pg_atomic_write_u64(&slot->total_connections, 0);
		pg_atomic_write_u64(&slot->bytes_in, 0);
		pg_atomic_write_u64(&slot->bytes_out, 0);
		pg_atomic_write_u32(&slot->active_connections, 0);
		return slot;
	}
	return NULL;
}

void
tunnel_status_release(TunnelStatusSlot *slot)
{
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->in_use = false;
	SpinLockRelease(&slot->mutex);
}

/* A restarted worker starts from a clean table. */
void
tunnel_status_release_all(void)
{
	for (int i = 0; i < shared->nslots; i++)
		tunnel_status_release(&shared->slots[i]);
}

void
tunnel_status_set_state(TunnelStatusSlot *slot, TunnelState state,
						const char *error)
{
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	if (slot->state != state)
	{
		slot->state = state;
		slot->since = GetCurrentTimestamp();
	}
	if (error)
		strlcpy(slot->last_error, error, sizeof(slot->last_error));
	SpinLockRelease(&slot->mutex);
}

void
tunnel_status_set_listen(TunnelStatusSlot *slot, const char *address, int port)
{
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->local_address, address, sizeof(slot->local_address));
	slot->local_port = port;
	SpinLockRelease(&slot->mutex);
}

void
tunnel_status_set_host_key(TunnelStatusSlot *slot, const char *fingerprint)
{
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->host_key, fingerprint, sizeof(slot->host_key));
	SpinLockRelease(&slot->mutex);
}

void
tunnel_status_count_attempt(TunnelStatusSlot *slot)
{
	if (slot)
		pg_atomic_fetch_add_u64(&slot->attempts, 1);
}

void
tunnel_status_count_connection(TunnelStatusSlot *slot, int delta)
{
	if (slot == NULL)
		return;
	if (delta > 0)
	{
		pg_atomic_fetch_add_u64(&slot->total_connections, 1);
		pg_atomic_fetch_add_u32(&slot->active_connections, 1);
	}
	else
		pg_atomic_fetch_sub_u32(&slot->active_connections, 1);
}

void
tunnel_status_count_bytes(TunnelStatusSlot *slot, uint64 bytes_in,
						  uint64 bytes_out)
{
	if (slot == NULL)
		return;
	/* Single writer: a plain read-modify-write needs no locked instruction. */
	if (bytes_in)
		pg_atomic_write_u64(&slot->bytes_in,
							pg_atomic_read_u64(&slot->bytes_in) + bytes_in);
	if (bytes_out)
		pg_atomic_write_u64(&slot->bytes_out,
							pg_atomic_read_u64(&slot->bytes_out) + bytes_out);
}

PG_FUNCTION_INFO_V1(tunnel_status);

/*
 * tunnel_status(): one row per tunnel the worker runs.
 */
Datum
tunnel_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);

	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tunnel_ssh is not loaded through shared_preload_libraries"),
				 errhint("Add tunnel_ssh to shared_preload_libraries in postgresql.conf and restart the server.")));

	for (int i = 0; i < shared->nslots; i++)
	{
		TunnelStatusSlot *slot = &shared->slots[i];
		TunnelStatusSlot copy;
		Datum		values[12];
		bool		nulls[12] = {0};

		if (!slot->in_use)
			continue;
		SpinLockAcquire(&slot->mutex);
		memcpy(&copy, slot, offsetof(TunnelStatusSlot, attempts));
		SpinLockRelease(&slot->mutex);
		if (!copy.in_use)
			continue;

		values[0] = CStringGetTextDatum(copy.name);
		values[1] = CStringGetTextDatum(tunnel_state_name(copy.state));
		values[2] = CStringGetTextDatum(copy.local_address);
		nulls[2] = copy.local_address[0] == '\0';
		values[3] = Int32GetDatum(copy.local_port);
		nulls[3] = copy.local_port == 0;
		values[4] = TimestampTzGetDatum(copy.since);
		values[5] = CStringGetTextDatum(copy.last_error);
		nulls[5] = copy.last_error[0] == '\0';
		values[6] = CStringGetTextDatum(copy.host_key);
		nulls[6] = copy.host_key[0] == '\0';
		values[7] = Int64GetDatum(pg_atomic_read_u64(&slot->attempts));
		values[8] = Int32GetDatum(pg_atomic_read_u32(&slot->active_connections));
		values[9] = Int64GetDatum(pg_atomic_read_u64(&slot->total_connections));
		values[10] = Int64GetDatum(pg_atomic_read_u64(&slot->bytes_in));
		values[11] = Int64GetDatum(pg_atomic_read_u64(&slot->bytes_out));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
