/*-------------------------------------------------------------------------
 *
 * conn.h
 *	  One SSH connection to a bastion: the way in (the connect machine),
 *	  then keepalive and the pass that runs its channels.
 *
 * A connection knows nothing of the tunnel it serves.  Its owner (pool.c:
 * the tunnel's own connection and its lanes; keycheck.c: a rotation's key
 * check) says what to reach and with which keys (TunnelConnPlan), answers
 * the questions of policy a pass asks (TunnelConnOwnerOps.open_allowed), and
 * hears of the connection's events through the same table.  A connection
 * ends one way: its owner's `ended` gets a TunnelConnEnd, as a channel's
 * pump reports a ChannelOutcome, and decides what follows (backoff, another
 * bastion, a lane's end).
 *
 * libssh2 allows one partly sent packet per session, and only the call that
 * started it may finish it; it also runs one channel open at a time.  The
 * connection arbitrates both among its channels and its keepalive
 * (sendturn.h), and makes every libssh2 call from
 * tunnel_conn_service_all(), at one stack depth.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_CONN_H
#define TUNNEL_CONN_H

#include <libssh2.h>

#include "lib/ilist.h"
#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "channel.h"
#include "connect.h"
#include "sendturn.h"
#include "status.h"
#include "tunnel_limits.h"
#include "watch.h"

typedef struct TunnelConn TunnelConn;

typedef enum TunnelConnPhase
{
	CONN_IDLE,					/* no connection: before a start, after an end */
	CONN_CONNECTING,			/* the connect machine is at work */
	CONN_READY					/* logged in, carrying channels */
} TunnelConnPhase;

/* The keepalive channel of a connection (keepalive.c). */
typedef enum TunnelKeepalivePhase
{
	KEEPALIVE_NONE,				/* no keepalive channel */
	KEEPALIVE_OPENING,
	KEEPALIVE_IDLE,				/* the channel is open */
	KEEPALIVE_ASKING,			/* a request on it awaits its answer */
	KEEPALIVE_CLOSING			/* the bastion closed it: free it */
} TunnelKeepalivePhase;

/* Which keys a connection offers, in order. */
typedef enum TunnelConnKeys
{
	CONN_KEYS_CURRENT,			/* the tunnel's key only */
	CONN_KEYS_NEXT_FIRST,		/* a rotation's new key, then the current */
	CONN_KEYS_NEXT_ONLY			/* a rotation's new key only (key check) */
} TunnelConnKeys;

/* What an attempt is to reach, set by the owner before each start. */
typedef struct TunnelConnPlan
{
	const char *host;			/* the bastion, as the catalog names it */
	int			port;
	const char *host_keys;		/* pins or the key trusted at first use */
	const char *host_key_algorithms;	/* to ask for first, or NULL */
	int			host_key_try;	/* family asked first for a bare pin */
	bool		trust_first_use;	/* accept and report an unknown host key */
	TunnelConnKeys keys;
} TunnelConnPlan;

/* How a connection ended: the one way a connection fails. */
typedef struct TunnelConnEnd
{
	TunnelState state;			/* for the tunnel's status */
	bool		refused;		/* closed before the SSH banner */
	bool		was_ready;		/* it had logged in (a loss, not a failure) */
	bool		next_family;	/* a bare pin: ask for the next family */
	char		banner[81];		/* REFUSED: what the bastion said instead */
	char		message[TUNNEL_ERROR_MAXLEN];
} TunnelConnEnd;

/* What a connection asks of, and tells, its owner. */
typedef struct TunnelConnOwnerOps
{
	/* The handshake is done (host key shown, methods negotiated). */
	void		(*handshake) (void *owner, TunnelConn *c);
	/* Logged in: c is READY (the owner may close it at once). */
	void		(*logged_in) (void *owner, TunnelConn *c);
	/*
	 * c ended: the owner closes it (tunnel_conn_close), sparing the clients
	 * it keeps; whatever it leaves open is closed after.  No callback may
	 * destroy c or start it again: that waits for the owner's next tick.
	 */
	void		(*ended) (void *owner, TunnelConn *c, const TunnelConnEnd *end);
	/* After a pass of a READY connection that did not end. */
	void		(*passed) (void *owner, TunnelConn *c);
	/* May channel f open on c now?  (Policy: lanes.c.) */
	bool		(*open_allowed) (void *owner, TunnelConn *c, TunnelChannel *f);
	/* The bastion answered an open of f (opened, or refused). */
	void		(*open_answered) (void *owner, TunnelConn *c, TunnelChannel *f);
	/* An open succeeded after elapsed_ms. */
	void		(*open_took) (void *owner, TunnelConn *c, long elapsed_ms);
	/* c's open slot is free again. */
	void		(*open_released) (void *owner, TunnelConn *c);
	/* The bastion could not reach a channel's target (c is fine). */
	void		(*forward_error) (void *owner, TunnelConn *c, const char *message);
} TunnelConnOwnerOps;

/* A target a connection's login knew (sshd fixes permitopen at login). */
typedef struct TunnelLoginTarget
{
	char	   *host;
	int			port;
	bool		prohibited;		/* refused "administratively prohibited" */
} TunnelLoginTarget;

/*
 * Fields others read; what is below "private" is the connection's own
 * (conn.c, with its socket in conn_io.c and its keepalive in keepalive.c).
 */
struct TunnelConn
{
	const TunnelDef *def;
	TunnelConnPhase phase;
	TunnelConnect connect;		/* the way in; its words after a failure */
	bool		authed_next;	/* logged in with the rotation's new key */
	TunnelSendTurn turn;		/* who may send, who may open */
	dlist_head	channels;		/* clients carried, or waiting on it */

	/* the owner's bookkeeping, never touched here */
	dlist_node	owner_node;
	TimestampTz idle_since;
	bool		retiring;		/* a previous login: takes no new opens */
	int			lane;			/* 0: the tunnel's own; else an extra one's number */
	List	   *login_targets;	/* of TunnelLoginTarget (lanes.c) */

	/* private */
	void	   *owner;
	const TunnelConnOwnerOps *ops;
	bool		handshake_noted;
	int			next_key_index;
	pgsocket	sock;
	bool		tcp;
	Watch	   *watch;
	bool		readable;
	bool		writable;
	LIBSSH2_SESSION *ssh;
	TimestampTz deadline;
	TimestampTz last_recv;
	uint64		recv_calls;
	bool		sock_empty;
	char	   *out;
	int			out_len;
	int			out_errno;
	bool		out_hold;
	int			leftover_passes;
	TimestampTz keepalive_started;
	TimestampTz probe_since;
	int			probes;
	TunnelKeepalivePhase keepalive_phase;
	LIBSSH2_CHANNEL *keepalive;
	bool		dirty;
	dlist_node	dirty_node;
	bool		fail_pending;
	TunnelState fail_state;
	char		fail_message[TUNNEL_ERROR_MAXLEN];
};

/* A connection that holds nothing yet, in the current memory context. */
extern TunnelConn *tunnel_conn_create(const TunnelDef *def, void *owner,
									  const TunnelConnOwnerOps *ops);
/* Close whatever it holds (politely when logged in) and free it. */
extern void tunnel_conn_destroy(TunnelConn *c);

/* Start an attempt: TCP (or through the proxy) to plan->host. */
extern void tunnel_conn_start(TunnelConn *c, const TunnelConnPlan *plan,
							  TimestampTz now);
/* Start at the handshake on a socket carried by a jump tunnel's channel. */
extern void tunnel_conn_start_on(TunnelConn *c, const TunnelConnPlan *plan,
								 pgsocket sock, TimestampTz now);
/* The attempt could not even start: it ends at once with message. */
extern void tunnel_conn_end_now(TunnelConn *c, TunnelState state,
								const char *message);

/*
 * Close the connection and its clients; spare_waiting: the clients that
 * have no channel yet stay, to wait for the next connection.
 */
extern void tunnel_conn_close(TunnelConn *c, bool polite, bool spare_waiting);

/* The transport is broken: c ends at the end of its pass. */
extern void tunnel_conn_fail(TunnelConn *c, const char *why);

/* Carry a new client (an accepted socket) on c, waiting for its channel. */
extern TunnelChannel *tunnel_conn_add_client(TunnelConn *c, pgsocket fd,
											 const char *remote_host,
											 int remote_port,
											 TunnelStatusSlot *slot,
											 TunnelForwardSlot *forward_slot);
/* Close client f of c at once. */
extern void tunnel_conn_drop_client(TunnelConn *c, TunnelChannel *f);
/* Move c's clients that wait for a channel to `to`. */
extern void tunnel_conn_move_waiting(TunnelConn *c, TunnelConn *to);
/* Move channel f, waiting for its channel, from c to `to`; it may open there. */
extern void tunnel_conn_move_client(TunnelConn *c, TunnelChannel *f,
									TunnelConn *to);
/*
 * Hand c's connection over to `to` (IDLE): socket, libssh2 session,
 * keepalive, send turn, and every channel that has something on it; the
 * clients still waiting for an open stay with c, which is left IDLE.
 */
extern void tunnel_conn_move_connection(TunnelConn *c, TunnelConn *to);

/* The channel holding c's open slot, or NULL (free, or the keepalive's). */
extern TunnelChannel *tunnel_conn_opening_channel(TunnelConn *c);
/* Does c have a failure pending (found in its pass, acted on after)? */
extern bool tunnel_conn_failing(TunnelConn *c);
/* The error libssh2 last reported on c's session, or NULL. */
extern int	tunnel_conn_last_error(TunnelConn *c, char **msg);

/*
 * Clients of c waiting longer than tunnel_ssh.connect_timeout are closed;
 * tunnel_ready: the tunnel was up (the bastion could not reach the target:
 * the owner hears of it as a forward error).  Returns the ms until the next
 * one is due, or -1.
 */
extern long tunnel_conn_expire_waiting(TunnelConn *c, TimestampTz now,
									   bool tunnel_ready);

/*
 * c's timers: the attempt's deadline, the resolver, keepalive.  Returns the
 * ms until it needs this again, or -1.
 */
extern long tunnel_conn_tick(TunnelConn *c, TimestampTz now);

/* Give c a turn at the next service. */
extern void tunnel_conn_mark_dirty(TunnelConn *c);

/* Give every connection that had socket activity its turn at libssh2. */
extern void tunnel_conn_service_all(void);
/* Does some connection want another turn at once? */
extern bool tunnel_conn_pending(void);

/* ---------- conn_io.c: the connection's socket ---------- */

/* Take the output batch (before the handshake's buffers: see conn.c). */
extern void tunnel_conn_io_reserve(TunnelConn *s);
/* Logged in: libssh2 reads and writes through our callbacks from now on. */
extern void tunnel_conn_io_attach(TunnelConn *s);
/* Write what the batch holds; false if some is left (the socket is full). */
extern bool tunnel_conn_io_flush(TunnelConn *s);
/* Register s->sock in the wait set for wanted events, or take it out. */
extern void tunnel_conn_io_watch(TunnelConn *s, uint32 wanted);
extern void tunnel_conn_io_unwatch(TunnelConn *s);

/* ---------- keepalive.c: the connection's liveness ---------- */

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


/* Milliseconds from now until t, rounded up; 0 if t has passed. */
static inline long
tunnel_ms_until(TimestampTz t, TimestampTz now)
{
	if (t <= now)
		return 0;
	return (long) ((t - now + 999) / 1000);
}

/* The lesser of two timeouts, where -1 is none. */
static inline long
tunnel_min_timeout(long a, long b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return Min(a, b);
}

#endif							/* TUNNEL_CONN_H */
