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

#include "methods.h"
#include "settings.h"
#include "stats.h"
#include "status.h"
#include "tunnel_limits.h"

struct TunnelCounters
{
	pg_atomic_uint64 total_connections;
	pg_atomic_uint64 bytes_in;
	pg_atomic_uint64 bytes_out;
	pg_atomic_uint32 active_connections;
};

struct TunnelStatusSlot
{
	slock_t		mutex;			/* guards the fields up to the counters */
	bool		in_use;
	TunnelState state;
	TimestampTz since;
	int			local_port;
	char		name[TUNNEL_NAME_MAXLEN + 1];
	char		local_address[112];	/* an address or a socket directory */
	char		host_key[TUNNEL_FINGERPRINT_LEN + 32];	/* "ssh-ed25519 SHA256:..." */
	char		key[TUNNEL_FINGERPRINT_LEN + 1];	/* last accepted */
	char		next_key[TUNNEL_FINGERPRINT_LEN + 1];	/* rotation pending */
	TimestampTz rotation_started;
	char		via[TUNNEL_NAME_MAXLEN + 1];
	char		last_error[TUNNEL_ERROR_MAXLEN];
	TunnelMethods methods;		/* of the session, empty when none */
	int			extra_sessions; /* lanes open or opening (lanes.c) */
	char		serving[TUNNEL_HOST_MAXLEN + 9];	/* "host:port", or "" */
	int			nbastions;
	TunnelBastionStatus bastions[TUNNEL_STATUS_MAX_BASTIONS];
	TunnelStats *stats;			/* the worker's pin of its statistics */

	pg_atomic_uint64 attempts;
	TunnelCounters counters;
};

struct TunnelForwardSlot
{
	slock_t		mutex;			/* guards the fields up to the counters */
	bool		in_use;
	bool		retired;		/* released while connections lived */
	bool		listening;
	int			local_port;
	int			remote_port;
	TimestampTz error_at;
	char		tunnel[TUNNEL_NAME_MAXLEN + 1];
	char		remote_host[TUNNEL_HOST_MAXLEN + 1];
	char		last_error[TUNNEL_ERROR_MAXLEN];
	TunnelStats *stats;			/* the worker's pin of its statistics */

	TunnelCounters counters;
};

/* A Unix socket's whole path fits in 108 bytes (check_socket_directory). */
#define SOCKET_DIR_MAXLEN 128

typedef struct TunnelShared
{
	slock_t		mutex;			/* guards worker_latch and socket_dir */
	Latch	   *worker_latch;
	/* where the worker's Unix sockets are, "" when it has none usable */
	char		socket_dir[SOCKET_DIR_MAXLEN];
	pg_atomic_uint64 catalog_generation;
	int			nslots;
	int			nforward_slots;
	/* slots[nslots], then the forward slots (FORWARD_SLOTS) */
	TunnelStatusSlot slots[FLEXIBLE_ARRAY_MEMBER];
} TunnelShared;

#define FORWARD_SLOTS ((TunnelForwardSlot *) &shared->slots[shared->nslots])

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
	return add_size(add_size(offsetof(TunnelShared, slots),
							 mul_size(tunnel_max_tunnels, sizeof(TunnelStatusSlot))),
					mul_size(tunnel_max_forwards, sizeof(TunnelForwardSlot)));
}

void
tunnel_status_request_shmem(void)
{
	RequestAddinShmemSpace(shared_size());
}

static void
init_counters(TunnelCounters *c)
{
	pg_atomic_init_u64(&c->total_connections, 0);
	pg_atomic_init_u64(&c->bytes_in, 0);
	pg_atomic_init_u64(&c->bytes_out, 0);
	pg_atomic_init_u32(&c->active_connections, 0);
}

static void
reset_counters(TunnelCounters *c)
{
	pg_atomic_write_u64(&c->total_connections, 0);
	pg_atomic_write_u64(&c->bytes_in, 0);
	pg_atomic_write_u64(&c->bytes_out, 0);
	pg_atomic_write_u32(&c->active_connections, 0);
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
		shared->socket_dir[0] = '\0';
		pg_atomic_init_u64(&shared->catalog_generation, 0);
		shared->nslots = tunnel_max_tunnels;
		shared->nforward_slots = tunnel_max_forwards;
		for (int i = 0; i < shared->nslots; i++)
		{
			TunnelStatusSlot *slot = &shared->slots[i];

			memset(slot, 0, sizeof(*slot));
			SpinLockInit(&slot->mutex);
			pg_atomic_init_u64(&slot->attempts, 0);
			init_counters(&slot->counters);
		}
		for (int i = 0; i < shared->nforward_slots; i++)
		{
			TunnelForwardSlot *fs = &FORWARD_SLOTS[i];

			memset(fs, 0, sizeof(*fs));
			SpinLockInit(&fs->mutex);
			init_counters(&fs->counters);
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

bool
tunnel_status_set_socket_directory(const char *dir)
{
	bool		changed;

	if (dir == NULL)
		dir = "";
	SpinLockAcquire(&shared->mutex);
	changed = strncmp(shared->socket_dir, dir, sizeof(shared->socket_dir)) != 0;
	if (changed)
		strlcpy(shared->socket_dir, dir, sizeof(shared->socket_dir));
	SpinLockRelease(&shared->mutex);
	return changed;
}

char *
tunnel_status_socket_directory(void)
{
	char		dir[SOCKET_DIR_MAXLEN];

	if (shared == NULL)
		return NULL;			/* not preloaded: there is no worker */
	SpinLockAcquire(&shared->mutex);
	strlcpy(dir, shared->socket_dir, sizeof(dir));
	SpinLockRelease(&shared->mutex);
	return dir[0] ? pstrdup(dir) : NULL;
}

const char *
tunnel_status_connect_host(void)
{
	char	   *dir = tunnel_status_socket_directory();

	/*
	 * The directory the worker listens in, not the setting: the worker may
	 * have refused it (see listener_prepare_directory), or not have read a
	 * new value yet.
	 */
	if (dir)
		return dir;
	if (tunnel_listen_address[0] == '\0')
		return NULL;
	if (strcmp(tunnel_listen_address, "0.0.0.0") == 0)
		return "127.0.0.1";
	if (strcmp(tunnel_listen_address, "::") == 0)
		return "::1";
	return tunnel_listen_address;
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
		slot->key[0] = '\0';
		slot->next_key[0] = '\0';
		slot->rotation_started = 0;
		slot->via[0] = '\0';
		slot->last_error[0] = '\0';
		memset(&slot->methods, 0, sizeof(slot->methods));
		slot->extra_sessions = 0;
		slot->serving[0] = '\0';
		slot->nbastions = 0;
		memset(slot->bastions, 0, sizeof(slot->bastions));
		slot->stats = NULL;
		SpinLockRelease(&slot->mutex);
		pg_atomic_write_u64(&slot->attempts, 0);
		reset_counters(&slot->counters);
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
	tunnel_stats_unpin(slot->stats);
	slot->stats = NULL;
}

/* A restarted worker starts from a clean table. */
void
tunnel_status_release_all(void)
{
	for (int i = 0; i < shared->nslots; i++)
		tunnel_status_release(&shared->slots[i]);
	for (int i = 0; i < shared->nforward_slots; i++)
	{
		TunnelForwardSlot *fs = &FORWARD_SLOTS[i];

		/* The connections of a worker that died died with it. */
		SpinLockAcquire(&fs->mutex);
		fs->in_use = false;
		fs->retired = false;
		fs->stats = NULL;
		SpinLockRelease(&fs->mutex);
	}
	tunnel_stats_unpin_all();
}

static void
forward_unpin_stats(TunnelForwardSlot *fs)
{
	tunnel_stats_unpin(fs->stats);
	fs->stats = NULL;
}

TunnelForwardSlot *
tunnel_status_forward_acquire(const char *tunnel, int local_port)
{
	for (int i = 0; i < shared->nforward_slots; i++)
	{
		TunnelForwardSlot *fs = &FORWARD_SLOTS[i];

		if (fs->in_use)
			continue;
		SpinLockAcquire(&fs->mutex);
		fs->in_use = true;
		fs->retired = false;
		fs->listening = false;
		fs->local_port = local_port;
		fs->remote_port = 0;
		fs->error_at = 0;
		strlcpy(fs->tunnel, tunnel, sizeof(fs->tunnel));
		fs->remote_host[0] = '\0';
		fs->last_error[0] = '\0';
		fs->stats = NULL;
		SpinLockRelease(&fs->mutex);
		reset_counters(&fs->counters);
		return fs;
	}
	return NULL;
}

/*
 * A forward that goes away while connections through it live keeps its slot
 * (shown not listening) until the last of them ends: their counts must not
 * land in the slot of another forward.
 */
void
tunnel_status_forward_release(TunnelForwardSlot *fs)
{
	if (fs == NULL)
		return;
	SpinLockAcquire(&fs->mutex);
	fs->listening = false;
	if (pg_atomic_read_u32(&fs->counters.active_connections) > 0)
		fs->retired = true;
	else
		fs->in_use = false;
	SpinLockRelease(&fs->mutex);
	if (!fs->in_use)
		forward_unpin_stats(fs);
}

void
tunnel_status_forward_connection_ended(TunnelForwardSlot *fs)
{
	if (fs == NULL)
		return;
	SpinLockAcquire(&fs->mutex);
	if (pg_atomic_sub_fetch_u32(&fs->counters.active_connections, 1) == 0 &&
		fs->retired)
	{
		fs->retired = false;
		fs->in_use = false;
	}
	SpinLockRelease(&fs->mutex);
	if (!fs->in_use)
		forward_unpin_stats(fs);
}

void
tunnel_status_forward_set_target(TunnelForwardSlot *fs, const char *remote_host,
								 int remote_port)
{
	if (fs == NULL)
		return;
	SpinLockAcquire(&fs->mutex);
	strlcpy(fs->remote_host, remote_host, sizeof(fs->remote_host));
	fs->remote_port = remote_port;
	SpinLockRelease(&fs->mutex);
	tunnel_stats_set_target(fs->stats, remote_host, remote_port);
}

void
tunnel_status_forward_set_listening(TunnelForwardSlot *fs, bool listening,
									const char *error)
{
	if (fs == NULL)
		return;
	SpinLockAcquire(&fs->mutex);
	fs->listening = listening;
	if (error)
	{
		strlcpy(fs->last_error, error, sizeof(fs->last_error));
		fs->error_at = GetCurrentTimestamp();
	}
	SpinLockRelease(&fs->mutex);
}

void
tunnel_status_forward_error(TunnelForwardSlot *fs, const char *error)
{
	if (fs == NULL)
		return;
	SpinLockAcquire(&fs->mutex);
	strlcpy(fs->last_error, error, sizeof(fs->last_error));
	fs->error_at = GetCurrentTimestamp();
	SpinLockRelease(&fs->mutex);
}

/*
 * The statistics of a tunnel, pinned for as long as its slot lives: taken
 * when first asked for, since a tunnel that is never used needs none.
 */
TunnelStats *
tunnel_status_stats(TunnelStatusSlot *slot)
{
	if (slot == NULL)
		return NULL;
	if (slot->stats == NULL)
		slot->stats = tunnel_stats_pin(slot->name, 0);
	return slot->stats;
}

TunnelStats *
tunnel_status_forward_stats(TunnelForwardSlot *fs)
{
	if (fs == NULL)
		return NULL;
	if (fs->stats == NULL)
	{
		fs->stats = tunnel_stats_pin(fs->tunnel, fs->local_port);
		tunnel_stats_set_target(fs->stats, fs->remote_host, fs->remote_port);
	}
	return fs->stats;
}

int
tunnel_status_forward_local_port(TunnelForwardSlot *fs)
{
	return fs ? fs->local_port : 0;
}

TunnelCounters *
tunnel_status_counters(TunnelStatusSlot *slot)
{
	return slot ? &slot->counters : NULL;
}

TunnelCounters *
tunnel_status_forward_counters(TunnelForwardSlot *fs)
{
	return fs ? &fs->counters : NULL;
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
tunnel_status_set_methods(TunnelStatusSlot *slot, const TunnelMethods *methods)
{
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	if (methods)
		slot->methods = *methods;
	else
		memset(&slot->methods, 0, sizeof(slot->methods));
	SpinLockRelease(&slot->mutex);
}

void
tunnel_status_set_extra_sessions(TunnelStatusSlot *slot, int n)
{
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->extra_sessions = n;
	SpinLockRelease(&slot->mutex);
}

void
tunnel_status_set_serving(TunnelStatusSlot *slot, const char *bastion)
{
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->serving, bastion ? bastion : "", sizeof(slot->serving));
	SpinLockRelease(&slot->mutex);
}

void
tunnel_status_set_bastion(TunnelStatusSlot *slot, int i, int nbastions,
						  const TunnelBastionStatus *b)
{
	if (slot == NULL || i < 0 || i >= TUNNEL_STATUS_MAX_BASTIONS)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->nbastions = Min(nbastions, TUNNEL_STATUS_MAX_BASTIONS);
	slot->bastions[i] = *b;
	SpinLockRelease(&slot->mutex);
}

void
tunnel_status_set_key(TunnelStatusSlot *slot, const char *fingerprint)
{
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->key, fingerprint ? fingerprint : "", sizeof(slot->key));
	SpinLockRelease(&slot->mutex);
}

void
tunnel_status_set_definition(TunnelStatusSlot *slot, const char *next_key,
							 TimestampTz rotation_started, const char *via)
{
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->next_key, next_key ? next_key : "", sizeof(slot->next_key));
	slot->rotation_started = rotation_started;
	strlcpy(slot->via, via ? via : "", sizeof(slot->via));
	SpinLockRelease(&slot->mutex);
}

void
tunnel_status_count_attempt(TunnelStatusSlot *slot)
{
	if (slot)
		pg_atomic_fetch_add_u64(&slot->attempts, 1);
}

void
tunnel_status_count_connection(TunnelCounters *c, int delta)
{
	if (c == NULL)
		return;
	if (delta > 0)
	{
		pg_atomic_fetch_add_u64(&c->total_connections, 1);
		pg_atomic_fetch_add_u32(&c->active_connections, 1);
	}
	else
		pg_atomic_fetch_sub_u32(&c->active_connections, 1);
}

void
tunnel_status_count_bytes(TunnelCounters *c, uint64 bytes_in, uint64 bytes_out)
{
	if (c == NULL)
		return;
	/* Single writer: a plain read-modify-write needs no locked instruction. */
	if (bytes_in)
		pg_atomic_write_u64(&c->bytes_in,
							pg_atomic_read_u64(&c->bytes_in) + bytes_in);
	if (bytes_out)
		pg_atomic_write_u64(&c->bytes_out,
							pg_atomic_read_u64(&c->bytes_out) + bytes_out);
}

static void
require_shared(void)
{
	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tunnel_ssh is not loaded through shared_preload_libraries"),
				 errhint("Add tunnel_ssh to shared_preload_libraries in postgresql.conf and restart the server.")));
}

static void
put_counters(Datum *values, const TunnelCounters *c)
{
	values[0] = Int32GetDatum(pg_atomic_read_u32(unconstify(pg_atomic_uint32 *, &c->active_connections)));
	values[1] = Int64GetDatum(pg_atomic_read_u64(unconstify(pg_atomic_uint64 *, &c->total_connections)));
	values[2] = Int64GetDatum(pg_atomic_read_u64(unconstify(pg_atomic_uint64 *, &c->bytes_in)));
	values[3] = Int64GetDatum(pg_atomic_read_u64(unconstify(pg_atomic_uint64 *, &c->bytes_out)));
}

static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = s[0] == '\0';
	return *isnull ? (Datum) 0 : CStringGetTextDatum(s);
}

PG_FUNCTION_INFO_V1(tunnel_status);

/*
 * tunnel_status(): one row per tunnel the worker runs.  Version 1.0 of the
 * SQL function has the first 12 columns, 1.1 the first 16 and 1.2 all 20;
 * the result descriptor says which.
 */
Datum
tunnel_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	require_shared();

	for (int i = 0; i < shared->nslots; i++)
	{
		TunnelStatusSlot *slot = &shared->slots[i];
		TunnelStatusSlot copy;
		Datum		values[22];
		bool		nulls[22] = {0};

		if (!slot->in_use)
			continue;
		SpinLockAcquire(&slot->mutex);
		memcpy(&copy, slot, offsetof(TunnelStatusSlot, attempts));
		SpinLockRelease(&slot->mutex);
		if (!copy.in_use)
			continue;

		values[0] = CStringGetTextDatum(copy.name);
		values[1] = CStringGetTextDatum(tunnel_state_name(copy.state));
		values[2] = text_or_null(copy.local_address, &nulls[2]);
		values[3] = Int32GetDatum(copy.local_port);
		nulls[3] = copy.local_port == 0;
		values[4] = TimestampTzGetDatum(copy.since);
		values[5] = text_or_null(copy.last_error, &nulls[5]);
		values[6] = text_or_null(copy.host_key, &nulls[6]);
		values[7] = Int64GetDatum(pg_atomic_read_u64(&slot->attempts));
		put_counters(&values[8], &slot->counters);
		values[12] = text_or_null(copy.key, &nulls[12]);
		values[13] = BoolGetDatum(copy.next_key[0] != '\0');
		values[14] = TimestampTzGetDatum(copy.rotation_started);
		nulls[14] = copy.rotation_started == 0;
		values[15] = text_or_null(copy.via, &nulls[15]);
		values[16] = text_or_null(copy.methods.kex, &nulls[16]);
		values[17] = text_or_null(copy.methods.host_key, &nulls[17]);
		values[18] = text_or_null(copy.methods.cipher, &nulls[18]);
		values[19] = text_or_null(copy.methods.mac, &nulls[19]);
		values[20] = Int32GetDatum(copy.extra_sessions);
		values[21] = text_or_null(copy.serving, &nulls[21]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(tunnel_forward_status);

/*
 * tunnel_forward_status(): one row per forward, with its own counters and
 * the last error of a connection to its target.
 */
Datum
tunnel_forward_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	require_shared();

	for (int i = 0; i < shared->nforward_slots; i++)
	{
		TunnelForwardSlot *fs = &FORWARD_SLOTS[i];
		TunnelForwardSlot copy;
		Datum		values[11];
		bool		nulls[11] = {0};

		if (!fs->in_use)
			continue;
		SpinLockAcquire(&fs->mutex);
		memcpy(&copy, fs, offsetof(TunnelForwardSlot, counters));
		SpinLockRelease(&fs->mutex);
		if (!copy.in_use)
			continue;

		values[0] = CStringGetTextDatum(copy.tunnel);
		values[1] = Int32GetDatum(copy.local_port);
		values[2] = text_or_null(copy.remote_host, &nulls[2]);
		values[3] = Int32GetDatum(copy.remote_port);
		nulls[3] = copy.remote_port == 0;
		values[4] = BoolGetDatum(copy.listening);
		put_counters(&values[5], &fs->counters);
		values[9] = text_or_null(copy.last_error, &nulls[9]);
		values[10] = TimestampTzGetDatum(copy.error_at);
		nulls[10] = copy.error_at == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

const char *
tunnel_status_name(TunnelStatusSlot *slot)
{
	return slot ? slot->name : NULL;
}

static const char *
bastion_state_name(TunnelBastionState state)
{
	switch (state)
	{
		case TUNNEL_BASTION_STANDBY:
			return "standby";
		case TUNNEL_BASTION_CONNECTING:
			return "connecting";
		case TUNNEL_BASTION_SERVING:
			return "serving";
		case TUNNEL_BASTION_BACKOFF:
			return "backoff";
	}
	return "standby";
}

PG_FUNCTION_INFO_V1(tunnel_status_bastions);

/*
 * One row per bastion of each running tunnel: what the worker knows of it.
 * tunnel_bastion_status() joins it with the catalog's list.
 */
Datum
tunnel_status_bastions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	require_shared();

	for (int i = 0; i < shared->nslots; i++)
	{
		TunnelStatusSlot *slot = &shared->slots[i];
		char		name[TUNNEL_NAME_MAXLEN + 1];
		TunnelBastionStatus bastions[TUNNEL_STATUS_MAX_BASTIONS];
		int			n;
		bool		in_use;

		if (!slot->in_use)
			continue;
		SpinLockAcquire(&slot->mutex);
		in_use = slot->in_use;
		n = slot->nbastions;
		memcpy(name, slot->name, sizeof(name));
		memcpy(bastions, slot->bastions, sizeof(bastions));
		SpinLockRelease(&slot->mutex);
		if (!in_use)
			continue;
		for (int b = 0; b < n; b++)
		{
			Datum		values[7];
			bool		nulls[7] = {0};

			values[0] = CStringGetTextDatum(name);
			values[1] = Int32GetDatum(b + 1);
			values[2] = CStringGetTextDatum(bastion_state_name(bastions[b].state));
			values[3] = text_or_null(bastions[b].host_key, &nulls[3]);
			values[4] = TimestampTzGetDatum(bastions[b].last_connected);
			nulls[4] = bastions[b].last_connected == 0;
			values[5] = text_or_null(bastions[b].last_error, &nulls[5]);
			values[6] = Int32GetDatum(bastions[b].failures);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}
