/*-------------------------------------------------------------------------
 *
 * pool.h
 *	  A tunnel's pool: its connection to the bastion, the lanes beside it,
 *	  the clients waiting for a channel, admission, backoff, and the checks
 *	  of a rotation's new key.  What the worker calls; the pool itself is
 *	  pool_state.h's.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_POOL_H
#define TUNNEL_POOL_H

#include "catalog.h"
#include "pool_state.h"
#include "status.h"

/*
 * The running pool of the named tunnel, or NULL: how a tunnel with "via"
 * finds its jump tunnel's.  The worker, which owns the tunnels, says how
 * (before any pool starts).
 */
typedef TunnelPool *(*TunnelPoolLookup) (const char *name);
extern void tunnel_pool_set_lookup(TunnelPoolLookup lookup);

/* def must outlive the pool (or be replaced by tunnel_pool_set_def). */
extern TunnelPool *tunnel_pool_create(const TunnelDef *def,
									  TunnelStatusSlot *slot);
extern void tunnel_pool_destroy(TunnelPool *p);
extern void tunnel_pool_set_def(TunnelPool *p, const TunnelDef *def);

/* Is the tunnel's connection logged in and carrying traffic? */
extern bool tunnel_pool_ready(TunnelPool *p);

/*
 * The fingerprint of the host key the pool trusted at first use (the
 * catalog had none), or NULL: whether a pin set later admits the bastion
 * it is connected to.
 */
extern const char *tunnel_pool_seen_host_key(TunnelPool *p);

/*
 * The tunnel's certificate changed: a pool waiting after a refused login
 * tries again at once; an established connection is left alone (the next
 * login uses the new certificate).
 */
extern void tunnel_pool_credentials_changed(TunnelPool *p);

/* A client accepted for one of the tunnel's forwards. */
extern void tunnel_pool_add_client(TunnelPool *p, pgsocket fd,
								   const char *remote_host, int remote_port,
								   TunnelForwardSlot *forward_slot);

/*
 * Run timers (connect timeout, backoff, keepalive, lanes) and return how
 * many milliseconds may pass before the pool needs this again (-1: none).
 */
extern long tunnel_pool_tick(TunnelPool *p, TimestampTz now);

/*
 * Start connection c to def's (first) bastion, through its jump tunnel when
 * it has one; false if c ended at once for want of a jump tunnel.
 */
extern bool tunnel_pool_start_conn(const TunnelDef *def, TunnelConn *c,
								   const TunnelConnPlan *plan, TimestampTz now);

/*
 * The rotation's key was accepted: it becomes the tunnel's key and the old
 * private key is erased from the catalog.
 */
extern void tunnel_pool_adopt_next_key(const TunnelDef *def);

/*
 * A rotation's key check (keycheck.c): does the bastion accept def's new key?  A
 * connection run up to authentication, then closed; a key accepted is
 * promoted in the catalog.  Result 0 while unknown, 1 accepted, -1 not.
 */
typedef struct TunnelKeyCheck TunnelKeyCheck;

extern TunnelKeyCheck *tunnel_key_check_create(const TunnelDef *def);
extern int	tunnel_key_check_result(TunnelKeyCheck *kc);
extern long tunnel_key_check_tick(TunnelKeyCheck *kc, TimestampTz now);
extern void tunnel_key_check_set_def(TunnelKeyCheck *kc, const TunnelDef *def);
extern void tunnel_key_check_destroy(TunnelKeyCheck *kc);

#endif							/* TUNNEL_POOL_H */
