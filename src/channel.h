/*-------------------------------------------------------------------------
 *
 * channel.h
 *	  One client connection carried over one direct-tcpip channel.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_CHANNEL_H
#define TUNNEL_CHANNEL_H

#include <libssh2.h>

#include "lib/ilist.h"
#include "datatype/timestamp.h"

#include "sendturn.h"
#include "status.h"
#include "tunnel_limits.h"

/*
 * A channel knows nothing of the session that carries it: it is given the
 * session's send turn and a call that asks for a pump soon, and each pump
 * reports what the session must act on.
 */
typedef struct TunnelChannel TunnelChannel;

/* Asks the carrier to pump the channel soon (its client has bytes). */
typedef void (*ChannelWake) (void *arg);

/* What one pump did that the carrying session acts on. */
typedef struct ChannelOutcome
{
	bool		progress;		/* bytes moved, or the channel opened or ended */
	bool		turn_released;	/* it finished a stalled send: others may go */
	bool		open_released;	/* it gave the open slot back */
	bool		open_answered;	/* the bastion answered its open */
	long		open_took_ms;	/* it opened, after this long; else -1 */
	int64		open_took_us;	/* the same, finer, for its client's record */
	const char *transport_error;	/* the SSH session failed (libssh2's words) */
	char		forward_error[TUNNEL_ERROR_MAXLEN]; /* its target failed; else "" */
} ChannelOutcome;

/*
 * Take ownership of an accepted, non-blocking client socket, to be carried
 * by the session whose send turn is `turn`; wake(wake_arg) when it has
 * something to do.
 */
extern TunnelChannel *channel_create(TunnelSendTurn *turn, ChannelWake wake,
									 void *wake_arg, pgsocket client,
									 const char *remote_host, int remote_port,
									 TunnelStatusSlot *slot,
									 TunnelForwardSlot *forward_slot);

/*
 * Move data both ways as far as it goes without blocking, and open or close
 * the channel as needed, on ssh (NULL while the session is not ready).
 * may_open: the channel may take the session's open slot.  Returns false
 * once the channel is finished; the caller acts on *out, then destroys it.
 */
extern bool channel_pump(TunnelChannel *f, LIBSSH2_SESSION *ssh, bool may_open,
						 ChannelOutcome *out);

/* Does it wait for its channel to be opened? */
extern bool channel_wants_open(TunnelChannel *f);

/* Close the client and drop the channel at once (the session is gone). */
extern void channel_destroy(TunnelChannel *f);

/*
 * A client still there whose channel was never opened: it can wait for the
 * session to come back.
 */
extern bool channel_waits_for_session(TunnelChannel *f);

/*
 * Carry the channel on another session (only while it has no channel): its
 * send turn, and the argument for the wake call.
 */
extern void channel_move(TunnelChannel *f, TunnelSendTurn *turn,
						 void *wake_arg);

/* When a client still waiting for its channel arrived (0: not waiting). */
extern TimestampTz channel_waiting_since(TunnelChannel *f);

/* When the channel's pending open was sent (0: none pending). */
extern TimestampTz channel_open_since(TunnelChannel *f);

/* Its client's record (clients.h). */
struct TunnelClient;
extern struct TunnelClient *channel_client(TunnelChannel *f);

/* Where the channel leads. */
extern const char *channel_remote_host(TunnelChannel *f);
extern int	channel_remote_port(TunnelChannel *f);

/* Do two channels lead to the same host and port? */
extern bool channel_same_target(TunnelChannel *a, TunnelChannel *b);

/*
 * A waiting client ran out of time (tunnel_ssh.connect_timeout): close it.
 * When the session was up, the bastion could not reach the target: the
 * forward's status says so, and error gets the text for the tunnel's
 * (else it is set empty).
 */
extern void channel_give_up(TunnelChannel *f, bool session_ready,
							char *error, size_t errlen);

/* Has it an SSH channel that is not at EOF (to drain the transport)? */
extern LIBSSH2_CHANNEL *channel_ssh_channel(TunnelChannel *f);

/* How many channels are open, over every session of the worker. */
extern int	channel_count_open(void);

/* The session keeps its channels in a dlist through this node. */
extern dlist_node *channel_node(TunnelChannel *f);
extern TunnelChannel *channel_from_node(dlist_node *node);

#endif							/* TUNNEL_CHANNEL_H */
