/*-------------------------------------------------------------------------
 *
 * session.c
 *	  One tunnel's SSH session: connect, handshake, host key, authentication,
 *	  liveness, backoff; and the service pass that drives its channels.
 *
 * Everything is non-blocking.  The way in is the connect machine's
 * (connect.h), stepped here from the service pass and bounded by one
 * deadline per attempt (tunnel_ssh.connect_timeout), so a bastion that hangs
 * costs only its own tunnel a timer, never anyone else a delay.
 *
 * These facts of libssh2 (1.10 and 1.11) shape this file:
 *
 * - A packet that could not be sent whole stays inside the session, and only
 *   the call that started it may finish it: the session's TunnelSendTurn
 *   (sendturn.c) says who may send.  Some of those packets live on libssh2's
 *   stack (channel EOF), so the resumed call must also be made at the same
 *   stack depth: all libssh2 calls are made from tunnel_session_service_all(),
 *   called from one place in the worker loop, never from socket callbacks.
 *
 * - Any read or write on one channel may pull packets for other channels off
 *   the socket into libssh2's queue, after which the socket is no longer
 *   readable.  So each pass gives every channel of the session a turn.
 *
 * - Replies to libssh2's own keepalive requests are queued and never freed
 *   (one packet per keepalive, for the life of the session), and a channel
 *   open is no keepalive either: its answer may take minutes when the bastion
 *   cannot reach the target.  So right after authentication each session
 *   opens one "session" channel and keeps it; when the bastion has been
 *   silent for keepalive_interval, an "env" request on it (answered at once
 *   by sshd, success or failure, and consumed by libssh2) is the keepalive.  It
 *   needs no open slot.  Any bytes from the bastion count as life.
 *
 * - An open waits for the target's connect on the bastion: lanes.c adds
 *   extra sessions (lanes) for the clients that would wait behind it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/pg_prng.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "channel.h"
#include "connect.h"
#include "hostkeys.h"
#include "session.h"
#include "settings.h"
#include "tunnel_limits.h"
#include "watch.h"

#include "session_internal.h"

/* A host key that could not be written is tried again after this. */
#define HOST_KEY_RETRY_MS	2000


static dlist_head dirty_sessions = DLIST_STATIC_INIT(dirty_sessions);
static TunnelSessionLookup session_lookup = NULL;

static void start_jump(TunnelSession *s);
static void update_interest(TunnelSession *s);
static void fail(TunnelSession *s, TunnelState state, const char *message);

/* ---------- small helpers ---------- */

void
tunnel_session_set_lookup(TunnelSessionLookup lookup)
{
	session_lookup = lookup;
}

void
tunnel_session_mark_dirty(TunnelSession *s)
{
	if (!s->dirty)
	{
		s->dirty = true;
		dlist_push_tail(&dirty_sessions, &s->dirty_node);
	}
}

/* A channel's ChannelWake: its client has bytes for it. */
static void
wake_session(void *arg)
{
	tunnel_session_mark_dirty((TunnelSession *) arg);
}

static void
set_state(TunnelSession *s, TunnelState state, const char *error)
{
	tunnel_status_set_state(s->slot, state, error);
}

static const char *
ssh_error(TunnelSession *s)
{
	return tunnel_ssh_error_text(s->ssh);
}

/*
 * libssh2 calls this for every read from the bastion, which makes "any byte
 * received" our measure of liveness at the cost of one clock read.
 */
static
LIBSSH2_RECV_FUNC(recv_and_note)
{
	TunnelSession *s = (TunnelSession *) *abstract;
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
static bool
flush_out(TunnelSession *s)
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
	TunnelSession *s = (TunnelSession *) *abstract;

	if (s->out_errno != 0)
		return -s->out_errno;
	if (s->out == NULL)
		s->out = MemoryContextAlloc(GetMemoryChunkContext(s), OUT_BUFSIZE);
	/* A packet is at most 35 kB: an empty buffer always has room for it. */
	if (length > (size_t) (OUT_BUFSIZE - s->out_len))
	{
		(void) flush_out(s);
		if (s->out_errno != 0)
			return -s->out_errno;
		if (length > (size_t) (OUT_BUFSIZE - s->out_len))
			return -EAGAIN;
	}
	memcpy(s->out + s->out_len, buffer, length);
	s->out_len += (int) length;
	if (!s->out_hold && !flush_out(s) && s->out_errno != 0)
		return -s->out_errno;
	return (ssize_t) length;
}

static void
on_socket_event(void *arg, uint32 occurred)
{
	TunnelSession *s = (TunnelSession *) arg;

	if (occurred & WL_SOCKET_READABLE)
	{
		s->readable = true;
		s->sock_empty = false;
	}
	if (occurred & WL_SOCKET_WRITEABLE)
		s->writable = true;
	tunnel_session_mark_dirty(s);
}

/*
 * The socket's watch is allocated with it, so that the connection can move
 * to another TunnelSession (tunnel_session_move_connection) with its place
 * in the wait set: the socket stays registered, only the callback's
 * argument changes.
 */
static void
add_watch(TunnelSession *s, uint32 wanted)
{
	s->watch = MemoryContextAlloc(GetMemoryChunkContext(s), sizeof(Watch));
	watch_add(s->watch, s->sock, wanted, on_socket_event, s);
}

static void
remove_watch(TunnelSession *s)
{
	watch_remove(s->watch);
	pfree(s->watch);
	s->watch = NULL;
}

/* ---------- teardown and backoff ---------- */

/*
 * Close the connection and every client on it.  The socket is shut down
 * first, so that libssh2's own clean-up fails fast instead of waiting for
 * a bastion that may never answer.
 */
void
tunnel_session_close_connection(TunnelSession *s, bool polite)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &s->channels)
	{
		dlist_delete(iter.cur);
		channel_destroy(channel_from_node(iter.cur));
	}
	s->keepalive = NULL;
	s->keepalive_phase = KEEPALIVE_NONE;
	s->probe_since = 0;
	s->probes = 0;
	s->relogin_wanted = false;
	tunnel_lanes_forget_login(s);
	tunnel_turn_init(&s->turn);
	tunnel_status_set_methods(s->slot, NULL);

	/* A connection not logged in yet is still the connect machine's. */
	tunnel_connect_close(&s->connect);

	/* Blocking, libssh2 waits for the socket itself: let it read. */
	s->sock_empty = false;
	s->out_hold = false;
	if (s->ssh)
	{
		if (polite && s->phase == PHASE_READY)
			(void) libssh2_session_disconnect(s->ssh, "tunnel closed");
		if (s->sock != PGINVALID_SOCKET)
			(void) shutdown(s->sock, SHUT_RDWR);
		libssh2_session_set_blocking(s->ssh, 1);
		(void) libssh2_session_free(s->ssh);
		s->ssh = NULL;
	}
	if (s->sock != PGINVALID_SOCKET)
	{
		remove_watch(s);
		close(s->sock);
		s->sock = PGINVALID_SOCKET;
	}
	if (s->out)
		pfree(s->out);
	s->out = NULL;
	s->out_len = 0;
	s->out_errno = 0;
	s->readable = s->writable = false;
}

/*
 * Exponential backoff with jitter: from first_ms (0.5 s after a network
 * failure), doubling, up to cap_ms; each delay is drawn from its upper half.
 */
long
tunnel_session_backoff_ms(int failures, double first_ms, double cap_ms)
{
	double		base = first_ms;
	double		cap = cap_ms;
	double		delay;

	for (int i = 1; i < failures && base < cap; i++)
		base *= 2;
	delay = Min(base, cap);
	return (long) (delay * (0.5 + 0.5 * pg_prng_double(&pg_global_prng_state)));
}

/*
 * A bastion that was serving until moments ago (sshd restarted, a network
 * blip) is likely back within a second or two.  Clients that connect in
 * that window, or were waiting for their channel when the session fell,
 * wait for the next attempt instead of being closed: their connection then
 * just takes a little longer.  The window is tunnel_ssh.connect_timeout
 * from the loss; a bastion down for longer fails new clients at once, as
 * does one that never worked.
 */
static bool
holding_clients(TunnelSession *s, TimestampTz now)
{
	return s->lost_at != 0 &&
		now - s->lost_at < (TimestampTz) tunnel_connect_timeout * USECS_PER_SEC;
}

/* Attempts for waiting clients: right away, but at most one a second. */
static TimestampTz
next_retry_for_clients(TunnelSession *s, TimestampTz now)
{
	return Max(now, s->last_attempt + USECS_PER_SEC);
}

/*
 * Take the clients that have no channel yet off the session, so that
 * closing the connection spares them, if the session is within the window.
 */
static void
hold_waiting_clients(TunnelSession *s, TimestampTz now, dlist_head *held)
{
	dlist_mutable_iter iter;

	if (!holding_clients(s, now))
		return;
	dlist_foreach_modify(iter, &s->channels)
	{
		if (channel_waits_for_session(channel_from_node(iter.cur)))
		{
			dlist_delete(iter.cur);
			dlist_push_tail(held, iter.cur);
		}
	}
}

/*
 * OpenSSH 9.8 and later (PerSourcePenalties) refuse, for 15 s up to 10
 * minutes, every connection from an address that failed to log in a few
 * times in a row (5 s of penalty per failed login, 1 s per connection
 * closed before authenticating, such as after a host key mismatch).  The
 * penalty hits every tunnel from this server to that bastion.  So these
 * failures, and a refusal itself, are retried in minutes rather than
 * seconds: never more than one such failure per tunnel in any 5 s, and
 * waiting clients do not bring the next attempt forward.
 */
#define PENALISED_FIRST_MS		10000.0
#define PENALISED_MAX_MS		300000.0

static long
retry_delay_ms(TunnelSession *s, TunnelState state, bool refused)
{
	if (refused)
		return tunnel_session_backoff_ms(s->failures, REFUSED_FIRST_MS, REFUSED_MAX_MS);
	if (state == TUNNEL_STATE_AUTH_FAILED ||
		state == TUNNEL_STATE_HOST_KEY_MISMATCH)
		return tunnel_session_backoff_ms(s->failures, PENALISED_FIRST_MS, PENALISED_MAX_MS);
	return tunnel_session_backoff_ms(s->failures, 500.0, tunnel_reconnect_max_delay * 1000.0);
}

/* What the bastion said, if anything, before it closed the connection. */
static int
refused_detail(const char *said)
{
	if (said == NULL || said[0] == '\0')
		return errdetail("The bastion closed the connection before sending its SSH banner.");
	return errdetail("The bastion closed the connection before sending its SSH banner, after \"%.80s\".",
					 said);
}

static int
state_errcode(TunnelState state)
{
	switch (state)
	{
		case TUNNEL_STATE_AUTH_FAILED:
		case TUNNEL_STATE_HOST_KEY_MISMATCH:
			return ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		case TUNNEL_STATE_INVALID:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		default:
			return ERRCODE_CONNECTION_FAILURE;
	}
}

/*
 * A client still waiting for its channel after tunnel_ssh.connect_timeout
 * gets its answer: closed, with the target named in the status when the
 * session was up (the bastion could not reach it).
 */
static long
expire_waiting(TunnelSession *s, TimestampTz now)
{
	TimestampTz limit = (TimestampTz) tunnel_connect_timeout * USECS_PER_SEC;
	bool		ready = tunnel_lanes_pool_of(s)->phase == PHASE_READY;
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

			channel_give_up(f, ready, error, sizeof(error));
			if (error[0] != '\0')
				tunnel_session_report_forward_error(s, error);
			tunnel_session_mark_dirty(s);
			continue;
		}
		t = tunnel_ms_until(since + limit, now);
		if (timeout < 0 || t < timeout)
			timeout = t;
	}
	return timeout;
}

static void
fail_ex(TunnelSession *s, TunnelState state, const char *message,
		bool refused)
{
	TimestampTz now = GetCurrentTimestamp();
	dlist_head	held;
	long		delay_ms;

	if (s->key_check)
	{
		ereport(DEBUG1,
				(errmsg("tunnel \"%s\": check of the new key: %s",
						s->def->name, message)));
		tunnel_session_close_connection(s, false);
		s->fail_pending = false;
		s->key_check_result = -1;
		s->phase = PHASE_DONE;
		return;
	}
	if (s->primary)
	{
		tunnel_lane_failed(s, message,
						   refused || state == TUNNEL_STATE_AUTH_FAILED ||
						   state == TUNNEL_STATE_HOST_KEY_MISMATCH);
		return;
	}

	s->failures++;
	delay_ms = retry_delay_ms(s, state, refused);
	s->penalised = refused || state == TUNNEL_STATE_AUTH_FAILED ||
		state == TUNNEL_STATE_HOST_KEY_MISMATCH;

	/* Say it once; a bastion down for an hour need not fill the log. */
	if (strcmp(message, s->last_logged) != 0)
	{
		if (refused)
			ereport(LOG,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("tunnel \"%s\": bastion %s port %d refused the connection",
							s->def->name, s->def->ssh_host, s->def->ssh_port),
					 refused_detail(s->connect.banner),
					 errhint("OpenSSH 9.8 and later refuse an address for a while after failed logins (PerSourcePenalties); "
							 "add this server's address to PerSourcePenaltyExemptList in the bastion's sshd_config. "
							 "The next attempt is in %ld s.", delay_ms / 1000)));
		else if (state == TUNNEL_STATE_HOST_KEY_MISMATCH)
			ereport(WARNING,
					(errcode(state_errcode(state)),
					 errmsg("host key of bastion %s port %d does not match the pins of tunnel \"%s\"",
							s->def->ssh_host, s->def->ssh_port, s->def->name),
					 errdetail_internal("%s", message),
					 errhint("If the bastion's host key was changed on purpose, run tunnel_host_key_reset() or pin the new key with tunnel_alter().")));
		else if (state == TUNNEL_STATE_AUTH_FAILED)
			ereport(LOG,
					(errcode(state_errcode(state)),
					 errmsg("tunnel \"%s\": authentication on bastion %s port %d failed",
							s->def->name, s->def->ssh_host, s->def->ssh_port),
					 errdetail_internal("%s", message)));
		else if (s->phase == PHASE_READY)
			ereport(LOG,
					(errcode(state_errcode(state)),
					 errmsg("tunnel \"%s\": connection to bastion %s port %d lost",
							s->def->name, s->def->ssh_host, s->def->ssh_port),
					 errdetail_internal("%s", message)));
		else
			ereport(LOG,
					(errcode(state_errcode(state)),
					 errmsg("tunnel \"%s\": could not connect to bastion %s port %d",
							s->def->name, s->def->ssh_host, s->def->ssh_port),
					 errdetail_internal("%s", message)));
		strlcpy(s->last_logged, message, sizeof(s->last_logged));
	}

	if (s->phase == PHASE_READY)
		s->lost_at = now;
	/*
	 * The lanes go with the session; their waiting clients come back.  A
	 * previous login that still carries connections (a retiring lane) is not
	 * this connection: it lives on until they end or its own keepalive fails.
	 */
	{
		dlist_iter	iter;

		dlist_foreach(iter, &s->lanes)
			tunnel_lanes_return_waiting(tunnel_lane_from_node(iter.cur));
	}
	tunnel_lanes_drop_all(s, true);
	dlist_init(&held);
	if (!s->penalised)
		hold_waiting_clients(s, now, &held);

	tunnel_session_close_connection(s, false);
	s->retry_at = TimestampTzPlusMilliseconds(now, delay_ms);
	s->phase = PHASE_BACKOFF;
	s->fail_pending = false;
	set_state(s, state, message);

	if (!dlist_is_empty(&held))
	{
		dlist_mutable_iter iter;

		dlist_foreach_modify(iter, &held)
		{
			/*
			 * An open the lost connection had in flight is asked again on
			 * the next one: its time starts then, or the target would look
			 * slow to the new session (lanes.c) and the wait be counted in
			 * the tunnel's usual open time.
			 */
			channel_move(channel_from_node(iter.cur), &s->turn, s);
			dlist_delete(iter.cur);
			dlist_push_tail(&s->channels, iter.cur);
		}
		s->retry_at = Min(s->retry_at, next_retry_for_clients(s, now));
	}
}

static void
fail(TunnelSession *s, TunnelState state, const char *message)
{
	fail_ex(s, state, message, false);
}

void
tunnel_session_fail(TunnelSession *s, const char *why)
{
	if (s->fail_pending)
		return;
	s->fail_pending = true;
	s->fail_state = TUNNEL_STATE_BACKOFF;
	snprintf(s->fail_message, sizeof(s->fail_message),
			 "connection to bastion lost: %s", why);
}

void
tunnel_session_report_forward_error(TunnelSession *s, const char *message)
{
	s = tunnel_lanes_pool_of(s);
	/* The session is fine; the state stays, the error is shown. */
	tunnel_status_set_state(s->slot, TUNNEL_STATE_CONNECTED, message);
	if (strcmp(message, s->last_logged) != 0)
	{
		ereport(LOG, (errmsg("tunnel \"%s\": %s", s->def->name, message)));
		strlcpy(s->last_logged, message, sizeof(s->last_logged));
	}
}

/*
 * Hand s's connection over to another TunnelSession (a lane that retires
 * it, lanes.c): the socket with its watch, libssh2's session, the keepalive,
 * the send turn, and every channel that has something on this connection
 * (open, closing, or an open in flight).  The clients still waiting for an
 * open stay with s, which is left without a connection.
 */
void
tunnel_session_move_connection(TunnelSession *s, TunnelSession *to)
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
	/* The keepalive's calls name the session as their party. */
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
		dlist_push_tail(&to->channels, iter.cur);
	}
	to->phase = PHASE_READY;

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
	tunnel_turn_init(&s->turn);
	tunnel_session_mark_dirty(to);
}

/* ---------- connecting ---------- */

/*
 * The connect machine opens and closes the socket; the session watches it
 * meanwhile, and owns it once logged in.
 */
static void
watch_connect_socket(void *owner, pgsocket sock, bool opened)
{
	TunnelSession *s = (TunnelSession *) owner;

	if (opened)
	{
		s->sock = sock;
		s->tcp = s->connect.tcp;
		add_watch(s, WL_SOCKET_WRITEABLE);
	}
	else
	{
		remove_watch(s);
		s->sock = PGINVALID_SOCKET;
	}
}

/* The pins, or the host key trusted on first use; NULL if none yet. */
static const char *
expected_host_keys(TunnelSession *s)
{
	if (s->def->host_key_fingerprint)
		return s->def->host_key_fingerprint;
	return s->host_key[0] != '\0' ? s->host_key : NULL;
}

/*
 * What the connect machine is to reach and with which keys: during a
 * rotation the new key goes first and the old one backs it; a lane offers
 * the key its tunnel's session was accepted with first; a key check offers
 * only the new key.
 */
static void
prepare_connect(TunnelSession *s)
{
	TunnelConnect *c = &s->connect;
	const TunnelDef *def = s->def;
	bool		next_first = def->next_private_key != NULL &&
		(s->primary == NULL || s->authed_next);

	c->tunnel = def->name;
	c->host = def->ssh_host;
	c->port = def->ssh_port;
	c->user = def->ssh_user;
	c->via = def->via;
	/* With via, the jump tunnel's session (and its proxy) carries ours. */
	c->proxy = def->via ? NULL : def->proxy;
	c->key_type = def->key_type;
	c->host_keys = expected_host_keys(s);
	c->host_key_algorithms = def->host_key_algorithms;
	c->host_key_try = s->host_key_try;
	/* A lane trusts only what its tunnel's session checked. */
	c->trust_first_use = s->primary == NULL;
	c->owner = s;
	c->socket_hook = watch_connect_socket;
	c->nkeys = 0;
	s->next_key_index = -1;
	if (next_first)
	{
		s->next_key_index = c->nkeys;
		c->keys[c->nkeys].private_key = def->next_private_key;
		c->keys[c->nkeys].certificate = def->next_certificate;
		c->keys[c->nkeys++].fingerprint = def->next_key_fingerprint;
	}
	if (!s->key_check || !next_first)
	{
		c->keys[c->nkeys].private_key = def->private_key;
		c->keys[c->nkeys].certificate = def->certificate;
		c->keys[c->nkeys++].fingerprint = def->key_fingerprint;
	}
	s->handshake_noted = false;
}

static void
start_attempt(TunnelSession *s, TimestampTz now)
{
	s->last_attempt = now;
	s->deadline = TimestampTzPlusMilliseconds(now, tunnel_connect_timeout * 1000L);
	tunnel_status_count_attempt(s->slot);
	set_state(s, TUNNEL_STATE_CONNECTING, NULL);
	/*
	 * The output batch is taken before the handshake's buffers, as when the
	 * handshake went through it: taken after, it lands on the pages they
	 * freed, and 200 idle tunnels cost the worker 12 MB more (scale.sh).
	 */
	if (s->out == NULL)
		s->out = MemoryContextAlloc(GetMemoryChunkContext(s), OUT_BUFSIZE);
	prepare_connect(s);
	s->phase = PHASE_CONNECTING;
	if (s->def->via)
		start_jump(s);
	else
		tunnel_connect_begin(&s->connect);
	/* The machine takes its steps in the service pass, with libssh2's. */
	tunnel_session_mark_dirty(s);
}

/*
 * A tunnel with "via" reaches its bastion as ssh -J does: through a
 * direct-tcpip channel of the jump tunnel's session.  libssh2 wants a
 * socket, so it gets one end of a socketpair, and the jump session carries
 * the other end like any client connection.  The jump host resolves the
 * bastion's name, as with ssh -J.  Should the jump session fail, its end
 * closes and this session fails with it; a chain that loops never starts,
 * since each link waits for the next to be connected.
 */
static void
start_jump(TunnelSession *s)
{
	TunnelSession *jump = session_lookup ? session_lookup(s->def->via) : NULL;
	char		text[TUNNEL_ERROR_MAXLEN];
	int			sv[2];

	if (jump == NULL || jump->phase != PHASE_READY)
	{
		if (jump == NULL)
			snprintf(text, sizeof(text),
					 "jump tunnel \"%s\" is not running (it does not exist, or is disabled or invalid)",
					 s->def->via);
		else
			snprintf(text, sizeof(text), "jump tunnel \"%s\" is not connected",
					 s->def->via);
		fail(s, TUNNEL_STATE_UNREACHABLE, text);
		/* Not this bastion's fault: look again soon, without backing off. */
		s->failures = 0;
		s->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
	{
		snprintf(text, sizeof(text), "could not create a socket pair: %m");
		fail(s, TUNNEL_STATE_UNREACHABLE, text);
		return;
	}
	tunnel_session_add_client(jump, sv[1], s->def->ssh_host, s->def->ssh_port,
							  NULL);
	tunnel_connect_begin_on(&s->connect, sv[0]);
}

/*
 * The handshake is done: the status shows the host key presented and the
 * methods; a host key accepted at first use is kept (and written to the
 * catalog by the next tick, outside libssh2's calls: save_host_key), as is
 * the algorithm a bare pin matched with.
 */
static void
note_handshake(TunnelSession *s)
{
	TunnelConnect *c = &s->connect;
	bool		accepted = c->step == CONNECT_AUTH || c->step == CONNECT_DONE ||
		(c->step == CONNECT_FAILED && c->failed_at == CONNECT_AUTH);

	s->handshake_noted = true;
	tunnel_status_set_methods(s->slot, &c->methods);
	if (c->host_key_shown[0] != '\0')
		tunnel_status_set_host_key(s->slot, c->host_key_shown);
	if (!accepted)
		return;
	if (c->host_key_trusted)
	{
		strlcpy(s->host_key, c->host_key_seen, sizeof(s->host_key));
		s->host_key_unsaved = true;
		s->host_key_save_at = 0;
		strlcpy(s->host_key_algorithm, c->host_key_algorithm,
				sizeof(s->host_key_algorithm));
	}
	else if (s->def->host_key_algorithms == NULL &&
			 s->def->host_key_fingerprint != NULL &&
			 !hostkeys_typed(s->def->host_key_fingerprint) &&
			 c->host_key_algorithm[0] != '\0' && s->primary == NULL)
	{
		strlcpy(s->host_key_algorithm, c->host_key_algorithm,
				sizeof(s->host_key_algorithm));
		s->algorithm_unsaved = true;
		s->host_key_save_at = 0;
	}
}

/*
 * The rotation's key was accepted: it becomes the tunnel's key and the old
 * private key is erased (catalog_promote_key), so the DBA can remove the old
 * line from authorized_keys.
 */
static void
adopt_next_key(TunnelSession *s)
{
	if (s->def->next_key_fingerprint == NULL ||
		!catalog_promote_key(s->def->name, s->def->next_key_fingerprint))
		return;
	ereport(LOG,
			(errmsg("tunnel \"%s\": new key %s accepted by %s, rotation complete",
					s->def->name, s->def->next_key_fingerprint,
					s->def->ssh_host),
			 errdetail("The previous key %s has been erased from the catalog.",
					   s->def->key_fingerprint),
			 errhint("Remove the line of key %s from ~%s/.ssh/authorized_keys on %s.",
					 s->def->key_fingerprint, s->def->ssh_user,
					 s->def->ssh_host)));
}

/*
 * Logged in with a certificate: say which, and warn once per certificate
 * when a tenth of its life or less is left, so that a renewal that stopped
 * is noticed before the tunnel ends in auth_failed.
 */
static void
note_certificate(TunnelSession *s)
{
	TunnelConnect *c = &s->connect;
	char		until[64];
	uint64		now = (uint64) time(NULL);
	uint64		life = c->cert_valid_before - c->cert_valid_after;

	cert_format_time(c->cert_valid_before, until, sizeof(until));
	ereport(LOG,
			(errmsg("tunnel \"%s\": connected to %s port %d as \"%s\" with certificate \"%s\" (valid until %s)",
					s->def->name, s->def->ssh_host, s->def->ssh_port,
					s->def->ssh_user, c->cert_key_id, until)));
	if (c->cert_valid_before != UINT64_MAX &&
		c->cert_valid_before > now &&
		(c->cert_valid_before - now) * 10 <= life &&
		s->cert_warned_before != c->cert_valid_before)
	{
		s->cert_warned_before = c->cert_valid_before;
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("certificate \"%s\" of tunnel \"%s\" expires at %s",
						c->cert_key_id, s->def->name, until),
				 errdetail("A tenth of its life or less is left; once it has expired the tunnel cannot log in again."),
				 errhint("Renew it and call tunnel_certificate_set('%s', ...).",
						 s->def->name)));
	}
}

/* The connect machine logged in: the session takes its connection. */
static void
connected(TunnelSession *s)
{
	TunnelConnect *c = &s->connect;
	bool		next = c->accepted == s->next_key_index;
	const char *fingerprint = c->keys[c->accepted].fingerprint;

	s->ssh = c->ssh;
	tunnel_connect_detach(c);
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

	if (s->key_check)
	{
		if (next)
			adopt_next_key(s);
		s->key_check_result = 1;
		s->phase = PHASE_DONE;
		tunnel_session_close_connection(s, false);
		return;
	}
	s->phase = PHASE_READY;
	s->last_recv = GetCurrentTimestamp();
	s->keepalive_started = s->last_recv;
	/* The keepalive channel first: it may later wait behind no open. */
	s->keepalive_phase = KEEPALIVE_OPENING;
	if (s->primary)
	{
		s->primary->failures_of_lanes = 0;
		tunnel_lanes_note_login(s);
		return;
	}
	tunnel_status_set_key(s->slot, fingerprint);
	if (next)
		adopt_next_key(s);
	if (c->cert_used)
		note_certificate(s);
	else
		ereport(LOG,
				(errmsg("tunnel \"%s\": connected to %s port %d as \"%s\"",
						s->def->name, s->def->ssh_host, s->def->ssh_port,
						s->def->ssh_user)));
	s->failures = 0;
	s->authed_next = next;
	s->penalised = false;
	tunnel_lanes_note_login(s);
	s->last_logged[0] = '\0';
	set_state(s, TUNNEL_STATE_CONNECTED, "");
}

/* The connect machine failed: the session fails with its cause and words. */
static void
connect_failed(TunnelSession *s)
{
	TunnelConnect *c = &s->connect;
	TunnelState state;

	switch (c->failure)
	{
		case CONNECT_FAILURE_HOST_KEY:
			state = TUNNEL_STATE_HOST_KEY_MISMATCH;
			if (c->next_family)
				s->host_key_try++;
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
	fail_ex(s, state, c->message, c->failure == CONNECT_FAILURE_REFUSED);
}

/* A step of the connect machine, when its socket is ready (or it resolves). */
static void
step_connect(TunnelSession *s)
{
	TunnelConnect *c = &s->connect;

	tunnel_connect_step(c);
	if (c->handshaken && !s->handshake_noted)
		note_handshake(s);
	if (c->step == CONNECT_DONE)
		connected(s);
	else if (c->step == CONNECT_FAILED)
		connect_failed(s);
}

/* ---------- the connected session ---------- */

/*
 * Pull whatever the bastion sent into libssh2's queues, through the keepalive
 * channel or any channel that can still receive; with none, opening the
 * keepalive channel does the reading (when the bastion sent something:
 * open_keepalive).
 */
static void
drain(TunnelSession *s, bool open_keepalive)
{
	dlist_iter	iter;
	int			rc;

	if (s->keepalive_phase == KEEPALIVE_IDLE || s->keepalive_phase == KEEPALIVE_ASKING)
	{
		rc = libssh2_channel_wait_eof(s->keepalive);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;
		if (rc != 0)
		{
			tunnel_session_fail(s, ssh_error(s));
			return;
		}
		/* The bastion closed it: free it, open another when due. */
		s->keepalive_phase = KEEPALIVE_CLOSING;
	}
	dlist_foreach(iter, &s->channels)
	{
		LIBSSH2_CHANNEL *ch = channel_ssh_channel(channel_from_node(iter.cur));

		if (ch == NULL)
			continue;
		rc = libssh2_channel_wait_eof(ch);
		if (rc == 0)
			continue;			/* that one just reached EOF; try another */
		if (rc != LIBSSH2_ERROR_EAGAIN)
			tunnel_session_fail(s, ssh_error(s));
		return;
	}
	if (open_keepalive && s->keepalive_phase == KEEPALIVE_NONE &&
		tunnel_turn_opener(&s->turn) == NULL)
		s->keepalive_phase = KEEPALIVE_OPENING;
}

/* The keepalive's calls report to the session's turn, as channels' do. */
static void
keepalive_sent(TunnelSession *s, TurnOp op, int rc)
{
	/* Channels that held back for it get their turn. */
	if (tunnel_turn_sent(&s->turn, s, op, tunnel_ssh_send_stalled(s->ssh, rc)))
		tunnel_session_mark_dirty(s);
}

/* The open slot is free again: a lane may take a waiting client. */
static void
open_released(TunnelSession *s)
{
	if (s->primary)
		tunnel_session_mark_dirty(s->primary);
}

/*
 * The keepalive: open its channel (once per session, or again after sshd
 * refused or closed it), ask on it when the bastion has been silent, free
 * it when the bastion closed it.
 */
static void
step_keepalive(TunnelSession *s)
{
	int			rc;

	if (s->keepalive_phase == KEEPALIVE_OPENING)
	{
		if (!tunnel_turn_claim_open(&s->turn, s) ||
			!tunnel_turn_may_send(&s->turn, s))
			return;
		s->keepalive = libssh2_channel_open_ex(s->ssh, "session", 7, 1024, 1024,
										   NULL, 0);
		rc = s->keepalive ? 0 : libssh2_session_last_errno(s->ssh);
		keepalive_sent(s, TURN_OP_OPEN, rc);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;
		if (tunnel_turn_release_open(&s->turn, s))
			open_released(s);
		/* A refusal is an answer too: the bastion is alive. */
		if (rc != 0 && rc != LIBSSH2_ERROR_CHANNEL_FAILURE)
		{
			tunnel_session_fail(s, ssh_error(s));
			return;
		}
		s->keepalive_phase = s->keepalive ? KEEPALIVE_IDLE : KEEPALIVE_NONE;
	}
	if (s->keepalive_phase == KEEPALIVE_ASKING)
	{
		if (!tunnel_turn_may_send(&s->turn, s))
			return;
		rc = libssh2_channel_setenv(s->keepalive, "TUNNEL_SSH_KEEPALIVE", "1");
		keepalive_sent(s, TURN_OP_REQUEST, rc);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;

		/*
		 * sshd refuses a variable AcceptEnv does not list: that answer is as
		 * good as any.  libssh2's own timeout (60 s) only ends this request.
		 */
		if (rc != 0 && rc != LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED &&
			rc != LIBSSH2_ERROR_TIMEOUT)
		{
			tunnel_session_fail(s, ssh_error(s));
			return;
		}
		s->keepalive_phase = KEEPALIVE_IDLE;
	}
	if (s->keepalive_phase == KEEPALIVE_CLOSING)
	{
		if (!tunnel_turn_may_send(&s->turn, s))
			return;
		rc = libssh2_channel_free(s->keepalive);
		keepalive_sent(s, TURN_OP_CLOSE, rc);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;
		s->keepalive = NULL;
		s->keepalive_phase = KEEPALIVE_NONE;
	}
}

/*
 * A channel's turn: pump it, then do what it reports.  A channel's open
 * waits while an open to its target has long been pending (lanes.c).
 */
static void
run_channel(TunnelSession *s, TunnelChannel *f, bool *progress)
{
	ChannelOutcome out;
	bool		may_open;
	bool		alive;

	may_open = channel_wants_open(f) &&
		(tunnel_turn_holds_open(&s->turn, f) || tunnel_session_open_allowed(s, f));
	alive = channel_pump(f, s->phase == PHASE_READY ? s->ssh : NULL,
						 may_open, &out);
	if (out.progress)
		*progress = true;
	if (out.turn_released)
		tunnel_session_mark_dirty(s);
	if (out.open_released)
		open_released(s);
	if (out.open_took_ms >= 0)
		tunnel_session_open_took(s, out.open_took_ms);
	if (out.open_answered)
		tunnel_session_open_answered(s, f);
	if (out.forward_error[0] != '\0')
		tunnel_session_report_forward_error(s, out.forward_error);
	if (out.transport_error)
		tunnel_session_fail(s, out.transport_error);
	if (alive)
		return;
	tunnel_turn_forget(&s->turn, f);
	dlist_delete(channel_node(f));
	channel_destroy(f);
}

static void
run_pass(TunnelSession *s)
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
		drain(s, s->readable);
		s->readable = false;
	}

	/* The holder of a stalled send goes first, so the others can follow. */
	owner = tunnel_turn_owner(&s->turn);
	if (owner == s ||
		(s->keepalive_phase != KEEPALIVE_NONE && s->keepalive_phase != KEEPALIVE_IDLE))
		step_keepalive(s);
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
		fail(s, s->fail_state, s->fail_message);
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
		tunnel_session_mark_dirty(s);
	if (s->primary == NULL)
		tunnel_lanes_dispatch(s);
}

/* A pass over the session's channels, its packets sent together at the end. */
static void
pass(TunnelSession *s)
{
	s->out_hold = true;
	run_pass(s);
	s->out_hold = false;
	if (s->sock != PGINVALID_SOCKET)
		(void) flush_out(s);
	if (s->relogin_wanted)
		tunnel_lanes_relogin(s);
}

static void
service(TunnelSession *s)
{
	/* What the socket did not take last time goes before anything new. */
	if (s->out_len > 0 && s->sock != PGINVALID_SOCKET)
		(void) flush_out(s);
	switch (s->phase)
	{
		case PHASE_CONNECTING:
			step_connect(s);
			if (s->phase != PHASE_READY)
				break;
			/* FALLTHROUGH */
		case PHASE_READY:
			pass(s);
			break;
		default:
			break;
	}
	s->readable = s->writable = false;
	update_interest(s);
}

static void
update_interest(TunnelSession *s)
{
	uint32		wanted = WL_SOCKET_READABLE;

	if (s->sock == PGINVALID_SOCKET)
		return;
	if (s->out_len > 0)
		wanted |= WL_SOCKET_WRITEABLE;
	switch (s->phase)
	{
		case PHASE_CONNECTING:
			wanted = tunnel_connect_events(&s->connect);
			if (wanted == 0)
				return;
			break;
		case PHASE_READY:
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
tunnel_session_pending(void)
{
	return !dlist_is_empty(&dirty_sessions);
}

void
tunnel_session_service_all(void)
{
	dlist_head	batch;

	/* Sessions marked during this round wait for the next one. */
	dlist_init(&batch);
	while (!dlist_is_empty(&dirty_sessions))
	{
		dlist_node *node = dlist_pop_head_node(&dirty_sessions);

		dlist_push_tail(&batch, node);
	}
	while (!dlist_is_empty(&batch))
	{
		TunnelSession *s = dlist_container(TunnelSession, dirty_node,
										   dlist_pop_head_node(&batch));

		s->dirty = false;
		service(s);
	}
}

/*
 * Liveness of a ready session.  A bastion silent for keepalive_interval is
 * probed, and probed again every interval while it stays silent; it is dead
 * once the first of those probes and the ones after it went unanswered for
 * interval x (count - 1), at least one interval (as OpenSSH's
 * ServerAliveCountMax counts unanswered probes).  With steady settings that
 * is interval x count of silence, as before; but what decides is the
 * probes, not the silence: a session idle under a long interval is not
 * dropped when a reload shortens it, it is probed first (and a longer
 * interval does not put off the end of one already probed in vain).
 */
static long
tick_keepalive(TunnelSession *s, TimestampTz now)
{
	long		interval_ms = tunnel_keepalive_interval * 1000L;
	long		patience_ms = interval_ms * Max(tunnel_keepalive_count - 1, 1);
	long		silent_ms = (long) ((now - s->last_recv) / 1000);
	long		probing_ms;

	/* Any byte since the first probe answers it. */
	if (s->probe_since != 0 && s->last_recv > s->probe_since)
	{
		s->probe_since = 0;
		s->probes = 0;
	}
	if (silent_ms < interval_ms)
		return interval_ms - silent_ms;

	if (s->probe_since != 0 &&
		now - s->probe_since >= (TimestampTz) patience_ms * 1000)
	{
		char		text[TUNNEL_ERROR_MAXLEN];

		snprintf(text, sizeof(text),
				 "connection to bastion lost: no answer for %ld s, %d keepalive probe%s unanswered",
				 silent_ms / 1000, s->probes, s->probes == 1 ? "" : "s");
		fail(s, TUNNEL_STATE_BACKOFF, text);
		return 0;
	}
	if (now - s->keepalive_started >= (TimestampTz) interval_ms * 1000)
	{
		/*
		 * A request still in flight (or a keepalive channel still opening or
		 * closing) is a probe too: the countdown starts all the same.
		 */
		if (s->probe_since == 0)
			s->probe_since = now;
		if (s->keepalive_phase == KEEPALIVE_IDLE ||
			s->keepalive_phase == KEEPALIVE_NONE)
		{
			s->keepalive_started = now;
			s->probes++;
			s->keepalive_phase = s->keepalive_phase == KEEPALIVE_IDLE ?
				KEEPALIVE_ASKING : KEEPALIVE_OPENING;
			tunnel_session_mark_dirty(s);
		}
		else if (s->probes == 0)
			s->probes = 1;
	}
	/* Next: the probe that falls due, or the end of our patience. */
	probing_ms = s->probe_since ? (long) ((now - s->probe_since) / 1000) : 0;
	return Max(1, Min(1000, patience_ms - probing_ms));
}

/* Timers of s's own connection (connect phases, backoff, keepalive). */
static long
tick_connection(TunnelSession *s, TimestampTz now)
{

	switch (s->phase)
	{
		case PHASE_IDLE:
			start_attempt(s, now);
			return 0;
		case PHASE_BACKOFF:
			if (now < s->retry_at)
				return tunnel_ms_until(s->retry_at, now);
			s->phase = PHASE_IDLE;
			return 0;
		case PHASE_CONNECTING:
			if (now >= s->deadline)
			{
				tunnel_connect_timed_out(&s->connect, tunnel_connect_timeout);
				connect_failed(s);
				return 0;
			}
			/* The resolver has no descriptor to wait on: look again soon. */
			if (s->connect.step == CONNECT_RESOLVE)
			{
				tunnel_session_mark_dirty(s);
				return Min(20, tunnel_ms_until(s->deadline, now));
			}
			return tunnel_ms_until(s->deadline, now);
		case PHASE_DONE:
			return -1;
		case PHASE_READY:
			return tick_keepalive(s, now);
	}
	return -1;
}

static long
min_timeout(long a, long b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return Min(a, b);
}

/*
 * Record the host key seen at first use.  A transaction holding the tunnel's
 * row must not stall the worker, so a write that cannot be made at once is
 * tried again a little later; the key is trusted from memory meanwhile.
 */
static long
save_host_key(TunnelSession *s, TimestampTz now)
{
	if ((!s->host_key_unsaved && !s->algorithm_unsaved) || s->key_check)
		return -1;
	if (now < s->host_key_save_at)
		return tunnel_ms_until(s->host_key_save_at, now);
	if (s->algorithm_unsaved)
	{
		if (!catalog_learn_host_key_algorithm(s->def->name,
											  s->def->host_key_fingerprint,
											  s->host_key_algorithm))
		{
			s->host_key_save_at = TimestampTzPlusMilliseconds(now, HOST_KEY_RETRY_MS);
			return HOST_KEY_RETRY_MS;
		}
		s->algorithm_unsaved = false;
		return -1;
	}
	switch (catalog_record_host_key(s->def->name, s->host_key,
									s->host_key_algorithm[0] ?
									s->host_key_algorithm : NULL))
	{
		case CATALOG_WRITE_RETRY:
			s->host_key_save_at = TimestampTzPlusMilliseconds(now, HOST_KEY_RETRY_MS);
			return HOST_KEY_RETRY_MS;
		case CATALOG_WRITE_DONE:
			ereport(LOG,
					(errmsg("tunnel \"%s\": recorded host key %s of %s port %d",
							s->def->name, s->host_key, s->def->ssh_host,
							s->def->ssh_port)));
			break;
		case CATALOG_WRITE_NONE:
			/* A pin set meanwhile: the worker compares it with ours. */
			break;
	}
	s->host_key_unsaved = false;
	return -1;
}

long
tunnel_session_tick(TunnelSession *s, TimestampTz now)
{
	long		timeout = expire_waiting(s, now);

	if (s->primary == NULL)
		timeout = min_timeout(timeout, save_host_key(s, now));

	timeout = min_timeout(timeout, tick_connection(s, now));
	if (s->primary == NULL)
		timeout = min_timeout(timeout, tunnel_lanes_tick(s, now));
	return timeout;
}

/* ---------- lifecycle and the channels' interface ---------- */

TunnelSession *
tunnel_session_create(const TunnelDef *def, TunnelStatusSlot *slot)
{
	TunnelSession *s = palloc0(sizeof(TunnelSession));

	s->def = def;
	s->slot = slot;
	s->phase = PHASE_IDLE;
	s->sock = PGINVALID_SOCKET;
	tunnel_connect_init(&s->connect);
	dlist_init(&s->channels);
	dlist_init(&s->lanes);
	/* A single bare fingerprint also serves as trust on first use. */
	if (def->host_key_fingerprint &&
		strlen(def->host_key_fingerprint) < sizeof(s->host_key))
		strlcpy(s->host_key, def->host_key_fingerprint, sizeof(s->host_key));
	return s;
}

/*
 * A session that only checks whether the bastion accepts the rotation's new
 * key, so that a tunnel whose session stays up for months still completes
 * its rotation.  It reports nothing in the tunnel's status.
 */
TunnelSession *
tunnel_session_create_key_check(const TunnelDef *def)
{
	TunnelSession *s = tunnel_session_create(def, NULL);

	s->key_check = true;
	return s;
}

int
tunnel_session_key_check_result(TunnelSession *s)
{
	return s->key_check_result;
}

bool
tunnel_session_ready(TunnelSession *s)
{
	return s->phase == PHASE_READY;
}

void
tunnel_session_destroy(TunnelSession *s)
{
	tunnel_lanes_drop_all(s, false);
	tunnel_session_close_connection(s, true);
	if (s->dirty)
		dlist_delete(&s->dirty_node);
	{
		ListCell   *lc;

		foreach(lc, s->answers)
			pfree(((TargetAnswer *) lfirst(lc))->host);
		list_free_deep(s->answers);
	}
	pfree(s);
}

void
tunnel_session_credentials_changed(TunnelSession *s)
{
	/*
	 * Waiting out a refused login: the DBA's remedy (a renewed certificate)
	 * is tried now rather than at the end of a backoff of minutes.
	 */
	if (s->phase == PHASE_BACKOFF && s->penalised)
	{
		s->retry_at = GetCurrentTimestamp();
		s->failures = 0;
	}
}

void
tunnel_session_set_def(TunnelSession *s, const TunnelDef *def)
{
	dlist_iter	iter;

	s->def = def;
	dlist_foreach(iter, &s->lanes)
		tunnel_lane_from_node(iter.cur)->def = def;
}

void
tunnel_session_add_client(TunnelSession *s, pgsocket fd,
						  const char *remote_host, int remote_port,
						  TunnelForwardSlot *forward_slot)
{
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext old;
	TunnelChannel *f;

	/* The connection outlives the worker's round: it lives with s. */
	old = MemoryContextSwitchTo(GetMemoryChunkContext(s));
	f = channel_create(&s->turn, wake_session, s, fd, remote_host, remote_port,
					   s->slot, forward_slot);
	MemoryContextSwitchTo(old);

	dlist_push_tail(&s->channels, channel_node(f));

	/*
	 * Someone needs the tunnel now: don't make them wait out a long backoff,
	 * but don't let a stream of clients hammer a dead bastion either.  A
	 * client arriving in backoff waits for the attempt it triggers; the
	 * session's failure closes it, unless the bastion was lost only moments
	 * ago (holding_clients).  A bastion that refused us or a key, though,
	 * only penalises attempts made sooner: those clients are closed.
	 */
	if (s->phase == PHASE_BACKOFF)
	{
		TimestampTz soonest = next_retry_for_clients(s, now);
		bool		hold = holding_clients(s, now) && !s->penalised;

		/* After a refusal or a failed login, the bastion sets the pace. */
		if (s->penalised)
			soonest = s->retry_at;
		if (soonest == now || hold)
			s->retry_at = Min(s->retry_at, soonest);
		if (s->retry_at > now && !hold)
		{
			dlist_delete(channel_node(f));
			channel_destroy(f);
			return;
		}
	}
	tunnel_session_mark_dirty(s);
}

const char *
tunnel_session_seen_host_key(TunnelSession *s)
{
	return s->host_key[0] ? s->host_key : NULL;
}
