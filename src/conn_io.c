/*-------------------------------------------------------------------------
 *
 * conn_io.c
 *	  A connection's socket: what libssh2 reads and writes through it, and
 *	  its place in the worker's wait set.
 *
 * libssh2 reads and writes through the callbacks here: a read notes the
 * bastion's liveness and acknowledges at once (TCP_QUICKACK), and the
 * packets of a pass go out together in one send() (the output batch).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "conn.h"
#include "watch.h"

/*
 * libssh2 calls this for every read from the bastion, which makes "any byte
 * received" our measure of liveness at the cost of one clock read.
 */
static
LIBSSH2_RECV_FUNC(recv_and_note)
{
	TunnelConn *s = (TunnelConn *) *abstract;
	ssize_t		n;

	/*
	 * libssh2 reads the socket before every write and read of a channel, to
	 * drain window adjusts: mostly a recv() that only says EAGAIN.  Once a
	 * read found the socket empty, the level-triggered wait set reports any
	 * bytes that arrive after; until then there is nothing to read.
	 */
	if (s->sock_empty)
		return -EAGAIN;
	n = recv(socket, buffer, length, flags);
	if (n > 0)
	{
		s->recv_calls++;
		if ((size_t) n < length)
			s->sock_empty = true;
		s->last_recv = GetCurrentTimestamp();

		/*
		 * sshd leaves Nagle on for a session without a terminal, so while
		 * one of its small packets is unacknowledged the next waits for our
		 * ACK, which Linux delays up to 40 ms.  With several channels busy
		 * that stall hits every channel open and reply (new connections
		 * through ssh -L drop from ~250/s with one client to ~60/s with
		 * eight).  Acknowledging at once whenever we have drained the
		 * socket releases sshd's next packet; during bulk transfers reads
		 * fill the buffer and this costs nothing.
		 */
		if ((size_t) n < length && s->tcp)
		{
			int			one = 1;

			(void) setsockopt(socket, IPPROTO_TCP, TCP_QUICKACK,
							  &one, sizeof(one));
		}
	}
	else if (n < 0)
	{
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			s->sock_empty = true;
		return -errno;
	}
	return n;
}

/*
 * libssh2 hands over each packet in a send() of its own.  During a pass, we
 * keep them and write them together at its end: sixteen clients' queries
 * answered in one pass cost one send() and one TCP segment, not sixteen,
 * here and in sshd (ssh's own client batches its output the same way).
 * Outside a pass a packet goes out at once.  libssh2 sees EAGAIN only when
 * OUT_BUFSIZE is full and the socket takes nothing: then its send stalls
 * as it would on a full socket.
 */
#define OUT_BUFSIZE		(128 * 1024)

/* Write what is kept; false if some is left (the socket is full). */
bool
tunnel_conn_io_flush(TunnelConn *s)
{
	int			done = 0;

	while (done < s->out_len && s->out_errno == 0)
	{
		ssize_t		n = send(s->sock, s->out + done, s->out_len - done,
							 MSG_NOSIGNAL);

		if (n > 0)
			done += n;
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		else if (errno != EINTR)
			s->out_errno = errno;	/* the next packet reports it */
	}
	if (s->out_errno != 0)
		done = s->out_len;
	if (done > 0)
	{
		memmove(s->out, s->out + done, s->out_len - done);
		s->out_len -= done;
	}
	return s->out_len == 0;
}

static
LIBSSH2_SEND_FUNC(send_batched)
{
	TunnelConn *s = (TunnelConn *) *abstract;

	if (s->out_errno != 0)
		return -s->out_errno;
	if (s->out == NULL)
		s->out = MemoryContextAlloc(GetMemoryChunkContext(s), OUT_BUFSIZE);
	/* A packet is at most 35 kB: an empty buffer always has room for it. */
	if (length > (size_t) (OUT_BUFSIZE - s->out_len))
	{
		(void) tunnel_conn_io_flush(s);
		if (s->out_errno != 0)
			return -s->out_errno;
		if (length > (size_t) (OUT_BUFSIZE - s->out_len))
			return -EAGAIN;
	}
	memcpy(s->out + s->out_len, buffer, length);
	s->out_len += (int) length;
	if (!s->out_hold && !tunnel_conn_io_flush(s) && s->out_errno != 0)
		return -s->out_errno;
	return (ssize_t) length;
}

static void
on_socket_event(void *arg, uint32 occurred)
{
	TunnelConn *s = (TunnelConn *) arg;

	if (occurred & WL_SOCKET_READABLE)
	{
		s->readable = true;
		s->sock_empty = false;
	}
	if (occurred & WL_SOCKET_WRITEABLE)
		s->writable = true;
	tunnel_conn_mark_dirty(s);
}

/*
 * The socket's watch is allocated with it, so that the connection can move
 * to another TunnelConn (tunnel_conn_move_connection) with its place in the
 * wait set: the socket stays registered, only the callback's argument
 * changes.
 */
void
tunnel_conn_io_watch(TunnelConn *s, uint32 wanted)
{
	s->watch = MemoryContextAlloc(GetMemoryChunkContext(s), sizeof(Watch));
	watch_add(s->watch, s->sock, wanted, on_socket_event, s);
}

void
tunnel_conn_io_unwatch(TunnelConn *s)
{
	watch_remove(s->watch);
	pfree(s->watch);
	s->watch = NULL;
}


void
tunnel_conn_io_reserve(TunnelConn *s)
{
	if (s->out == NULL)
		s->out = MemoryContextAlloc(GetMemoryChunkContext(s), OUT_BUFSIZE);
}

void
tunnel_conn_io_attach(TunnelConn *s)
{
#if LIBSSH2_VERSION_NUM >= 0x010b01
	libssh2_session_callback_set2(s->ssh, LIBSSH2_CALLBACK_RECV,
								  (libssh2_cb_generic *) recv_and_note);
	libssh2_session_callback_set2(s->ssh, LIBSSH2_CALLBACK_SEND,
								  (libssh2_cb_generic *) send_batched);
#else
	libssh2_session_callback_set(s->ssh, LIBSSH2_CALLBACK_RECV,
								 (void *) recv_and_note);
	libssh2_session_callback_set(s->ssh, LIBSSH2_CALLBACK_SEND,
								 (void *) send_batched);
#endif
}
