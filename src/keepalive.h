/*-------------------------------------------------------------------------
 *
 * keepalive.h
 *	  A connection's liveness: keepalive channel, probes, verdict.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_KEEPALIVE_H
#define TUNNEL_KEEPALIVE_H

#include "conn.h"

/*
 * Pull what the bastion sent into libssh2's queues (through the keepalive
 * channel or any channel that can receive); open_keepalive: with none,
 * open the keepalive channel to read.
 */
extern void tunnel_keepalive_drain(TunnelConn *s, bool open_keepalive);
/* Has the keepalive channel a step to take (opening, asking, closing)? */
extern bool tunnel_keepalive_busy(TunnelConn *s);
/* Take it, when the send turn allows. */
extern void tunnel_keepalive_step(TunnelConn *s);
/*
 * Probe a silent bastion; returns the ms until this is due again.  dead
 * gets why the connection is dead, or "".
 */
extern long tunnel_keepalive_tick(TunnelConn *s, TimestampTz now, char *dead,
								  size_t size);

#endif							/* TUNNEL_KEEPALIVE_H */
