/*-------------------------------------------------------------------------
 *
 * session_internal.h
 *	  What session.c and lanes.c share: the session's state, and the few
 *	  functions each calls in the other.  Nothing else includes this.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_SESSION_INTERNAL_H
#define TUNNEL_SESSION_INTERNAL_H

#include "lib/ilist.h"
#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "connect.h"
#include "sendturn.h"
#include "session.h"
#include "tunnel_limits.h"
#include "watch.h"

/* The last time the bastion answered an open to one target. */
typedef struct TargetAnswer
{
	char	   *host;
	int			port;
	TimestampTz at;
} TargetAnswer;

/*
 * A target the catalog had when a session logged in.  sshd fixes a key's
 * permitopen list at login, so a target added later may be refused on that
 * session however the line on the bastion was changed since (lanes.c).
 */
typedef struct LoginTarget
{
	char	   *host;
	int			port;
	bool		prohibited;		/* refused "administratively prohibited" */
} LoginTarget;

typedef enum SessionPhase
{
	PHASE_IDLE,					/* start an attempt at the next tick */
	PHASE_CONNECTING,			/* the connect machine is at work */
	PHASE_READY,
	PHASE_BACKOFF,
	PHASE_DONE					/* a key check that has its answer */
} SessionPhase;

typedef enum KeepalivePhase
{
	KEEPALIVE_NONE,			/* no keepalive channel */
	KEEPALIVE_OPENING,
	KEEPALIVE_IDLE,			/* the channel is open */
	KEEPALIVE_ASKING,		/* a request on it awaits its answer */
	KEEPALIVE_CLOSING		/* the bastion closed it: free it */
} KeepalivePhase;

struct TunnelSession
{
	const TunnelDef *def;
	TunnelStatusSlot *slot;
	SessionPhase phase;

	/* the way in: holds the socket and libssh2's session until logged in */
	TunnelConnect connect;
	bool		handshake_noted;	/* its handshake shown in the status */
	int			next_key_index; /* of the rotation's key in its keys, or -1 */
	pgsocket	sock;			/* the connect machine's, then the session's */
	bool		tcp;			/* false: a socketpair to a jump session */
	Watch	   *watch;			/* of sock; moves with it (lanes.c) */
	bool		readable;		/* socket reported readable since last pass */
	bool		writable;

	LIBSSH2_SESSION *ssh;
	char		host_key[TUNNEL_FINGERPRINT_LEN + 1];
	int			host_key_try;	/* family asked first for a bare pin */
	bool		host_key_unsaved;	/* seen first, not yet in the catalog */
	bool		algorithm_unsaved;	/* a bare pin's algorithm, learned */
	char		host_key_algorithm[64]; /* it was negotiated with, or "" */
	TimestampTz host_key_save_at;	/* next try to write it */

	/* a key check only authenticates with the next key, then stops */
	bool		key_check;
	int			key_check_result;	/* 0 not yet, 1 accepted, -1 not */

	/* timers */
	TimestampTz deadline;		/* of the current connect phase */
	TimestampTz retry_at;		/* end of backoff */
	TimestampTz last_attempt;
	TimestampTz lost_at;		/* when a ready session last failed, or 0 */
	TimestampTz last_recv;		/* any byte from the bastion */
	uint64		recv_calls;		/* reads from the socket that got bytes */
	bool		sock_empty;		/* a read found it empty; not readable since */
	char	   *out;			/* packets libssh2 sent, not yet on the socket */
	int			out_len;
	int			out_errno;		/* a send to the socket failed with this */
	bool		out_hold;		/* in a pass: keep packets until its end */
	int			leftover_passes;	/* in a row, see pass() */
	TimestampTz keepalive_started;
	TimestampTz probe_since;	/* first keepalive probe since last_recv, or 0 */
	int			probes;			/* keepalive probes sent since then */
	int			failures;		/* consecutive failed attempts */
	bool		penalised;		/* the last failure was one sshd penalises */
	uint64		cert_warned_before; /* valid_before of the certificate whose
									 * coming expiry was logged */

	KeepalivePhase keepalive_phase;
	LIBSSH2_CHANNEL *keepalive;

	TunnelSendTurn turn;		/* who may send, who may open (sendturn.h) */

	dlist_head	channels;
	bool		dirty;
	dlist_node	dirty_node;

	/* lanes: extra sessions that take opens while this one's is busy */
	TunnelSession *primary;		/* set on a lane: the tunnel's session */
	dlist_head	lanes;			/* on the tunnel's session */
	dlist_node	lane_node;
	int			nlanes;
	TimestampTz lane_retry_at;
	int			failures_of_lanes;	/* consecutive, reset when one connects */
	TimestampTz dispatch_at;	/* look at the waiting clients again then */
	TimestampTz idle_since;		/* a lane's: no channel since, or 0 */
	bool		authed_next;	/* authenticated with the rotation's key */
	List	   *answers;		/* of TargetAnswer, on the tunnel's session */
	double		open_ms;		/* moving average of successful opens' times */

	/* logging in again for targets added since the login (lanes.c) */
	List	   *login_targets;	/* of LoginTarget: the catalog's at login */
	bool		relogin_wanted; /* on the tunnel's session: after this pass */
	TimestampTz relogin_at;		/* no re-login for a refused target before */
	int			relogins;		/* in a row for targets still refused */
	bool		retiring;		/* a lane: the previous login, takes no opens */

	/* a failure found inside a pass, acted on after it */
	bool		fail_pending;
	TunnelState fail_state;
	char		fail_message[TUNNEL_ERROR_MAXLEN];
	char		last_logged[TUNNEL_ERROR_MAXLEN];
};

/* The backoff after a bastion refused the connection (see session.c). */
#define REFUSED_FIRST_MS		30000.0
#define REFUSED_MAX_MS			600000.0

/* Milliseconds from now until t, rounded up; 0 if t has passed. */
static inline long
tunnel_ms_until(TimestampTz t, TimestampTz now)
{
	if (t <= now)
		return 0;
	return (long) ((t - now + 999) / 1000);
}

/* session.c */
extern void tunnel_session_close_connection(TunnelSession *s, bool polite);
extern long tunnel_session_backoff_ms(int failures, double first_ms,
									  double cap_ms);
/* Give the session a turn at the next service (a client has bytes). */
extern void tunnel_session_mark_dirty(TunnelSession *s);
/* The transport is broken: the session fails at the end of its pass. */
extern void tunnel_session_fail(TunnelSession *s, const char *why);
/* A channel could not reach its target through the bastion. */
extern void tunnel_session_report_forward_error(TunnelSession *s,
												const char *message);
/* Hand s's connection and its channels but the waiting ones over to to. */
extern void tunnel_session_move_connection(TunnelSession *s, TunnelSession *to);

/* lanes.c */
extern TunnelSession *tunnel_lanes_pool_of(TunnelSession *s);
extern TunnelSession *tunnel_lane_from_node(dlist_node *node);
extern void tunnel_lanes_return_waiting(TunnelSession *s);
extern void tunnel_lanes_drop_all(TunnelSession *s, bool keep_retiring);
extern void tunnel_lane_failed(TunnelSession *s, const char *message,
							   bool penalised);
extern void tunnel_lanes_dispatch(TunnelSession *p);
extern long tunnel_lanes_tick(TunnelSession *p, TimestampTz now);
/* The session authenticated: remember the catalog's targets now. */
extern void tunnel_lanes_note_login(TunnelSession *s);
extern void tunnel_lanes_forget_login(TunnelSession *s);
/* After a pass of p: log in again if a client's target wants it. */
extern void tunnel_lanes_relogin(TunnelSession *p);

/*
 * One channel open at a time per session, and none while an open to the
 * same target has long been pending (lanes.c keeps the answers per target).
 */
extern bool tunnel_session_open_allowed(TunnelSession *s, TunnelChannel *f);
/* The bastion answered an open of f (opened or refused): its target is up. */
extern void tunnel_session_open_answered(TunnelSession *s, TunnelChannel *f);
/* A channel open succeeded after elapsed_ms: the tunnel's usual open time. */
extern void tunnel_session_open_took(TunnelSession *s, long elapsed_ms);

#endif							/* TUNNEL_SESSION_INTERNAL_H */
