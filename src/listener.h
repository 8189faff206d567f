/*-------------------------------------------------------------------------
 *
 * listener.h
 *	  A listening socket on the local host for one forward.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_LISTENER_H
#define TUNNEL_LISTENER_H

#include "datatype/timestamp.h"

typedef struct TunnelListener TunnelListener;

/* Called with each accepted client (non-blocking, TCP_NODELAY set). */
typedef void (*ListenerAccept) (void *arg, pgsocket client);

/*
 * Bind and listen on address:port.  On failure returns NULL and writes the
 * reason into errbuf.
 */
extern TunnelListener *listener_open(const char *address, int port,
									 ListenerAccept on_accept, void *arg,
									 char *errbuf, size_t errlen);
extern void listener_close(TunnelListener *l);

/*
 * Listeners rest while the worker has no file descriptor left; this resumes
 * them when due and returns the milliseconds until then (-1: none rests).
 */
extern long listener_resume_due(TimestampTz now);

#endif							/* TUNNEL_LISTENER_H */
