/*-------------------------------------------------------------------------
 *
 * session.h
 *	  One tunnel's SSH session to its bastion: connect, handshake, host key
 *	  check, authentication, liveness, backoff; and the clients it carries.
 *
 * libssh2 allows one partly sent packet per session, and only the call that
 * started it may finish it; it also runs one channel open at a time.  The
 * session arbitrates both among its forwards (see tunnel_session_may_send).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_SESSION_H
#define TUNNEL_SESSION_H

#include <libssh2.h>

#include "catalog.h"
#include "status.h"

typedef struct TunnelSession TunnelSession;

/*
 * The running session of the named tunnel, or NULL: how a tunnel with
 * "via" finds its jump tunnel's session.  The worker, which owns the
 * tunnels, says how (before any session starts).
 */
typedef TunnelSession *(*TunnelSessionLookup) (const char *name);
extern void tunnel_session_set_lookup(TunnelSessionLookup lookup);

/* def must outlive the session (or be replaced by tunnel_session_set_def). */
extern TunnelSession *tunnel_session_create(const TunnelDef *def,
											TunnelStatusSlot *slot);
extern void tunnel_session_destroy(TunnelSession *s);

/* Rotation: does the bastion accept def's next key?  0 while unknown. */
extern TunnelSession *tunnel_session_create_key_check(const TunnelDef *def);
extern int	tunnel_session_key_check_result(TunnelSession *s);

/*
 * The fingerprint of the host key this session trusted at first use (the
 * catalog had none), or NULL: whether a pin set later admits the bastion
 * the session is connected to.
 */
extern const char *tunnel_session_seen_host_key(TunnelSession *s);

/* Authenticated and carrying traffic? */
extern bool tunnel_session_ready(TunnelSession *s);
extern void tunnel_session_set_def(TunnelSession *s, const TunnelDef *def);

/*
 * The tunnel's certificate changed: a session waiting after a refused
 * login tries again at once; an established one is left alone (the next
 * login uses the new certificate).
 */
extern void tunnel_session_credentials_changed(TunnelSession *s);

/* A client accepted for one of the tunnel's forwards. */
extern void tunnel_session_add_client(TunnelSession *s, pgsocket fd,
									  const char *remote_host,
									  int remote_port,
									  TunnelForwardSlot *forward_slot);

/*
 * Run timers (connect timeout, backoff, keepalive) and return how many
 * milliseconds may pass before the session needs this again (-1: no limit).
 */
extern long tunnel_session_tick(TunnelSession *s, TimestampTz now);

/*
 * Give every session that had socket activity its turn at libssh2.  All
 * libssh2 calls are made from here, at one stack depth (see session.c).
 */
extern void tunnel_session_service_all(void);

/* Does some session want another turn at once? */
extern bool tunnel_session_pending(void);

#endif							/* TUNNEL_SESSION_H */
