/*-------------------------------------------------------------------------
 *
 * peer.h
 *	  Which process is on the other end of a client's socket.
 *
 * A Unix socket's peer is told by the kernel (SO_PEERCRED) at no cost.  A
 * loopback TCP peer is found the way ss -p and lsof find it: the socket's
 * inode in /proc/net/tcp, then the process holding that inode among the
 * processes of our own OS user (we can read no one else's descriptors, and
 * a peer of another user is not one to name).  That costs a walk of /proc,
 * so it is done when asked (tunnel_connections(), the audit line), never on
 * the data path.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_PEER_H
#define TUNNEL_PEER_H

#include <sys/socket.h>

/* The pid of a Unix socket's peer if it runs as our OS user, else 0. */
extern int	tunnel_peer_unix_pid(int sock);

/*
 * One loopback TCP connection to look up: the client's end (addr, port)
 * and the worker's end (local_addr, local_port), as the worker saw them.
 */
typedef struct TunnelPeerQuery
{
	struct sockaddr_storage client;
	struct sockaddr_storage server;
	int			pid;			/* out: 0 when not ours or not found */
} TunnelPeerQuery;

/* Fill in the pid of each query, with one walk of /proc for them all. */
extern void tunnel_peer_find_pids(TunnelPeerQuery *queries, int n);

#endif							/* TUNNEL_PEER_H */
