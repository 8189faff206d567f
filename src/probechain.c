/*-------------------------------------------------------------------------
 *
 * probechain.c
 *	  tunnel_test's connections, one per hop with via: waiting on them with
 *	  a limit, and pumping each hop's bytes over its jump tunnel's channel
 *	  meanwhile.
 *
 * Every wait ends in CHECK_FOR_INTERRUPTS (or, on a chain, in a short
 * poll() that the signals behind a cancel or statement_timeout interrupt),
 * so tunnel_test stops at any step.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "pgstat.h"
#include "utils/timestamp.h"

#include "probechain.h"

/*
 * A jump: the session of a tunnel with via runs over one end of a
 * socketpair, and the probe moves bytes between the other end and a
 * direct-tcpip channel of the jump tunnel's session, as the worker does.
 */
struct TunnelHopPump
{
	LIBSSH2_CHANNEL *channel;	/* on the jump tunnel's session */
	pgsocket	sock;			/* our end of the socketpair */
	char		up[16384];		/* from this session to the channel */
	size_t		up_len;
	size_t		up_off;
	char		down[16384];	/* from the channel to this session */
	size_t		down_len;
	size_t		down_off;
	bool		broken;
};

static bool chain_wait(TunnelProbeHop *p, int events, long ms);

bool
tunnel_probechain_wait(TunnelProbeHop *p, int events)
{
	long		ms = (long) ((p->deadline - GetCurrentTimestamp()) / 1000);
	pgsocket	sock = p->connect.sock;

	if (ms <= 0)
		return false;
	if (p->outer && sock != PGINVALID_SOCKET)
		return chain_wait(p, events, ms);
	if (sock == PGINVALID_SOCKET)
		events = 0;
	/* Without a descriptor (a name being looked up), look again soon. */
	(void) WaitLatchOrSocket(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH |
							 events, sock, Min(ms, events ? 1000 : 10),
							 PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return true;
}

bool
tunnel_probechain_wait_ssh(TunnelProbeHop *p)
{
	int			dirs = libssh2_session_block_directions(p->connect.ssh);
	int			events = 0;

	if (dirs & LIBSSH2_SESSION_BLOCK_INBOUND)
		events |= WL_SOCKET_READABLE;
	if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		events |= WL_SOCKET_WRITEABLE;
	return tunnel_probechain_wait(p, events ? events : WL_SOCKET_READABLE);
}

/*
 * Move what is ready between this session's socketpair and its channel on
 * the jump tunnel's session, jump tunnels first.  No read on the channel
 * while a write to it is unfinished: libssh2 lets only the call that began
 * a packet finish it.
 */
static void
pump(TunnelProbeHop *p)
{
	TunnelHopPump *h = p->pump;

	if (p->outer->outer)
		pump(p->outer);
	for (int round = 0; round < 16 && !h->broken; round++)
	{
		bool		moved = false;
		ssize_t		n;

		if (h->up_off == h->up_len)
		{
			n = read(h->sock, h->up, sizeof(h->up));
			if (n > 0)
			{
				h->up_len = n;
				h->up_off = 0;
			}
			else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
				h->broken = true;
		}
		if (h->up_off < h->up_len)
		{
			n = libssh2_channel_write(h->channel, h->up + h->up_off,
									  h->up_len - h->up_off);
			if (n > 0)
			{
				h->up_off += n;
				moved = true;
			}
			else if (n != LIBSSH2_ERROR_EAGAIN)
				h->broken = true;
		}
		if (h->down_off == h->down_len && h->up_off == h->up_len)
		{
			n = libssh2_channel_read(h->channel, h->down, sizeof(h->down));
			if (n > 0)
			{
				h->down_len = n;
				h->down_off = 0;
			}
			else if ((n == 0 && libssh2_channel_eof(h->channel)) ||
					 (n < 0 && n != LIBSSH2_ERROR_EAGAIN))
				h->broken = true;
		}
		if (h->down_off < h->down_len)
		{
			n = write(h->sock, h->down + h->down_off,
					  h->down_len - h->down_off);
			if (n > 0)
			{
				h->down_off += n;
				moved = true;
			}
			else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
				h->broken = true;
		}
		if (!moved)
			break;
	}
	/* This session then sees the end of its socket and fails at once. */
	if (h->broken)
		(void) shutdown(h->sock, SHUT_RDWR);
}

static short
ssh_poll_events(LIBSSH2_SESSION *ssh)
{
	int			dirs = ssh ? libssh2_session_block_directions(ssh) : 0;
	short		events = POLLIN;

	if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		events |= POLLOUT;
	return events;
}

/*
 * tunnel_probechain_wait for a tunnel with via: pump, then sleep on every
 * socket of the chain.  poll() rather than the latch because there are
 * several sockets; the signals behind a cancel or statement_timeout
 * interrupt it, and the sleeps are short.
 */
static bool
chain_wait(TunnelProbeHop *p, int events, long ms)
{
	struct pollfd fds[2 * TUNNEL_PROBECHAIN_MAX_HOPS + 2];
	int			n = 0;

	pump(p);
	fds[n].fd = p->connect.sock;
	fds[n++].events = ((events & WL_SOCKET_READABLE) ? POLLIN : 0) |
		((events & WL_SOCKET_WRITEABLE) ? POLLOUT : 0);
	for (TunnelProbeHop *q = p; q->outer; q = q->outer)
	{
		TunnelHopPump *h = q->pump;

		if (!h->broken)
		{
			fds[n].fd = h->sock;
			fds[n++].events = (h->up_off == h->up_len ? POLLIN : 0) |
				(h->down_off < h->down_len ? POLLOUT : 0);
		}
		fds[n].fd = q->outer->connect.sock;
		fds[n++].events = ssh_poll_events(q->outer->connect.ssh);
	}
	(void) poll(fds, n, Min(ms, 100));
	CHECK_FOR_INTERRUPTS();
	if (!PostmasterIsAlive())
		proc_exit(1);
	return true;
}

void
tunnel_probechain_hop_over(TunnelProbeHop *p, LIBSSH2_CHANNEL *channel)
{
	int			sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create a socket pair: %m")));
	/* An earlier connection's channel is left to the jump session's end. */
	if (p->pump)
	{
		(void) shutdown(p->pump->sock, SHUT_RDWR);
		close(p->pump->sock);
	}
	else
		p->pump = palloc0(sizeof(TunnelHopPump));
	memset(p->pump, 0, sizeof(TunnelHopPump));
	p->pump->channel = channel;
	p->pump->sock = sv[1];
	tunnel_connect_begin_on(&p->connect, sv[0]);
}

void
tunnel_probechain_hop_close(TunnelProbeHop *p)
{
	/* This session first: it runs over its jump tunnel's channel. */
	if (p->pump)
	{
		(void) shutdown(p->pump->sock, SHUT_RDWR);
		close(p->pump->sock);
		p->pump = NULL;
	}
	tunnel_connect_close(&p->connect);
}
