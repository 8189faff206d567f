/*-------------------------------------------------------------------------
 *
 * pgprobe.h
 *	  tunnel_test's last step: prove that a PostgreSQL server answers at the
 *	  other end of a channel, and leave it as a polite client does.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_PGPROBE_H
#define TUNNEL_PGPROBE_H

#include <libssh2.h>

#include "probechain.h"

/*
 * Send an SSLRequest over `channel` (of hop's session) to host:port and
 * read the answer, waiting through the hop (tunnel_probechain_wait_ssh)
 * until its deadline.  True if PostgreSQL answered; `detail` says what answered, or
 * why it is not PostgreSQL, in tunnel_test's words.  The channel is left
 * open, for the caller to free.
 */
extern bool tunnel_pgprobe(TunnelProbeHop *hop, LIBSSH2_CHANNEL *channel,
						   const char *host, int port,
						   char *detail, size_t detail_len);

#endif							/* TUNNEL_PGPROBE_H */
