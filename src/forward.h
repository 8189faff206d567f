/*-------------------------------------------------------------------------
 *
 * forward.h
 *	  One client connection carried over one direct-tcpip channel.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_FORWARD_H
#define TUNNEL_FORWARD_H

#include "lib/ilist.h"
#include "datatype/timestamp.h"

#include "session.h"

/* Take ownership of an accepted, non-blocking client socket. */
extern TunnelForward *forward_create(TunnelSession *session, pgsocket client,
									 const char *remote_host, int remote_port,
									 TunnelStatusSlot *slot,
									 TunnelForwardSlot *forward_slot);

/* Why a direct-tcpip channel was refused, for status and tunnel_test(). */
extern void forward_open_error_text(char *buf, size_t len, const char *host,
									int port, const char *ssh_message);

/*
 * Move data both ways as far as it goes without blocking, and open or close
 * the channel as needed.  Returns false once the forward is finished; the
 * caller then destroys it.  *progress is set when bytes moved.
 */
extern bool forward_pump(TunnelForward *f, bool *progress);

/* Close the client and drop the channel at once (the session is gone). */
extern void forward_destroy(TunnelForward *f);

/*
 * A client still there whose channel was never opened: it can wait for the
 * session to come back.
 */
extern bool forward_waits_for_session(TunnelForward *f);

/* Carry the forward on another session (only while it has no channel). */
extern void forward_set_session(TunnelForward *f, TunnelSession *session);

/* When a client still waiting for its channel arrived (0: not waiting). */
extern TimestampTz forward_waiting_since(TunnelForward *f);

/* When the forward's pending channel open was sent (0: none pending). */
extern TimestampTz forward_open_since(TunnelForward *f);

/* Where the forward leads. */
extern const char *forward_remote_host(TunnelForward *f);
extern int	forward_remote_port(TunnelForward *f);

/* Do two forwards lead to the same host and port? */
extern bool forward_same_target(TunnelForward *a, TunnelForward *b);

/*
 * A waiting client ran out of time (tunnel_ssh.connect_timeout): close it,
 * and when the session was up, name the target in the forward's status.
 */
extern void forward_give_up(TunnelForward *f, bool session_ready);

/* Has the forward a channel that is not at EOF (to drain the transport)? */
extern LIBSSH2_CHANNEL *forward_live_channel(TunnelForward *f);

/* How many channels are open, over every session of the worker. */
extern int	forward_channels_open(void);

/* The session keeps its forwards in a dlist through this node. */
extern dlist_node *forward_node(TunnelForward *f);
extern TunnelForward *forward_from_node(dlist_node *node);

#endif							/* TUNNEL_FORWARD_H */
