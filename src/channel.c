/*-------------------------------------------------------------------------
 *
 * channel.c
 *	  One client connection carried over one direct-tcpip channel.
 *
 * Each direction has one bounded buffer: when it is full we stop reading
 * from that side (the client socket leaves the wait set; the channel stops
 * being read, so its SSH window closes and the bastion stops sending).  A
 * slow reader therefore never makes the worker buffer without limit.  EOF
 * travels both ways as a half-close; the channel is closed only once both
 * directions are done, or at once if the client goes away.
 *
 * Every libssh2 call here runs inside channel_pump(), which the carrying
 * connection calls from tunnel_conn_service_all(): that is what lets the
 * session's send turn (sendturn.c) hand the one stalled send back to the
 * call that started it.  The channel reports what the session must do (a
 * transport failure, an open's answer, a target's error) in its pump's
 * ChannelOutcome rather than calling the session.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "utils/timestamp.h"

#include "channel.h"
#include "clients.h"
#include "connect.h"
#include "settings.h"
#include "watch.h"

/*
 * Upstream carries queries (small) and COPY FROM data, which libssh2 sends
 * in packets of at most 32 kB anyway; downstream carries results, where a
 * larger buffer means fewer writes to the client.
 */
#define UP_BUFSIZE		(32 * 1024)
#define DOWN_BUFSIZE	(64 * 1024)

/*
 * The receive window of each channel bounds both what a slow client can
 * make wait in libssh2's queues and, divided by the round-trip time to the
 * bastion, the throughput of one connection.
 *
 * libssh2 keeps a channel's window at the size it was opened with: inside
 * libssh2_channel_read it tops the window up once a quarter of it is used.
 * It is the only one to send window adjusts: a second sender (we used to
 * grant in eighths) can finish the other's half-sent adjust and book its
 * own amount, and the window libssh2 believes in drifts from the bastion's
 * until the transfer stops.  A quarter in flight is enough: 3 MB per round
 * trip is 150 MB/s over 20 ms.
 *
 * So the window is chosen at the open: all channels together may have at
 * most tunnel_ssh.window_budget in flight towards the worker.  A channel
 * gets its share of the budget, at most CHANNEL_WINDOW and at least
 * CHANNEL_MIN_WINDOW; a few channels get the full window, and hundreds of
 * clients that stop reading cannot make the worker hold gigabytes.
 */
#define CHANNEL_WINDOW	(4 * 1024 * 1024)
#define CHANNEL_PACKET	32768
#define CHANNEL_MIN_WINDOW (2 * CHANNEL_PACKET)

/* The windows of the open channels, and how many there are. */
static uint64 windows_committed = 0;
static int	channels_open = 0;

typedef enum ChannelPhase
{
	CHANNEL_WAITING,			/* for the session, or for our channel open */
	CHANNEL_OPEN,
	CHANNEL_CLOSING				/* client gone; channel close in progress */
} ChannelPhase;

typedef struct ChannelBuffer
{
	char	   *data;
	int			start;
	int			end;
	int			size;
} ChannelBuffer;

struct TunnelChannel
{
	dlist_node	node;
	TunnelSendTurn *turn;		/* the carrying session's */
	ChannelWake wake;
	void	   *wake_arg;
	LIBSSH2_SESSION *ssh;		/* during a pump: the session's handle */
	ChannelOutcome *out;		/* during a pump: what it reports */
	TunnelCounters *tunnel_counters;
	TunnelCounters *forward_counters;
	TunnelForwardSlot *forward_slot;
	TunnelClient *record;		/* who the client is, for SQL and the log */
	ChannelPhase phase;

	pgsocket	client;			/* PGINVALID_SOCKET once closed */
	Watch		watch;
	bool		client_readable;	/* the socket reported data or EOF */
	bool		client_eof;
	bool		client_shut;	/* we sent the client our EOF */
	bool		client_spoke_last;	/* its bytes came after the target's */

	TimestampTz created;		/* when the client was accepted */
	TimestampTz open_since;		/* our channel open was sent, or 0 */

	LIBSSH2_CHANNEL *channel;
	char	   *tunnel;			/* its name, for advice, or NULL */
	char	   *remote_host;
	int			remote_port;
	char	   *open_message;	/* direct-tcpip request, RFC 4254 7.2 */
	unsigned int open_message_len;
	bool		eof_sent;		/* EOF sent on the channel */
	bool		remote_eof;
	bool		read_idle;		/* last channel read found nothing */
	uint32		window;			/* opened with, and kept at, this window */

	ChannelBuffer up;			/* client -> channel */
	ChannelBuffer down;			/* channel -> client */
	uint64		moved_out;		/* bytes since the last status update */
	uint64		moved_in;
};

static void
on_client_event(void *arg, uint32 occurred)
{
	TunnelChannel *f = (TunnelChannel *) arg;

	if (occurred & WL_SOCKET_READABLE)
		f->client_readable = true;
	f->wake(f->wake_arg);
}

TunnelChannel *
channel_create(TunnelSendTurn *turn, ChannelWake wake, void *wake_arg,
			   pgsocket client, const char *remote_host, int remote_port,
			   TunnelStatusSlot *slot, TunnelForwardSlot *forward_slot)
{
	TunnelChannel *f = palloc0(sizeof(TunnelChannel));

	f->turn = turn;
	f->wake = wake;
	f->wake_arg = wake_arg;
	f->tunnel_counters = tunnel_status_counters(slot);
	f->forward_slot = forward_slot;
	f->forward_counters = tunnel_status_forward_counters(forward_slot);
	f->phase = CHANNEL_WAITING;
	f->created = GetCurrentTimestamp();
	f->client = client;
	f->remote_host = pstrdup(remote_host);
	f->remote_port = remote_port;
	if (tunnel_status_name(slot))
		f->tunnel = pstrdup(tunnel_status_name(slot));
	f->record = tunnel_client_begin(client, slot, forward_slot,
									f->remote_host, remote_port);
	f->open_message = tunnel_client_open_message(f->record,
												 &f->open_message_len);
	f->up.size = UP_BUFSIZE;
	f->up.data = palloc(UP_BUFSIZE);
	f->down.size = DOWN_BUFSIZE;
	f->down.data = palloc(DOWN_BUFSIZE);
	/* Read the client's first bytes while the channel opens. */
	watch_add(&f->watch, client, WL_SOCKET_READABLE, on_client_event, f);
	tunnel_status_count_connection(f->tunnel_counters, 1);
	tunnel_status_count_connection(f->forward_counters, 1);
	return f;
}

static inline int
buffered(const ChannelBuffer *b)
{
	return b->end - b->start;
}

/* Room at the tail, compacting first if that makes room. */
static inline int
room(ChannelBuffer *b)
{
	if (b->start == b->end)
		b->start = b->end = 0;
	else if (b->end == b->size && b->start > 0)
	{
		memmove(b->data, b->data + b->start, b->end - b->start);
		b->end -= b->start;
		b->start = 0;
	}
	return b->size - b->end;
}

static void
close_client(TunnelChannel *f)
{
	if (f->client == PGINVALID_SOCKET)
		return;
	watch_remove(&f->watch);
	close(f->client);
	f->client = PGINVALID_SOCKET;
}

/*
 * The client is gone or the channel failed: stop both directions.  A write
 * libssh2 has half sent keeps its bytes: it must be finished (resume_owned)
 * before anything else can be sent on the session, this channel's close
 * included.
 */
static void
abandon(TunnelChannel *f)
{
	close_client(f);
	if (tunnel_turn_owned_op(f->turn, f) != TURN_OP_WRITE)
		f->up.start = f->up.end = 0;
	f->down.start = f->down.end = 0;
	f->phase = CHANNEL_CLOSING;
}

static bool
is_transport_error(int rc)
{
	return rc == LIBSSH2_ERROR_SOCKET_SEND ||
		rc == LIBSSH2_ERROR_SOCKET_RECV ||
		rc == LIBSSH2_ERROR_SOCKET_DISCONNECT ||
		rc == LIBSSH2_ERROR_SOCKET_TIMEOUT ||
		rc == LIBSSH2_ERROR_TIMEOUT ||
		rc == LIBSSH2_ERROR_DECRYPT ||
		rc == LIBSSH2_ERROR_PROTO ||
		rc == LIBSSH2_ERROR_KEX_FAILURE;
}

/* A libssh2 call failed for good: the channel, or the whole session. */
static void
channel_failed(TunnelChannel *f, int rc)
{
	/* The first failure says why (as the session keeps the first). */
	if (is_transport_error(rc) && f->out->transport_error == NULL)
		f->out->transport_error = tunnel_ssh_error_text(f->ssh);
	tunnel_client_closed_by(f->record, TUNNEL_CLOSED_BY_BASTION);
	abandon(f);
}

/* Tell the turn how a call that may send went. */
static void
sent(TunnelChannel *f, TurnOp op, int rc)
{
	if (tunnel_turn_sent(f->turn, f, op, tunnel_ssh_send_stalled(f->ssh, rc)))
		f->out->turn_released = true;
}

/* May it make a call that sends? */
static inline bool
may_send(TunnelChannel *f)
{
	return tunnel_turn_may_send(f->turn, f);
}

static inline TurnOp
owned_op(TunnelChannel *f)
{
	return tunnel_turn_owned_op(f->turn, f);
}

static void
read_client(TunnelChannel *f)
{
	while (f->client_readable && !f->client_eof && room(&f->up) > 0)
	{
		int			want = room(&f->up);
		ssize_t		n = recv(f->client, f->up.data + f->up.end, want, 0);

		if (n > 0)
		{
			/*
			 * A short read emptied the socket: skip the recv() that would
			 * only say so.  The wait set is level-triggered, so bytes that
			 * arrive meanwhile are reported again.
			 */
			if (n < want)
				f->client_readable = false;
			f->up.end += n;
			f->client_spoke_last = true;
		}
		else if (n == 0)
		{
			f->client_eof = true;
			tunnel_client_closed_by(f->record, TUNNEL_CLOSED_BY_CLIENT);
		}
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			f->client_readable = false;
		else if (errno != EINTR)
		{
			tunnel_client_closed_by(f->record, TUNNEL_CLOSED_BY_CLIENT);
			abandon(f);
			return;
		}
	}
}

static void
write_client(TunnelChannel *f)
{
	while (buffered(&f->down) > 0)
	{
		ssize_t		n = send(f->client, f->down.data + f->down.start,
							 buffered(&f->down), MSG_NOSIGNAL);

		if (n > 0)
		{
			f->down.start += n;
			f->out->progress = true;
		}
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		else if (errno != EINTR)
		{
			tunnel_client_closed_by(f->record, TUNNEL_CLOSED_BY_CLIENT);
			abandon(f);
			return;
		}
	}
	if (f->remote_eof && !f->client_shut)
	{
		(void) shutdown(f->client, SHUT_WR);
		f->client_shut = true;
	}
}

static short
client_poll(TunnelChannel *f, short events)
{
	struct pollfd pfd = {.fd = f->client,.events = events};

	return poll(&pfd, 1, 0) == 1 ? pfd.revents : 0;
}

/*
 * Has a client at EOF closed its socket for good, rather than only its
 * sending side (shutdown(SHUT_WR), after which it still reads)?  A Unix
 * socket says so (POLLHUP: no peer any more), as does a TCP socket the
 * client reset; a TCP FIN looks the same either way.
 */
static bool
client_gone(TunnelChannel *f)
{
	return (client_poll(f, 0) & (POLLHUP | POLLERR)) != 0;
}

/*
 * Has the client closed its side, though we have not read that yet?  The
 * target's EOF often comes first: it answers the client's goodbye
 * (PostgreSQL's Terminate) by closing.  A client slow to close after its
 * goodbye is told by the order: a target that closes without a word after
 * the client's last bytes was asked to (a backend that ends on its own says
 * why first).
 */
static bool
client_closed(TunnelChannel *f)
{
	return f->client_eof || f->client == PGINVALID_SOCKET ||
		(client_poll(f, POLLRDHUP) & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

/*
 * Has the bastion closed the channel (not only sent its EOF)?  Then bytes
 * of the client still buffered can never be delivered.  libssh2 says so
 * only through libssh2_channel_wait_closed, which reads the session like
 * the session's drain (a read may start a key exchange, so only when we
 * may send; libssh2's own calls finish a half-sent key exchange packet,
 * whoever makes them).
 */
static bool
remote_closed(TunnelChannel *f)
{
	int			rc;

	if (!may_send(f) || owned_op(f) != TURN_OP_NONE)
		return false;
	rc = libssh2_channel_wait_closed(f->channel);
	if (rc == 0)
		return true;
	if (rc != LIBSSH2_ERROR_EAGAIN)
		channel_failed(f, rc);
	return false;
}

/* The window a channel opened now gets (see CHANNEL_WINDOW). */
static uint32
window_for_new_channel(void)
{
	uint64		budget = (uint64) tunnel_window_budget * 1024;
	uint64		left = budget > windows_committed ? budget - windows_committed : 0;
	uint64		window = Min(left, budget / (channels_open + 1));

	window = Min(window, CHANNEL_WINDOW);
	return (uint32) Max(window, CHANNEL_MIN_WINDOW);
}

/* The channel is gone: its window leaves the budget. */
static void
channel_gone(TunnelChannel *f)
{
	f->channel = NULL;
	windows_committed -= f->window;
	channels_open--;
}

static void
step_open(TunnelChannel *f, bool may_open)
{
	LIBSSH2_SESSION *ssh = f->ssh;
	LIBSSH2_CHANNEL *channel;
	int			rc;

	if (!may_open || !tunnel_turn_claim_open(f->turn, f) || !may_send(f))
		return;
	if (f->open_since == 0)
	{
		f->open_since = GetCurrentTimestamp();
		f->window = window_for_new_channel();
	}

	channel = libssh2_channel_open_ex(ssh, "direct-tcpip",
									  sizeof("direct-tcpip") - 1,
									  f->window, CHANNEL_PACKET,
									  f->open_message, f->open_message_len);
	rc = channel ? 0 : libssh2_session_last_errno(ssh);
	sent(f, TURN_OP_OPEN, rc);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return;
	if (tunnel_turn_release_open(f->turn, f))
		f->out->open_released = true;
	if (channel)
	{
		f->out->open_took_us = GetCurrentTimestamp() - f->open_since;
		f->out->open_took_ms = (long) (f->out->open_took_us / 1000);
	}
	f->open_since = 0;
	if (rc != LIBSSH2_ERROR_TIMEOUT && !is_transport_error(rc))
		f->out->open_answered = true;
	if (channel)
	{
		f->channel = channel;
		f->phase = CHANNEL_OPEN;
		windows_committed += f->window;
		channels_open++;
		f->out->progress = true;
		return;
	}

	/*
	 * libssh2 gives up waiting for the answer after 60 s; the bastion is
	 * still trying to reach the target, the session is fine.
	 */
	if (rc == LIBSSH2_ERROR_TIMEOUT)
	{
		snprintf(f->out->forward_error, sizeof(f->out->forward_error),
				 "bastion could not reach %s:%d within 60 s",
				 f->remote_host, f->remote_port);
		tunnel_status_forward_error(f->forward_slot, f->out->forward_error);
		tunnel_client_not_opened(f->record, TUNNEL_OPEN_TIMEOUT,
								 f->out->forward_error);
		abandon(f);
		return;
	}
	if (!is_transport_error(rc))
	{
		char	   *msg = NULL;

		libssh2_session_last_error(ssh, &msg, NULL, 0);
		tunnel_open_error_text(f->out->forward_error,
							   sizeof(f->out->forward_error), f->tunnel,
							   f->remote_host, f->remote_port, msg);
		tunnel_status_forward_error(f->forward_slot, f->out->forward_error);
		tunnel_client_not_opened(f->record, tunnel_client_open_failure_of(msg),
								 f->out->forward_error);
	}
	else
		tunnel_client_not_opened(f->record, TUNNEL_OPEN_NO_SESSION,
								 tunnel_ssh_error_text(ssh));
	channel_failed(f, rc);
}

static void
step_up(TunnelChannel *f)
{
	while (buffered(&f->up) > 0 && may_send(f))
	{
		ssize_t		rc = libssh2_channel_write(f->channel,
											   f->up.data + f->up.start,
											   buffered(&f->up));

		sent(f, TURN_OP_WRITE, (int) Min(rc, 0));
		if (rc > 0)
		{
			f->up.start += rc;
			f->moved_out += rc;
			f->out->progress = true;
			/* Only the half-sent write was owed: the rest is dropped. */
			if (f->phase == CHANNEL_CLOSING)
			{
				f->up.start = f->up.end = 0;
				return;
			}
		}
		else if (rc == 0 || rc == LIBSSH2_ERROR_EAGAIN ||
				 rc == LIBSSH2_ERROR_BAD_USE)
			return;				/* window closed, or socket full */
		else
		{
			channel_failed(f, (int) rc);
			return;
		}
	}
}

static void
step_eof(TunnelChannel *f)
{
	int			rc;

	/* An EOF libssh2 has half sent is finished whatever happened since. */
	if (owned_op(f) != TURN_OP_EOF &&
		(!f->client_eof || f->eof_sent || buffered(&f->up) > 0 ||
		 f->phase != CHANNEL_OPEN))
		return;
	if (!may_send(f))
		return;
	rc = libssh2_channel_send_eof(f->channel);
	sent(f, TURN_OP_EOF, rc);
	if (rc == 0)
		f->eof_sent = true;
	else if (rc != LIBSSH2_ERROR_EAGAIN && rc != LIBSSH2_ERROR_BAD_USE)
		channel_failed(f, rc);
}

/*
 * Will libssh2 top the window up in the next read (it does when less than
 * three quarters of it is left)?  Then that read must be made even with
 * nothing to read, or the bastion may wait for window for ever.
 */
static bool
window_adjust_due(TunnelChannel *f)
{
	unsigned long initial;
	unsigned long window = libssh2_channel_window_read_ex(f->channel, NULL,
														  &initial);

	return window < initial / 4 * 3 + (unsigned long) room(&f->down);
}

static void
step_down(TunnelChannel *f)
{
	TurnOp		owned = owned_op(f);

	/*
	 * A read may send (libssh2 tops the window up inside it), and a send
	 * that finds another's packet half sent fails as a transport error in
	 * libssh2 1.10: read only when we may send, and not while our own write
	 * or EOF is half sent.
	 */
	if (owned == TURN_OP_EOF || owned == TURN_OP_WRITE)
		return;
	while (!f->remote_eof && room(&f->down) > 0 && may_send(f))
	{
		ssize_t		rc;

		/*
		 * Read only when libssh2 has queued something for this channel (or
		 * may have: after a stalled or failed read), or owes the bastion
		 * window: a read that finds nothing still costs a recv() on the
		 * session socket.  The session pulls the socket into libssh2's
		 * queues when it becomes readable.
		 */
		if (f->read_idle &&
			!libssh2_poll_channel_read(f->channel, 0) &&
			!libssh2_channel_eof(f->channel) &&
			!window_adjust_due(f))
			break;

		rc = libssh2_channel_read(f->channel, f->down.data + f->down.end,
								  room(&f->down));
		sent(f, TURN_OP_READ, (int) Min(rc, 0));
		f->read_idle = true;
		if (rc > 0)
		{
			f->down.end += rc;
			f->moved_in += rc;
			f->client_spoke_last = false;
			f->out->progress = true;
		}
		else if (rc == 0)
		{
			if (libssh2_channel_eof(f->channel))
			{
				f->remote_eof = true;
				tunnel_client_closed_by(f->record,
										client_closed(f) || f->client_spoke_last ?
										TUNNEL_CLOSED_BY_CLIENT :
										TUNNEL_CLOSED_BY_TARGET);
				f->out->progress = true;
			}
			break;
		}
		else if (rc == LIBSSH2_ERROR_EAGAIN)
		{
			f->read_idle = owned_op(f) == TURN_OP_NONE;
			break;
		}
		else if (rc == LIBSSH2_ERROR_BAD_USE)
		{
			f->read_idle = false;
			break;				/* window adjust waits for another's send */
		}
		else
		{
			channel_failed(f, (int) rc);
			return;
		}
	}
}

/* Returns true once the channel is gone. */
static bool
step_close(TunnelChannel *f)
{
	TurnOp		owned = owned_op(f);
	int			rc;

	if (f->channel == NULL)
		return true;
	if (owned != TURN_OP_NONE && owned != TURN_OP_CLOSE)
		return false;			/* resume_owned finishes that first */
	if (!may_send(f))
		return false;
	rc = libssh2_channel_free(f->channel);
	sent(f, TURN_OP_CLOSE, rc);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return false;
	channel_gone(f);
	return true;
}

static void
set_interest(TunnelChannel *f)
{
	uint32		wanted = 0;

	if (f->client == PGINVALID_SOCKET)
		return;
	if (!f->client_eof && room(&f->up) > 0)
		wanted |= WL_SOCKET_READABLE;
	if (buffered(&f->down) > 0)
		wanted |= WL_SOCKET_WRITEABLE;
	watch_set_events(&f->watch, wanted);
}

/* Resume the call that holds the session's stalled send, if ours. */
static void
resume_owned(TunnelChannel *f)
{
	switch (owned_op(f))
	{
		case TURN_OP_NONE:
			break;
		case TURN_OP_OPEN:
			step_open(f, true);
			break;
		case TURN_OP_WRITE:
			step_up(f);
			break;
		case TURN_OP_EOF:
			step_eof(f);
			break;
		case TURN_OP_READ:
			step_down(f);
			break;
		case TURN_OP_ADJUST:
			break;				/* libssh2 adjusts inside the read */
		case TURN_OP_CLOSE:
			step_close(f);
			break;
		case TURN_OP_REQUEST:
			break;				/* the session's keepalive, never ours */
	}
}

bool
channel_pump(TunnelChannel *f, LIBSSH2_SESSION *ssh, bool may_open,
			 ChannelOutcome *out)
{
	bool		alive;

	out->progress = false;
	out->turn_released = false;
	out->open_released = false;
	out->open_answered = false;
	out->open_took_ms = -1;
	out->open_took_us = -1;
	out->transport_error = NULL;
	out->forward_error[0] = '\0';
	f->ssh = ssh;
	f->out = out;

	if (ssh != NULL)
		resume_owned(f);

	if (f->phase != CHANNEL_CLOSING)
		read_client(f);

	if (f->phase == CHANNEL_WAITING)
	{
		/*
		 * A client at EOF with bytes for the target (a request sent, then
		 * shutdown(SHUT_WR), the reply awaited) keeps its place: its bytes,
		 * then its EOF, go out once the channel is open.  One that sent
		 * nothing, or closed its socket for good, gave up and leaves the
		 * queue now; if its open is under way it must wait for it (libssh2
		 * cannot abandon an open) and is then closed like any other.
		 */
		if (f->client_eof && f->client != PGINVALID_SOCKET &&
			(buffered(&f->up) == 0 || client_gone(f)))
			close_client(f);
		if (f->client == PGINVALID_SOCKET &&
			!tunnel_turn_holds_open(f->turn, f))
			abandon(f);
		else if (ssh != NULL)
			step_open(f, may_open);
	}

	/* The open of a client that left has completed: close it again. */
	if (f->phase == CHANNEL_OPEN && f->client == PGINVALID_SOCKET)
		abandon(f);

	if (f->phase == CHANNEL_OPEN)
	{
		step_up(f);
		step_eof(f);
		step_down(f);
		if (f->phase == CHANNEL_OPEN)
			write_client(f);
		/*
		 * Both directions done: nothing more will cross this channel.  The
		 * client's direction is done once its last bytes and then its EOF
		 * went out (the target may read on after its own EOF), or when the
		 * bastion closed the channel: then they never can.
		 */
		if (f->phase == CHANNEL_OPEN && f->client_eof && f->remote_eof &&
			buffered(&f->down) == 0 && (f->eof_sent || remote_closed(f)))
			abandon(f);
	}

	if (f->moved_in || f->moved_out)
	{
		tunnel_status_count_bytes(f->tunnel_counters, f->moved_in, f->moved_out);
		tunnel_status_count_bytes(f->forward_counters, f->moved_in, f->moved_out);
		tunnel_client_count_bytes(f->record, f->moved_in, f->moved_out);
		f->moved_in = f->moved_out = 0;
	}
	tunnel_client_set_state(f->record,
							f->phase == CHANNEL_WAITING ? TUNNEL_CLIENT_WAITING :
							f->phase == CHANNEL_CLOSING ? TUNNEL_CLIENT_CLOSING :
							f->client_eof || f->remote_eof ?
							TUNNEL_CLIENT_HALF_CLOSED : TUNNEL_CLIENT_OPEN);

	if (f->phase == CHANNEL_CLOSING)
		alive = !step_close(f);
	else
	{
		set_interest(f);
		alive = true;
	}
	f->ssh = NULL;
	f->out = NULL;
	return alive;
}

bool
channel_wants_open(TunnelChannel *f)
{
	return f->phase == CHANNEL_WAITING;
}

void
channel_destroy(TunnelChannel *f)
{
	/* A channel still here belongs to a session being freed with it. */
	if (f->channel)
		channel_gone(f);
	close_client(f);
	tunnel_client_end(f->record);
	tunnel_status_count_connection(f->tunnel_counters, -1);
	tunnel_status_forward_connection_ended(f->forward_slot);
	pfree(f->up.data);
	pfree(f->down.data);
	pfree(f->remote_host);
	if (f->tunnel)
		pfree(f->tunnel);
	pfree(f->open_message);
	pfree(f);
}

void
channel_move(TunnelChannel *f, TunnelSendTurn *turn, void *wake_arg)
{
	f->turn = turn;
	f->wake_arg = wake_arg;
	f->open_since = 0;
}

TimestampTz
channel_waiting_since(TunnelChannel *f)
{
	if (f->phase != CHANNEL_WAITING || f->client == PGINVALID_SOCKET)
		return 0;
	return f->created;
}

TimestampTz
channel_open_since(TunnelChannel *f)
{
	return f->open_since;
}

TunnelClient *
channel_client(TunnelChannel *f)
{
	return f->record;
}

const char *
channel_remote_host(TunnelChannel *f)
{
	return f->remote_host;
}

int
channel_remote_port(TunnelChannel *f)
{
	return f->remote_port;
}

bool
channel_same_target(TunnelChannel *a, TunnelChannel *b)
{
	return a->remote_port == b->remote_port &&
		strcmp(a->remote_host, b->remote_host) == 0;
}

void
channel_give_up(TunnelChannel *f, bool session_ready, char *error,
				size_t errlen)
{
	error[0] = '\0';
	if (session_ready)
	{
		snprintf(error, errlen, "bastion could not reach %s:%d within %d s",
				 f->remote_host, f->remote_port, tunnel_connect_timeout);
		tunnel_status_forward_error(f->forward_slot, error);
	}
	tunnel_client_not_opened(f->record, session_ready ? TUNNEL_OPEN_TIMEOUT :
							 TUNNEL_OPEN_NO_SESSION, error);
	tunnel_client_closed_by(f->record, TUNNEL_CLOSED_BY_TUNNEL);
	close_client(f);
	f->client_eof = true;
}

bool
channel_waits_for_session(TunnelChannel *f)
{
	/* One at EOF but still here has bytes for the target (channel_pump). */
	return f->phase == CHANNEL_WAITING && f->client != PGINVALID_SOCKET;
}

LIBSSH2_CHANNEL *
channel_ssh_channel(TunnelChannel *f)
{
	if (f->phase == CHANNEL_OPEN && !f->remote_eof)
		return f->channel;
	return NULL;
}

int
channel_count_open(void)
{
	return channels_open;
}

dlist_node *
channel_node(TunnelChannel *f)
{
	return &f->node;
}

TunnelChannel *
channel_from_node(dlist_node *node)
{
	return dlist_container(TunnelChannel, node, node);
}
