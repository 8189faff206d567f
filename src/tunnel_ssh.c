/*-------------------------------------------------------------------------
 *
 * tunnel_ssh.c
 *	  Entry point: settings, shared memory request and worker registration.
 *
 * Everything that runs per tunnel lives in the worker (worker.c); this file
 * only wires the module into the server when it is loaded, which is meant
 * to happen through shared_preload_libraries.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "catalog.h"
#include "clients.h"
#include "settings.h"
#include "stats.h"
#include "status.h"
#include "worker.h"

#if PG_VERSION_NUM < 150000
#error "tunnel_ssh needs PostgreSQL 15 or later"
#endif

PG_MODULE_MAGIC;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static void
request_shmem(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	tunnel_status_request_shmem();
	RequestAddinShmemSpace(tunnel_stats_shmem_size());
	RequestAddinShmemSpace(tunnel_clients_shmem_size());
}

static void
startup_shmem(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	tunnel_stats_shmem_init();
	tunnel_clients_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	tunnel_settings_define();

	if (!process_shared_preload_libraries_in_progress)
		return;

	tunnel_preloaded = true;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = request_shmem;
	tunnel_status_install_hooks();
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = startup_shmem;
	catalog_install_hooks();
	tunnel_worker_register();
}
