/*-------------------------------------------------------------------------
 *
 * probechain.h
 *	  The SSH connections tunnel_test holds, one per hop with via, and its
 *	  waits on them with a limit.
 *
 * tunnel_test (api_test.c) runs in a backend, one step after another, and
 * every step waits on the connection it is making.  With via, that
 * connection runs over one end of a socketpair, and the bytes have to be
 * moved between the other end and a direct-tcpip channel of the jump
 * tunnel's connection (as the worker does), while the step waits: so
 * waiting and pumping are one job, kept here, apart from the steps.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_PROBECHAIN_H
#define TUNNEL_PROBECHAIN_H

#include <libssh2.h>

#include "datatype/timestamp.h"

#include "connect.h"

/* Longer chains are refused; a loop could only be written by hand. */
#define TUNNEL_PROBECHAIN_MAX_HOPS 8

typedef struct TunnelHopPump TunnelHopPump;

/* One hop of the chain: a connection to one bastion. */
typedef struct TunnelProbeHop
{
	TunnelConnect connect;		/* holds the socket and libssh2's session */
	TunnelHopPump *pump;		/* with via: carries connect over outer */
	struct TunnelProbeHop *outer;	/* the jump tunnel's hop, with via */
	TimestampTz deadline;		/* the waits' limit: the step's */
} TunnelProbeHop;

/*
 * Sleep until the hop's socket is ready for `events` (WL_SOCKET_*), the
 * latch is set or a short while passes; false once the deadline is reached.
 * A cancel or statement_timeout raises its error here.
 */
extern bool tunnel_probechain_wait(TunnelProbeHop *hop, int events);

/* tunnel_probechain_wait for what the hop's libssh2 session is blocked on. */
extern bool tunnel_probechain_wait_ssh(TunnelProbeHop *hop);

/*
 * Run the hop's connect machine over `channel`, a direct-tcpip channel of
 * hop->outer's session to this hop's bastion: through a socketpair that
 * the waits pump.  A pump of an earlier connection is closed.
 */
extern void tunnel_probechain_hop_over(TunnelProbeHop *hop,
								  LIBSSH2_CHANNEL *channel);

/* Close the hop's connection (and its pump); not the outer hops. */
extern void tunnel_probechain_hop_close(TunnelProbeHop *hop);

#endif							/* TUNNEL_PROBECHAIN_H */
