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
/*
 * Bind and listen on the Unix socket dir/.s.PGSQL.port (dir made by
 * listener_prepare_directory), where libpq looks for host 'dir' port
 * 'port'.  A stale socket file left there by a killed worker is replaced.
 */
extern TunnelListener *listener_open_unix(const char *dir, int port,
										  ListenerAccept on_accept, void *arg,
										  char *errbuf, size_t errlen);

/*
 * Make dir (created if missing) a directory only this OS user can enter:
 * owned by us, mode 0700, not a symbolic link.  False, with the reason in
 * errbuf, if it cannot be.
 */
extern bool listener_prepare_directory(const char *dir, char *errbuf,
									   size_t errlen);

/* Is address (a numeric literal) a loopback address? */
extern bool listener_is_loopback(const char *address);

/* Closes the socket; a Unix socket's file is removed. */
extern void listener_close(TunnelListener *l);

/*
 * Listeners rest while the worker has no file descriptor left; this resumes
 * them when due and returns the milliseconds until then (-1: none rests).
 */
extern long listener_resume_due(TimestampTz now);

#endif							/* TUNNEL_LISTENER_H */
