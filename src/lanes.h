/*-------------------------------------------------------------------------
 *
 * lanes.h
 *	  The lane policy of a tunnel's pool: extra connections so that no
 *	  client's channel open waits behind another's, and new logins for
 *	  targets a connection's login does not permit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_LANES_H
#define TUNNEL_LANES_H

#include "channel.h"
#include "conn.h"
#include "pool_state.h"

/* A new lane of p (not started), in p's memory context. */
extern TunnelConn *tunnel_lanes_add(TunnelPool *p);
/* Give lane's clients that have no channel yet back to the tunnel's. */
extern void tunnel_lanes_return_waiting(TunnelPool *p, TunnelConn *lane);
/* Drop the lanes; keep_retiring: those that carry a previous login stay. */
extern void tunnel_lanes_drop_all(TunnelPool *p, bool keep_retiring);
/* A lane ended (it could not connect, or lost its connection). */
extern void tunnel_lane_ended(TunnelPool *p, TunnelConn *lane,
							  const TunnelConnEnd *end);
/* A connection of p logged in: remember the catalog's targets now. */
extern void tunnel_lanes_note_login(TunnelPool *p, TunnelConn *c);

/*
 * After a pass of the tunnel's connection: clients waiting behind another's
 * open move to lanes.  Returns true when one more lane should be started.
 */
extern bool tunnel_lanes_dispatch(TunnelPool *p);

/*
 * After a pass of the tunnel's connection, if a client's target wants a new
 * login: true when the connection has been moved to a retiring lane and the
 * tunnel's connection should log in again.
 */
extern bool tunnel_lanes_relogin(TunnelPool *p);

/* Reap ended lanes, close idle ones, run the others' timers. */
extern long tunnel_lanes_tick(TunnelPool *p, TimestampTz now);

/* The policy a pass asks (conn.h's open_allowed and its reports). */
extern bool tunnel_lanes_open_allowed(TunnelPool *p, TunnelConn *c,
									  TunnelChannel *f);
extern void tunnel_lanes_open_answered(TunnelPool *p, TunnelConn *c,
									   TunnelChannel *f);
extern void tunnel_lanes_open_took(TunnelPool *p, long elapsed_ms);

/* Free what the policy keeps of p (when p is destroyed). */
extern void tunnel_lanes_forget(TunnelPool *p);

#endif							/* TUNNEL_LANES_H */
