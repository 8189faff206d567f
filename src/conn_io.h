/*-------------------------------------------------------------------------
 *
 * conn_io.h
 *	  A connection's socket: libssh2's reads and writes, the output batch,
 *	  the watch in the wait set.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_CONN_IO_H
#define TUNNEL_CONN_IO_H

#include "conn.h"

/* Take the output batch (before the handshake's buffers: see conn.c). */
extern void tunnel_conn_io_reserve(TunnelConn *s);
/* Logged in: libssh2 reads and writes through our callbacks from now on. */
extern void tunnel_conn_io_attach(TunnelConn *s);
/* Write what the batch holds; false if some is left (the socket is full). */
extern bool tunnel_conn_io_flush(TunnelConn *s);
/* Register s->sock in the wait set for wanted events, or take it out. */
extern void tunnel_conn_io_watch(TunnelConn *s, uint32 wanted);
extern void tunnel_conn_io_unwatch(TunnelConn *s);

#endif							/* TUNNEL_CONN_IO_H */
