/*-------------------------------------------------------------------------
 *
 * forwards.h
 *	  The worker's side of a tunnel's forwards (one per local port): their
 *	  listeners, TCP and Unix socket, their status slots, and the socket
 *	  directory that all of them share.
 *
 * The worker (worker.c) decides when a tunnel runs; this decides where its
 * clients come in, and hands each accepted client to the worker's accept
 * callback.  Kept apart because binding, retrying and logging the refusals
 * of ports and of the socket directory is a job of its own, with its own
 * state, which the worker only asks "does every port listen?".
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_FORWARDS_H
#define TUNNEL_FORWARDS_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "utils/palloc.h"

#include "catalog.h"
#include "status.h"
#include "tunnel_limits.h"

/* A port another process holds is tried again after this. */
#define TUNNEL_FORWARDS_BIND_RETRY_MS	1000

/* A client accepted on a forward's port, for the target given. */
typedef void (*TunnelForwardAccept) (void *arg, pgsocket client,
									 const char *remote_host, int remote_port,
									 TunnelForwardSlot *slot);

/* One tunnel's forwards. */
typedef struct TunnelForwards
{
	List	   *list;			/* of forwards.c's TunnelForward */
	char		name[TUNNEL_NAME_MAXLEN + 1];	/* the tunnel's */
	TunnelStatusSlot *slot;		/* the tunnel's */
	MemoryContext cxt;			/* the tunnel's: holds forwards, listeners */
	TunnelForwardAccept accept;
	void	   *accept_arg;
	TimestampTz bind_retry_at;	/* next try for ports that were taken */
	bool		bind_failed;	/* status says bind_failed */
} TunnelForwards;

extern void tunnel_forwards_init(TunnelForwards *fs, const char *name,
								 TunnelStatusSlot *slot, MemoryContext cxt,
								 TunnelForwardAccept accept, void *arg);

/* Make the forwards match def's (listeners are opened by _bind). */
extern void tunnel_forwards_sync(TunnelForwards *fs, const TunnelDef *def);

/*
 * Open the listeners that are not open yet; true if every forward listens.
 * Failures are in the status and logged when they change; a port to be
 * retried sets bind_retry_at.
 */
extern bool tunnel_forwards_bind(TunnelForwards *fs);

/* Close every listener (the forwards stay); _release gives up their slots. */
extern void tunnel_forwards_close(TunnelForwards *fs);
extern void tunnel_forwards_release(TunnelForwards *fs);

/*
 * The listen settings in one string (allocated in cxt), to tell when they
 * change, and the socket directory made ready for them (WARNING if it
 * cannot be).  Read at start and at each reload of the configuration.
 */
extern char *tunnel_forwards_listen_settings(MemoryContext cxt);

#endif							/* TUNNEL_FORWARDS_H */
