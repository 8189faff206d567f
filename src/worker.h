/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The background worker that runs every tunnel.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_WORKER_H
#define TUNNEL_WORKER_H

/* Register the worker with the postmaster (from _PG_init only). */
extern void tunnel_worker_register(void);

extern PGDLLEXPORT void tunnel_worker_main(Datum main_arg);

#endif							/* TUNNEL_WORKER_H */
