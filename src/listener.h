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
/* Why listener_open_unix failed. */
typedef enum ListenerFailure
{
	LISTENER_FAILED,			/* socket(), bind() or listen() failed */
	LISTENER_UNSAFE_DIRECTORY,	/* the directory fails its checks */
	LISTENER_SOCKET_IN_USE		/* another server holds the socket's lock */
} ListenerFailure;

/*
 * Bind and listen on the Unix socket dir/.s.PGSQL.port, where libpq looks
 * for host 'dir' port 'port', with its lock file dir/.s.PGSQL.port.lock
 * (as PostgreSQL's own sockets have).  Each call first checks the directory
 * as listener_prepare_directory does.  A socket left by a killed worker of
 * this server, or by a server that is gone, is replaced; one whose lock
 * file names another live server is not.  On failure returns NULL, sets
 * *why and writes the reason into errbuf.
 */
extern TunnelListener *listener_open_unix(const char *dir, int port,
										  ListenerAccept on_accept, void *arg,
										  ListenerFailure *why,
										  char *errbuf, size_t errlen);

/*
 * Make dir (created if missing) a directory only this OS user can enter and
 * no other user can replace: not a symbolic link, owned by us, mode 0700
 * (set if it is not), and each parent directory, of the path as written and
 * as resolved, owned by root or us and not writable by others unless
 * sticky.  False, with the reason in errbuf, if it cannot be.
 */
extern bool listener_prepare_directory(const char *dir, char *errbuf,
									   size_t errlen);

/* Is address (a numeric literal) a loopback address? */
extern bool listener_is_loopback(const char *address);

/* Closes the socket; a Unix socket's file and lock file are removed. */
extern void listener_close(TunnelListener *l);

/*
 * Listeners rest while the worker has no file descriptor left; this resumes
 * them when due and returns the milliseconds until then (-1: none rests).
 */
extern long listener_resume_due(TimestampTz now);

#endif							/* TUNNEL_LISTENER_H */
