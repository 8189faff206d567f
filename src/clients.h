/*-------------------------------------------------------------------------
 *
 * clients.h
 *	  Who uses a tunnel: each client connection's record in shared memory
 *	  (tunnel_connections()), its audit lines (tunnel_ssh.log_connections)
 *	  and its part of the counters (stats.h).
 *
 * The channel that carries a client owns its TunnelClient and tells it
 * what happens; nothing here is on the per-byte path but two atomic stores
 * when a pump moved bytes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_CLIENTS_H
#define TUNNEL_CLIENTS_H

#include "stats.h"
#include "status.h"

typedef struct TunnelClient TunnelClient;

typedef enum TunnelClientState
{
	TUNNEL_CLIENT_WAITING,		/* for its channel */
	TUNNEL_CLIENT_OPEN,
	TUNNEL_CLIENT_HALF_CLOSED,	/* one side sent its EOF */
	TUNNEL_CLIENT_CLOSING
} TunnelClientState;

/* Who ended a connection; the first to is the one. */
typedef enum TunnelClientCloser
{
	TUNNEL_CLOSED_BY_NONE,
	TUNNEL_CLOSED_BY_CLIENT,
	TUNNEL_CLOSED_BY_TARGET,
	TUNNEL_CLOSED_BY_BASTION,	/* the session or the channel failed */
	TUNNEL_CLOSED_BY_TUNNEL		/* tunnel_ssh: a timeout, a disable */
} TunnelClientCloser;

extern Size tunnel_clients_shmem_size(void);
extern void tunnel_clients_shmem_init(void);	/* under AddinShmemInitLock */
/* The worker starts with no clients (those of a previous one died). */
extern void tunnel_clients_reset(void);

/* A client was accepted on sock for the forward fs of the tunnel slot. */
extern TunnelClient *tunnel_client_begin(int sock, TunnelStatusSlot *slot,
										 TunnelForwardSlot *fs,
										 const char *remote_host,
										 int remote_port);
/*
 * The channel's direct-tcpip request, naming the client as originator
 * (libssh2_channel_direct_tcpip_ex() cannot choose the window, so channel.c
 * sends it through libssh2_channel_open_ex()).
 */
extern char *tunnel_client_open_message(TunnelClient *c, unsigned int *len);

extern void tunnel_client_opened(TunnelClient *c, const char *bastion_host,
								 int bastion_port, int lane, int64 open_us);
extern void tunnel_client_not_opened(TunnelClient *c, TunnelOpenFailure why,
									 const char *detail);
/* Why an open the bastion refused failed, from libssh2's message. */
extern TunnelOpenFailure tunnel_client_open_failure_of(const char *ssh_message);
/* Its session is now lane's (a previous login that retires, lanes.c). */
extern void tunnel_client_moved(TunnelClient *c, int lane);

extern void tunnel_client_set_state(TunnelClient *c, TunnelClientState state);
extern void tunnel_client_closed_by(TunnelClient *c, TunnelClientCloser who);
extern void tunnel_client_count_bytes(TunnelClient *c, uint64 bytes_in,
									  uint64 bytes_out);
/* The connection is over: log it, count it, free the record. */
extern void tunnel_client_end(TunnelClient *c);

#endif							/* TUNNEL_CLIENTS_H */
