/*-------------------------------------------------------------------------
 *
 * conn.c
 *	  One SSH connection to a bastion: the way in, keepalive, and the
 *	  service pass that drives its channels.
 *
 * Everything is non-blocking.  The way in is the connect machine's
 * (connect.h), stepped here from the service pass and bounded by one
 * deadline per attempt (tunnel_ssh.connect_timeout), so a bastion that hangs
 * costs only its own connection a timer, never anyone else a delay.  What
 * the connection serves, and what follows its end, is its owner's (conn.h).
 *
 * These facts of libssh2 (1.10 and 1.11) shape this file:
 *
 * - A packet that could not be sent whole stays inside the session, and only
 *   the call that started it may finish it: the connection's TunnelSendTurn
 *   (sendturn.c) says who may send.  Some of those packets live on libssh2's
 *   stack (channel EOF), so the resumed call must also be made at the same
 *   stack depth: all libssh2 calls are made from tunnel_conn_service_all(),
 *   called from one place in the worker loop, never from socket callbacks.
 *
 * - Any read or write on one channel may pull packets for other channels off
 *   the socket into libssh2's queue, after which the socket is no longer
 *   readable.  So each pass gives every channel of the connection a turn.
 *
 * - Replies to libssh2's own keepalive requests are queued and never freed
 *   (one packet per keepalive, for the life of the session), and a channel
 *   open is no keepalive either: its answer may take minutes when the bastion
 *   cannot reach the target.  So right after authentication each connection
 *   opens one "session" channel and keeps it; when the bastion has been
 *   silent for keepalive_interval, an "env" request on it (answered at once
 *   by sshd, success or failure, and consumed by libssh2) is the keepalive.  It
 *   needs no open slot.  Any bytes from the bastion count as life.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "clients.h"
#include "conn.h"
#include "connect.h"
#include "settings.h"
#include "tunnel_limits.h"
#include "watch.h"

static dlist_head dirty_conns = DLIST_STATIC_INIT(dirty_conns);

static void update_interest(TunnelConn *s);
static void end(TunnelConn *s, TunnelState state, const char *message,
				bool refused);

/* ---------- small helpers ---------- */

void
tunnel_conn_mark_dirty(TunnelConn *s)
{
	if (!s->dirty)
	{
		s->dirty = true;
		dlist_push_tail(&dirty_conns, &s->dirty_node);
	}
}

/* A channel's ChannelWake: its client has bytes for it. */
static void
wake_conn(void *arg)
{
	tunnel_conn_mark_dirty((TunnelConn *) arg);
}

static void
forget_login_targets(TunnelConn *s)
{
	ListCell   *lc;

	foreach(lc, s->login_targets)
		pfree(((TunnelLoginTarget *) lfirst(lc))->host);
	list_free_deep(s->login_targets);
	s->login_targets = NIL;
}

/* ---------- teardown ---------- */

/*
 * Close the connection and every client on it (but those waiting for a
 * channel, when spared).  The socket is shut down first, so that libssh2's
 * own clean-up fails fast instead of waiting for a bastion that may never
 * answer.
 */
void
tunnel_conn_close(TunnelConn *s, bool polite, bool spare_waiting)
{
	dlist_mutable_iter iter;
	dlist_head	spared;

	dlist_init(&spared);
	dlist_foreach_modify(iter, &s->channels)
	{
		TunnelChannel *f = channel_from_node(iter.cur);

		dlist_delete(iter.cur);
		if (spare_waiting && channel_waits_for_session(f))
			dlist_push_tail(&spared, iter.cur);
		else
		{
			/* An impolite close is the session's failure, not ours. */
			if (!polite)
				tunnel_client_closed_by(channel_client(f),
										TUNNEL_CLOSED_BY_BASTION);
			channel_destroy(f);
		}
	}
	s->keepalive = NULL;
	s->keepalive_phase = KEEPALIVE_NONE;
	s->probe_since = 0;
	s->probes = 0;
	forget_login_targets(s);
	tunnel_turn_init(&s->turn);

	/* A connection not logged in yet is still the connect machine's. */
	tunnel_connect_close(&s->connect);

	/* Blocking, libssh2 waits for the socket itself: let it read. */
	s->sock_empty = false;
	s->out_hold = false;
	if (s->ssh)
	{
		if (polite && s->phase == CONN_READY)
			(void) libssh2_session_disconnect(s->ssh, "tunnel closed");
		if (s->sock != PGINVALID_SOCKET)
			(void) shutdown(s->sock, SHUT_RDWR);
		libssh2_session_set_blocking(s->ssh, 1);
		(void) libssh2_session_free(s->ssh);
		s->ssh = NULL;
	}
	if (s->sock != PGINVALID_SOCKET)
	{
		tunnel_conn_io_unwatch(s);
		close(s->sock);
		s->sock = PGINVALID_SOCKET;
	}
	if (s->out)
		pfree(s->out);
	s->out = NULL;
	s->out_len = 0;
	s->out_errno = 0;
	s->readable = s->writable = false;
	s->leftover_passes = 0;
	s->fail_pending = false;
	s->phase = CONN_IDLE;

	/*
	 * An open the lost connection had in flight is asked again on the next
	 * one: its time starts then, or the target would look slow to the new
	 * connection (lanes.c) and the wait be counted in the usual open time.
	 */
	dlist_foreach_modify(iter, &spared)
	{
		dlist_delete(iter.cur);
		channel_move(channel_from_node(iter.cur), &s->turn, s);
		dlist_push_tail(&s->channels, iter.cur);
	}
}

void
tunnel_conn_fail(TunnelConn *s, const char *why)
{
	if (s->fail_pending)
		return;
	s->fail_pending = true;
	s->fail_state = TUNNEL_STATE_BACKOFF;
	snprintf(s->fail_message, sizeof(s->fail_message),
			 "connection to bastion lost: %s", why);
}

bool
tunnel_conn_failing(TunnelConn *s)
{
	return s->fail_pending;
}

int
tunnel_conn_last_error(TunnelConn *s, char **msg)
{
	*msg = NULL;
	if (s->ssh == NULL)
		return 0;
	return libssh2_session_last_error(s->ssh, msg, NULL, 0);
}

TunnelChannel *
tunnel_conn_opening_channel(TunnelConn *s)
{
	const void *opener = tunnel_turn_opener(&s->turn);

	if (opener == NULL || opener == s)
		return NULL;
	return (TunnelChannel *) unconstify(void *, opener);
}

/*
 * The connection ended: its owner hears how and closes it, sparing the
 * clients it wants to keep; whatever it left open is closed after.
 */
static void
end(TunnelConn *s, TunnelState state, const char *message, bool refused)
{
	TunnelConnEnd e;

	memset(&e, 0, sizeof(e));
	e.state = state;
	e.refused = refused;
	e.was_ready = s->phase == CONN_READY;
	e.next_family = s->connect.step == CONNECT_FAILED && s->connect.next_family;
	strlcpy(e.banner, s->connect.banner, sizeof(e.banner));
	strlcpy(e.message, message, sizeof(e.message));
	s->fail_pending = false;
	s->ops->ended(s->owner, s, &e);
	if (s->phase != CONN_IDLE || s->sock != PGINVALID_SOCKET)
		tunnel_conn_close(s, false, false);
}

void
tunnel_conn_end_now(TunnelConn *s, TunnelState state, const char *message)
{
	end(s, state, message, false);
}

/*
 * Hand s's connection over to another TunnelConn (a lane that retires it,
 * lanes.c): the socket with its watch, libssh2's session, the keepalive,
 * the send turn, and every channel that has something on this connection
 * (open, closing, or an open in flight).  The clients still waiting for an
 * open stay with s, which is left without a connection.
 */
void
tunnel_conn_move_connection(TunnelConn *s, TunnelConn *to)
{
	dlist_mutable_iter iter;

	Assert(to->ssh == NULL && to->sock == PGINVALID_SOCKET);
	to->sock = s->sock;
	to->tcp = s->tcp;
	to->watch = s->watch;
	if (to->watch)
		to->watch->arg = to;
	to->readable = s->readable;
	to->writable = s->writable;
	to->ssh = s->ssh;
	if (to->ssh)
		*libssh2_session_abstract(to->ssh) = to;
	to->last_recv = s->last_recv;
	to->recv_calls = s->recv_calls;
	to->sock_empty = s->sock_empty;
	to->out = s->out;
	to->out_len = s->out_len;
	to->out_errno = s->out_errno;
	to->keepalive_started = s->keepalive_started;
	to->probe_since = s->probe_since;
	to->probes = s->probes;
	to->keepalive_phase = s->keepalive_phase;
	to->keepalive = s->keepalive;
	to->authed_next = s->authed_next;
	to->login_targets = s->login_targets;
	to->turn = s->turn;
	/* The keepalive's calls name the connection as their party. */
	if (to->turn.owner == s)
		to->turn.owner = to;
	if (to->turn.opener == s)
		to->turn.opener = to;
	dlist_foreach_modify(iter, &s->channels)
	{
		TunnelChannel *f = channel_from_node(iter.cur);

		if (channel_waits_for_session(f) &&
			!tunnel_turn_holds_open(&s->turn, f) &&
			tunnel_turn_owner(&s->turn) != f)
			continue;
		dlist_delete(iter.cur);
		channel_move(f, &to->turn, to);
		tunnel_client_moved(channel_client(f), to->lane);
		dlist_push_tail(&to->channels, iter.cur);
	}
	to->phase = CONN_READY;

	s->sock = PGINVALID_SOCKET;
	s->watch = NULL;
	s->ssh = NULL;
	s->readable = s->writable = false;
	s->sock_empty = false;
	s->out = NULL;
	s->out_len = 0;
	s->out_errno = 0;
	s->keepalive = NULL;
	s->keepalive_phase = KEEPALIVE_NONE;
	s->probe_since = 0;
	s->probes = 0;
	s->login_targets = NIL;
	s->leftover_passes = 0;
	s->phase = CONN_IDLE;
	tunnel_turn_init(&s->turn);
	tunnel_conn_mark_dirty(to);
}

void
tunnel_conn_move_client(TunnelConn *s, TunnelChannel *f, TunnelConn *to)
{
	tunnel_turn_forget(&s->turn, f);
	dlist_delete(channel_node(f));
	channel_move(f, &to->turn, to);
	dlist_push_tail(&to->channels, channel_node(f));
	tunnel_conn_mark_dirty(to);
}

void
tunnel_conn_move_waiting(TunnelConn *s, TunnelConn *to)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &s->channels)
	{
		TunnelChannel *f = channel_from_node(iter.cur);

		if (channel_waits_for_session(f))
			tunnel_conn_move_client(s, f, to);
	}
	tunnel_conn_mark_dirty(to);
}

/* ---------- connecting ---------- */

/*
 * The connect machine opens and closes the socket; the connection watches
 * it meanwhile, and owns it once logged in.
 */
static void
watch_connect_socket(void *owner, pgsocket sock, bool opened)
{
	TunnelConn *s = (TunnelConn *) owner;

	if (opened)
	{
		s->sock = sock;
		s->tcp = s->connect.tcp;
		tunnel_conn_io_watch(s, WL_SOCKET_WRITEABLE);
	}
	else
	{
		tunnel_conn_io_unwatch(s);
		s->sock = PGINVALID_SOCKET;
	}
}

/* What the connect machine is to reach, and with which keys, in order. */
static void
prepare_connect(TunnelConn *s, const TunnelConnPlan *plan)
{
	TunnelConnect *m = &s->connect;
	const TunnelDef *def = s->def;
	bool		next = def->next_private_key != NULL &&
		plan->keys != CONN_KEYS_CURRENT;

	m->tunnel = def->name;
	m->host = plan->host;
	m->port = plan->port;
	m->user = def->ssh_user;
	m->via = def->via;
	/* With via, the jump tunnel's connection (and its proxy) carries ours. */
	m->proxy = def->via ? NULL : def->proxy;
	m->key_type = def->key_type;
	m->host_keys = plan->host_keys;
	m->host_key_algorithms = plan->host_key_algorithms;
	m->host_key_try = plan->host_key_try;
	m->trust_first_use = plan->trust_first_use;
	m->owner = s;
	m->socket_hook = watch_connect_socket;
	m->nkeys = 0;
	s->next_key_index = -1;
	if (next)
	{
		s->next_key_index = m->nkeys;
		m->keys[m->nkeys].private_key = def->next_private_key;
		m->keys[m->nkeys].certificate = def->next_certificate;
		m->keys[m->nkeys++].fingerprint = def->next_key_fingerprint;
	}
	if (!next || plan->keys != CONN_KEYS_NEXT_ONLY)
	{
		m->keys[m->nkeys].private_key = def->private_key;
		m->keys[m->nkeys].certificate = def->certificate;
		m->keys[m->nkeys++].fingerprint = def->key_fingerprint;
	}
	s->handshake_noted = false;
}

static void
begin_attempt(TunnelConn *s, const TunnelConnPlan *plan, TimestampTz now)
{
	Assert(s->phase == CONN_IDLE);
	s->deadline = TimestampTzPlusMilliseconds(now, tunnel_connect_timeout * 1000L);
	/*
	 * The output batch is taken before the handshake's buffers, as when the
	 * handshake went through it: taken after, it lands on the pages they
	 * freed, and 200 idle tunnels cost the worker 12 MB more (scale.sh).
	 */
	tunnel_conn_io_reserve(s);
	prepare_connect(s, plan);
	s->phase = CONN_CONNECTING;
	/* The machine takes its steps in the service pass, with libssh2's. */
	tunnel_conn_mark_dirty(s);
}

void
tunnel_conn_start(TunnelConn *s, const TunnelConnPlan *plan, TimestampTz now)
{
	begin_attempt(s, plan, now);
	tunnel_connect_begin(&s->connect);
}

void
tunnel_conn_start_on(TunnelConn *s, const TunnelConnPlan *plan,
					 pgsocket sock, TimestampTz now)
{
	begin_attempt(s, plan, now);
	tunnel_connect_begin_on(&s->connect, sock);
}

/* The connect machine logged in: the connection takes its session. */
static void
connected(TunnelConn *s)
{
	TunnelConnect *m = &s->connect;

	s->ssh = m->ssh;
	s->authed_next = m->accepted == s->next_key_index;
	tunnel_connect_detach(m);
	tunnel_conn_io_attach(s);
	s->phase = CONN_READY;
	s->last_recv = GetCurrentTimestamp();
	s->keepalive_started = s->last_recv;
	/* The keepalive channel first: it may later wait behind no open. */
	s->keepalive_phase = KEEPALIVE_OPENING;
	s->ops->logged_in(s->owner, s);
}

/* The connect machine failed: the connection ends with its cause and words. */
static void
connect_failed(TunnelConn *s)
{
	TunnelConnect *m = &s->connect;
	TunnelState state;

	switch (m->failure)
	{
		case CONNECT_FAILURE_HOST_KEY:
			state = TUNNEL_STATE_HOST_KEY_MISMATCH;
			break;
		case CONNECT_FAILURE_KEY_REFUSED:
			state = TUNNEL_STATE_AUTH_FAILED;
			break;
		case CONNECT_FAILURE_KEY_UNREADABLE:
		case CONNECT_FAILURE_INVALID:
			state = TUNNEL_STATE_INVALID;
			break;
		default:
			state = TUNNEL_STATE_UNREACHABLE;
			break;
	}
	end(s, state, m->message, m->failure == CONNECT_FAILURE_REFUSED);
}

/* A step of the connect machine, when its socket is ready (or it resolves). */
static void
step_connect(TunnelConn *s)
{
	TunnelConnect *m = &s->connect;

	tunnel_connect_step(m);
	if (m->handshaken && !s->handshake_noted)
	{
		s->handshake_noted = true;
		s->ops->handshake(s->owner, s);
	}
	if (m->step == CONNECT_DONE)
		connected(s);
	else if (m->step == CONNECT_FAILED)
		connect_failed(s);
}

/* ---------- the connected session ---------- */

/* The open slot is free again: a lane may take a waiting client. */
static void
open_released(TunnelConn *s)
{
	s->ops->open_released(s->owner, s);
}

/*
 * A channel's turn: pump it, then do what it reports.  A channel's open
 * waits while an open to its target has long been pending (lanes.c).
 */
static void
run_channel(TunnelConn *s, TunnelChannel *f, bool *progress)
{
	ChannelOutcome out;
	bool		may_open;
	bool		alive;

	may_open = channel_wants_open(f) &&
		(tunnel_turn_holds_open(&s->turn, f) ||
		 s->ops->open_allowed(s->owner, s, f));
	alive = channel_pump(f, s->phase == CONN_READY ? s->ssh : NULL,
						 may_open, &out);
	if (out.progress)
		*progress = true;
	if (out.turn_released)
		tunnel_conn_mark_dirty(s);
	if (out.open_released)
		open_released(s);
	if (out.open_took_ms >= 0)
	{
		s->ops->open_took(s->owner, s, out.open_took_ms);
		tunnel_client_opened(channel_client(f), s->connect.host,
							 s->connect.port, s->lane, out.open_took_us);
	}
	if (out.open_answered)
		s->ops->open_answered(s->owner, s, f);
	if (out.forward_error[0] != '\0')
		s->ops->forward_error(s->owner, s, out.forward_error);
	if (out.transport_error)
		tunnel_conn_fail(s, out.transport_error);
	if (alive)
		return;
	tunnel_turn_forget(&s->turn, f);
	dlist_delete(channel_node(f));
	channel_destroy(f);
}

static void
run_pass(TunnelConn *s)
{
	dlist_mutable_iter iter;
	bool		progress = false;
	uint64		recv_calls;
	bool		leftover;
	const void *owner;

	/*
	 * First everything the socket and libssh2's buffer hold goes into the
	 * channels' queues: a call that waits for one packet (an open, the
	 * keepalive's request) returns as soon as it has it and leaves what came
	 * with it in libssh2's buffer, where no channel's poll sees it and no
	 * socket event announces it.
	 *
	 * Not while a send is stalled, even with bytes to read: a read may have
	 * to send, and not only a window adjust.  A KEXINIT from the bastion
	 * (sshd's RekeyLimit) makes libssh2 send its own at once, and the
	 * half-sent packet blocks it: libssh2 1.10's send returns BAD_USE, the
	 * re-exchange is dropped and sshd waits for our KEXINIT while it sends
	 * nothing else (every channel of the session stops); 1.11.1's returns
	 * EAGAIN with EXCHANGING_KEYS set, and from then on every send, the
	 * owner's too, goes into the key exchange first, which cannot send
	 * before the owner's packet is finished: nothing is sent again.  So the
	 * socket is not read until the owner has finished its packet
	 * (update_interest stops waiting for reads meanwhile; sshd reads what
	 * we send whatever it has to send itself).
	 */
	s->writable = false;
	if (tunnel_turn_owner(&s->turn) == NULL)
	{
		tunnel_keepalive_drain(s, s->readable);
		s->readable = false;
	}

	/* The holder of a stalled send goes first, so the others can follow. */
	owner = tunnel_turn_owner(&s->turn);
	if (owner == s ||
		tunnel_keepalive_busy(s))
		tunnel_keepalive_step(s);
	else if (owner != NULL)
		run_channel(s, (TunnelChannel *) unconstify(void *, owner), &progress);

	/*
	 * Any libssh2 call of a channel may read the socket (an open in flight,
	 * a write looking for window adjusts, a read) and queue packets for a
	 * channel that had its turn earlier in this pass.  The socket is then no
	 * longer readable, so nothing would wake us for them but a timer: if
	 * bytes arrived during the turns, every channel gets another.
	 */
	recv_calls = s->recv_calls;
	dlist_foreach_modify(iter, &s->channels)
	{
		if (s->fail_pending)
			break;
		run_channel(s, channel_from_node(iter.cur), &progress);
	}

	if (s->fail_pending)
	{
		end(s, s->fail_state, s->fail_message, false);
		return;
	}
	/*
	 * And if the last read of the turns stopped at a packet it waited for
	 * rather than at an empty socket, more may be buffered behind it: one
	 * more pass drains it.  Bounded, in case no call of the next pass reads.
	 */
	leftover = tunnel_turn_owner(&s->turn) == NULL &&
		!(libssh2_session_block_directions(s->ssh) & LIBSSH2_SESSION_BLOCK_INBOUND);
	s->leftover_passes = leftover ? s->leftover_passes + 1 : 0;
	if (progress || s->recv_calls != recv_calls ||
		(leftover && s->leftover_passes <= 2))
		tunnel_conn_mark_dirty(s);
}

/* A pass over the session's channels, its packets sent together at the end. */
static void
pass(TunnelConn *s)
{
	s->out_hold = true;
	run_pass(s);
	s->out_hold = false;
	if (s->sock != PGINVALID_SOCKET)
		(void) tunnel_conn_io_flush(s);
	/* The owner's turn: the waiting clients to lanes, a new login. */
	if (s->phase == CONN_READY)
		s->ops->passed(s->owner, s);
}

static void
service(TunnelConn *s)
{
	/* What the socket did not take last time goes before anything new. */
	if (s->out_len > 0 && s->sock != PGINVALID_SOCKET)
		(void) tunnel_conn_io_flush(s);
	switch (s->phase)
	{
		case CONN_CONNECTING:
			step_connect(s);
			if (s->phase != CONN_READY)
				break;
			/* FALLTHROUGH */
		case CONN_READY:
			pass(s);
			break;
		default:
			break;
	}
	s->readable = s->writable = false;
	update_interest(s);
}

static void
update_interest(TunnelConn *s)
{
	uint32		wanted = WL_SOCKET_READABLE;

	if (s->sock == PGINVALID_SOCKET)
		return;
	if (s->out_len > 0)
		wanted |= WL_SOCKET_WRITEABLE;
	switch (s->phase)
	{
		case CONN_CONNECTING:
			wanted = tunnel_connect_events(&s->connect);
			if (wanted == 0)
				return;
			break;
		case CONN_READY:
			/* A stalled send: nothing reads before it is done (run_pass). */
			if (tunnel_turn_owner(&s->turn) != NULL)
				wanted = WL_SOCKET_WRITEABLE;
			break;
		default:
			break;
	}
	watch_set_events(s->watch, wanted);
}

bool
tunnel_conn_pending(void)
{
	return !dlist_is_empty(&dirty_conns);
}

void
tunnel_conn_service_all(void)
{
	dlist_head	batch;

	/* Sessions marked during this round wait for the next one. */
	dlist_init(&batch);
	while (!dlist_is_empty(&dirty_conns))
	{
		dlist_node *node = dlist_pop_head_node(&dirty_conns);

		dlist_push_tail(&batch, node);
	}
	while (!dlist_is_empty(&batch))
	{
		TunnelConn *s = dlist_container(TunnelConn, dirty_node,
										dlist_pop_head_node(&batch));

		s->dirty = false;
		service(s);
	}
}

long
tunnel_conn_tick(TunnelConn *s, TimestampTz now)
{
	switch (s->phase)
	{
		case CONN_IDLE:
			return -1;
		case CONN_CONNECTING:
			if (now >= s->deadline)
			{
				tunnel_connect_timed_out(&s->connect, tunnel_connect_timeout);
				connect_failed(s);
				return 0;
			}
			/* The resolver has no descriptor to wait on: look again soon. */
			if (s->connect.step == CONNECT_RESOLVE)
			{
				tunnel_conn_mark_dirty(s);
				return Min(20, tunnel_ms_until(s->deadline, now));
			}
			return tunnel_ms_until(s->deadline, now);
		case CONN_READY:
			{
				char		dead[TUNNEL_ERROR_MAXLEN];
				long		timeout = tunnel_keepalive_tick(s, now, dead,
															  sizeof(dead));

				if (dead[0] != '\0')
					end(s, TUNNEL_STATE_BACKOFF, dead, false);
				return timeout;
			}
	}
	return -1;
}

long
tunnel_conn_expire_waiting(TunnelConn *s, TimestampTz now, bool tunnel_ready)
{
	TimestampTz limit = (TimestampTz) tunnel_connect_timeout * USECS_PER_SEC;
	long		timeout = -1;
	dlist_iter	iter;

	dlist_foreach(iter, &s->channels)
	{
		TunnelChannel *f = channel_from_node(iter.cur);
		TimestampTz since = channel_waiting_since(f);
		long		t;

		if (since == 0)
			continue;
		if (now - since >= limit)
		{
			char		error[TUNNEL_ERROR_MAXLEN];

			channel_give_up(f, tunnel_ready, error, sizeof(error));
			if (error[0] != '\0')
				s->ops->forward_error(s->owner, s, error);
			tunnel_conn_mark_dirty(s);
			continue;
		}
		t = tunnel_ms_until(since + limit, now);
		if (timeout < 0 || t < timeout)
			timeout = t;
	}
	return timeout;
}

/* ---------- lifecycle ---------- */

TunnelConn *
tunnel_conn_create(const TunnelDef *def, void *owner,
				   const TunnelConnOwnerOps *ops)
{
	TunnelConn *s = palloc0(sizeof(TunnelConn));

	s->def = def;
	s->owner = owner;
	s->ops = ops;
	s->phase = CONN_IDLE;
	s->sock = PGINVALID_SOCKET;
	s->next_key_index = -1;
	tunnel_connect_init(&s->connect);
	tunnel_turn_init(&s->turn);
	dlist_init(&s->channels);
	return s;
}

void
tunnel_conn_destroy(TunnelConn *s)
{
	tunnel_conn_close(s, true, false);
	if (s->dirty)
		dlist_delete(&s->dirty_node);
	pfree(s);
}

TunnelChannel *
tunnel_conn_add_client(TunnelConn *s, pgsocket fd,
					   const char *remote_host, int remote_port,
					   TunnelStatusSlot *slot,
					   TunnelForwardSlot *forward_slot)
{
	MemoryContext old;
	TunnelChannel *f;

	/* The client outlives the worker's round: it lives with s. */
	old = MemoryContextSwitchTo(GetMemoryChunkContext(s));
	f = channel_create(&s->turn, wake_conn, s, fd, remote_host, remote_port,
					   slot, forward_slot);
	MemoryContextSwitchTo(old);
	dlist_push_tail(&s->channels, channel_node(f));
	tunnel_conn_mark_dirty(s);
	return f;
}

void
tunnel_conn_drop_client(TunnelConn *s, TunnelChannel *f)
{
	tunnel_turn_forget(&s->turn, f);
	dlist_delete(channel_node(f));
	channel_destroy(f);
}
