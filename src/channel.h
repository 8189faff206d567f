/*-------------------------------------------------------------------------
 *
 * channel.h
 *	  One client connection carried over one direct-tcpip channel.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_CHANNEL_H
#define TUNNEL_CHANNEL_H

#include "lib/ilist.h"
#include "datatype/timestamp.h"

#include "session.h"

/* Take ownership of an accepted, non-blocking client socket. */
extern TunnelChannel *channel_create(TunnelSession *session, pgsocket client,
									 const char *remote_host, int remote_port,
									 TunnelStatusSlot *slot,
									 TunnelForwardSlot *forward_slot);

/*
 * Move data both ways as far as it goes without blocking, and open or close
 * the channel as needed.  Returns false once the channel is finished; the
 * caller then destroys it.  *progress is set when bytes moved.
 */
extern bool channel_pump(TunnelChannel *f, bool *progress);

/* Close the client and drop the channel at once (the session is gone). */
extern void channel_destroy(TunnelChannel *f);

/*
 * A client still there whose channel was never opened: it can wait for the
 * session to come back.
 */
extern bool channel_waits_for_session(TunnelChannel *f);

/* Carry the channel on another session (only while it has no channel). */
extern void channel_set_session(TunnelChannel *f, TunnelSession *session);

/* When a client still waiting for its channel arrived (0: not waiting). */
extern TimestampTz channel_waiting_since(TunnelChannel *f);

/* When the channel's pending open was sent (0: none pending). */
extern TimestampTz channel_open_since(TunnelChannel *f);

/* Where the channel leads. */
extern const char *channel_remote_host(TunnelChannel *f);
extern int	channel_remote_port(TunnelChannel *f);

/* Do two channels lead to the same host and port? */
extern bool channel_same_target(TunnelChannel *a, TunnelChannel *b);

/*
 * A waiting client ran out of time (tunnel_ssh.connect_timeout): close it,
 * and when the session was up, name the target in its forward's status.
 */
extern void channel_give_up(TunnelChannel *f, bool session_ready);

/* Has it an SSH channel that is not at EOF (to drain the transport)? */
extern LIBSSH2_CHANNEL *channel_ssh_channel(TunnelChannel *f);

/* How many channels are open, over every session of the worker. */
extern int	channel_count_open(void);

/* The session keeps its channels in a dlist through this node. */
extern dlist_node *channel_node(TunnelChannel *f);
extern TunnelChannel *channel_from_node(dlist_node *node);

#endif							/* TUNNEL_CHANNEL_H */
