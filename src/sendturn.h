/*-------------------------------------------------------------------------
 *
 * sendturn.h
 *	  Whose turn it is to send on one libssh2 session, and who holds its
 *	  one channel-open slot.
 *
 * libssh2 keeps at most one half-sent packet per session, and only the
 * call that started it may finish it: any other call that sends gets
 * LIBSSH2_ERROR_BAD_USE.  A TunnelSendTurn records which party (a channel,
 * or the session itself for its keepalive) holds such a stalled send and
 * which call it was making, so that no one else sends until that same
 * call has been made again.  It knows nothing of libssh2 or sockets: the
 * session reports each call's outcome, the turn answers who may go.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_SENDTURN_H
#define TUNNEL_SENDTURN_H

/* What a party was doing when the session's send stalled. */
typedef enum TurnOp
{
	TURN_OP_NONE,
	TURN_OP_OPEN,
	TURN_OP_WRITE,
	TURN_OP_EOF,
	TURN_OP_READ,
	TURN_OP_ADJUST,
	TURN_OP_CLOSE,
	TURN_OP_REQUEST
} TurnOp;

typedef struct TunnelSendTurn
{
	const void *owner;			/* holder of the stalled send, or NULL */
	TurnOp		op;				/* the call it must make again */
	const void *opener;			/* holder of the open slot, or NULL */
} TunnelSendTurn;

extern void tunnel_turn_init(TunnelSendTurn *t);

/* May `who` start (or resume) a call that sends? */
extern bool tunnel_turn_may_send(const TunnelSendTurn *t, const void *who);

/* The call `who` must make again, if it holds the stalled send. */
extern TurnOp tunnel_turn_owned_op(const TunnelSendTurn *t, const void *who);

/*
 * `who` made call op; stalled says the call left a packet half-sent (it
 * returned EAGAIN with the session blocked outbound).  True when this
 * released the turn, so that parties that held back may go now.
 */
extern bool tunnel_turn_sent(TunnelSendTurn *t, const void *who, TurnOp op,
							 bool stalled);

/* Take the open slot if it is free; true if `who` holds it now. */
extern bool tunnel_turn_claim_open(TunnelSendTurn *t, const void *who);

/* Give the open slot back; true if `who` held it. */
extern bool tunnel_turn_release_open(TunnelSendTurn *t, const void *who);

/* `who` is gone (or moved to another session): it holds nothing here. */
extern void tunnel_turn_forget(TunnelSendTurn *t, const void *who);

static inline bool
tunnel_turn_holds_open(const TunnelSendTurn *t, const void *who)
{
	return t->opener == who;
}

/* The holder of the stalled send, or NULL. */
static inline const void *
tunnel_turn_owner(const TunnelSendTurn *t)
{
	return t->owner;
}

/* The holder of the open slot, or NULL. */
static inline const void *
tunnel_turn_opener(const TunnelSendTurn *t)
{
	return t->opener;
}

#endif							/* TUNNEL_SENDTURN_H */
