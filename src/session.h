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
#include "sendturn.h"
#include "status.h"

typedef struct TunnelSession TunnelSession;
typedef struct TunnelChannel TunnelChannel;

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

/* Authenticated and carrying traffic? */
extern bool tunnel_session_ready(TunnelSession *s);
extern void tunnel_session_set_def(TunnelSession *s, const TunnelDef *def);

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

/* For channel.c: the libssh2 handle, NULL unless authenticated. */
extern LIBSSH2_SESSION *tunnel_session_ssh(TunnelSession *s);

/* May `who` start (or resume) a libssh2 call that sends? */
extern bool tunnel_session_may_send(TunnelSession *s, const void *who);

/* Which op `who` must resume, if it holds the stalled send. */
extern SessionOp tunnel_session_owned_op(TunnelSession *s, const void *who);

/* Report the result of a libssh2 call that may send. */
extern void tunnel_session_sent(TunnelSession *s, const void *who,
								SessionOp op, int rc);

/*
 * One channel open at a time per session.  A forward asks first whether it
 * may open at all: not while an open to its target has long been pending.
 */
extern bool tunnel_session_open_allowed(TunnelSession *s, TunnelChannel *f);
/* The bastion answered an open of f (opened or refused): its target is up. */
extern void tunnel_session_open_answered(TunnelSession *s, TunnelChannel *f);
/* A channel open succeeded after elapsed_ms: the tunnel's usual open time. */
extern void tunnel_session_open_took(TunnelSession *s, long elapsed_ms);
extern bool tunnel_session_claim_open(TunnelSession *s, const void *who);
extern void tunnel_session_release_open(TunnelSession *s, const void *who);
extern bool tunnel_session_holds_open(TunnelSession *s, const void *who);

/* A forward found the transport broken. */
extern void tunnel_session_fail(TunnelSession *s, const char *why);

/* A forward's client had activity: give the session a turn. */
extern void tunnel_session_mark_dirty(TunnelSession *s);

/* A forward could not reach its target through the bastion. */
extern void tunnel_session_report_forward_error(TunnelSession *s,
												const char *message);

#endif							/* TUNNEL_SESSION_H */
