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

/* The running session of the named tunnel, for a tunnel that jumps via it. */
struct TunnelSession;
extern struct TunnelSession *tunnel_worker_session(const char *name);

#endif							/* TUNNEL_WORKER_H */
