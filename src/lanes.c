/*-------------------------------------------------------------------------
 *
 * lanes.c
 *	  Extra SSH sessions of a tunnel (lanes), so that no client's channel
 *	  open waits behind another's.
 *
 * libssh2 runs one channel open at a time per session, and sshd answers a
 * direct-tcpip open only once its own connect to the target has ended: up
 * to minutes for a target that drops packets.  So the tunnel's session
 * (the primary) may add a few lanes to the same bastion, same key, same
 * host key: a client whose open would wait behind another's moves to a lane
 * with no open in flight (tunnel_lanes_dispatch), lanes are started on
 * demand, up to tunnel_ssh.max_extra_sessions, and closed when idle.  A
 * lane that fails hands its waiting clients back to the primary; the tunnel
 * is not affected.  The opens' answers per target are kept here too, so
 * that clients of a target that does not answer wait for the open already
 * pending instead of taking every lane.
 *
 * sshd fixes a key's permissions (the permitopen list of its line) when the
 * session logs in.  A forward added later is refused "administratively
 * prohibited" on a session that logged in before, even once the DBA has
 * pasted the new line.  So each session remembers the catalog's targets at
 * its login; a client of a target added since makes the tunnel's session log
 * in again (tunnel_lanes_relogin): its connection, with every established
 * channel, moves to a retiring lane that takes no new opens and is closed
 * when its last channel ends, and the tunnel's session connects anew while
 * the waiting clients wait for it.  That is one login per change of the
 * targets; a target still refused on the new login (the line is not pasted
 * yet) is reported as before, and another login is tried for it only after
 * a backoff.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "session_internal.h"
#include "settings.h"
#include "status.h"

/* A pending open to a target older than this keeps others to it waiting. */
#define SLOW_OPEN_MS		1000
/* A lane with no channel for this long is closed. */
#define LANE_IDLE_MS		10000
/* After a lane failed to connect, the next one waits this long. */
#define LANE_RETRY_MS		5000
/*
 * An open in flight this long, or a client waiting this long behind the
 * opens, and LANE_WAIT_FACTOR times the usual time of the tunnel's opens,
 * gets a new lane started beside it (at most LANE_WAIT_MAX_MS): on a busy
 * machine every open takes longer, and lanes started for one slow open would
 * only add logins to the load.  A burst of clients is another matter: one
 * session answers its opens one after the other, so over a long round trip
 * the last of 100 waits 100 round trips.  (Where the CPU is what limits,
 * lanes do not help: they share it.)
 */
#define LANE_WAIT_MS		200
#define LANE_WAIT_FACTOR	8
#define LANE_WAIT_MAX_MS	3000
/*
 * A target still refused after a login that had it in the catalog is given
 * another login after this, doubling up to RELOGIN_MAX_MS: the line may have
 * been pasted since.  (A login that succeeds costs no OpenSSH penalty.)
 */
#define RELOGIN_FIRST_MS	5000
#define RELOGIN_MAX_MS		300000

/* The tunnel's own session, of which s is or may be a lane. */
TunnelSession *
tunnel_lanes_pool_of(TunnelSession *s)
{
	return s->primary ? s->primary : s;
}

TunnelSession *
tunnel_lane_from_node(dlist_node *node)
{
	return dlist_container(TunnelSession, lane_node, node);
}

/* Give the clients of s that have no channel yet back to the pool. */
void
tunnel_lanes_return_waiting(TunnelSession *s)
{
	TunnelSession *p = s->primary;
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &s->channels)
	{
		TunnelChannel *f = channel_from_node(iter.cur);

		if (!channel_waits_for_session(f))
			continue;
		tunnel_turn_forget(&s->turn, f);
		dlist_delete(iter.cur);
		channel_move(f, &p->turn, p);
		dlist_push_tail(&p->channels, iter.cur);
	}
	tunnel_session_mark_dirty(p);
}

static void
drop_lane(TunnelSession *lane)
{
	lane->primary->nlanes--;
	tunnel_status_set_extra_sessions(lane->primary->slot,
									 lane->primary->nlanes);
	dlist_delete(&lane->lane_node);
	tunnel_session_destroy(lane);
}

/* Drop the lanes; keep_retiring: those that carry a previous login stay. */
void
tunnel_lanes_drop_all(TunnelSession *s, bool keep_retiring)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &s->lanes)
	{
		TunnelSession *lane = tunnel_lane_from_node(iter.cur);

		if (keep_retiring && lane->retiring)
			continue;
		drop_lane(lane);
	}
}

/*
 * A lane could not connect or lost its connection: its clients with a
 * channel are closed, the others go back to wait; the tunnel is not
 * affected.  The next lane waits a while, longer after each failure.
 */
void
tunnel_lane_failed(TunnelSession *s, const char *message, bool penalised)
{
	TunnelSession *p = s->primary;
	TimestampTz now = GetCurrentTimestamp();
	long		delay_ms;

	ereport(LOG,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("tunnel \"%s\": extra session to %s port %d failed",
					s->def->name, s->def->ssh_host, s->def->ssh_port),
			 errdetail_internal("%s", message)));
	tunnel_lanes_return_waiting(s);
	tunnel_session_close_connection(s, false);
	s->fail_pending = false;
	s->phase = PHASE_DONE;
	/* A previous login that ended says nothing of new lanes' chances. */
	if (s->retiring)
		return;
	p->failures_of_lanes++;
	/* A login sshd penalises waits as long (retry_delay_ms in session.c). */
	if (penalised)
		delay_ms = tunnel_session_backoff_ms(p->failures_of_lanes,
											 REFUSED_FIRST_MS, REFUSED_MAX_MS);
	else
		delay_ms = LANE_RETRY_MS << Min(p->failures_of_lanes - 1, 4);
	p->lane_retry_at = TimestampTzPlusMilliseconds(now, delay_ms);
}

static TunnelSession *
new_lane(TunnelSession *p)
{
	MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(p));
	TunnelSession *lane = tunnel_session_create(p->def, NULL);

	MemoryContextSwitchTo(old);
	lane->primary = p;
	strlcpy(lane->host_key, p->host_key, sizeof(lane->host_key));
	lane->authed_next = p->authed_next;
	dlist_push_tail(&p->lanes, &lane->lane_node);
	p->nlanes++;
	tunnel_status_set_extra_sessions(p->slot, p->nlanes);
	return lane;
}

static void
start_lane(TunnelSession *p)
{
	(void) new_lane(p);
	ereport(DEBUG1,
			(errmsg("tunnel \"%s\": opening extra session %d to %s port %d",
					p->def->name, p->nlanes, p->def->ssh_host,
					p->def->ssh_port)));
}

/* The channel holding s's open slot, or NULL (free, or the keepalive's). */
static TunnelChannel *
opening_channel(TunnelSession *s)
{
	const void *opener = tunnel_turn_opener(&s->turn);

	if (opener == NULL || opener == s)
		return NULL;
	return (TunnelChannel *) unconstify(void *, opener);
}

static bool
answer_for(TargetAnswer *a, TunnelChannel *f)
{
	return a->port == channel_remote_port(f) &&
		strcmp(a->host, channel_remote_host(f)) == 0;
}

/* When the bastion last answered an open to f's target (0: never). */
static TimestampTz
target_answered_at(TunnelSession *p, TunnelChannel *f)
{
	ListCell   *lc;

	foreach(lc, p->answers)
	{
		TargetAnswer *a = lfirst(lc);

		if (answer_for(a, f))
			return a->at;
	}
	return 0;
}

/* ---------- what a login permits ---------- */

void
tunnel_lanes_note_login(TunnelSession *s)
{
	MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(s));
	ListCell   *lc;

	tunnel_lanes_forget_login(s);
	foreach(lc, s->def->forwards)
	{
		ForwardDef *fwd = lfirst(lc);
		LoginTarget *t = palloc(sizeof(LoginTarget));

		t->host = pstrdup(fwd->remote_host);
		t->port = fwd->remote_port;
		t->prohibited = false;
		s->login_targets = lappend(s->login_targets, t);
	}
	MemoryContextSwitchTo(old);
}

void
tunnel_lanes_forget_login(TunnelSession *s)
{
	ListCell   *lc;

	foreach(lc, s->login_targets)
		pfree(((LoginTarget *) lfirst(lc))->host);
	list_free_deep(s->login_targets);
	s->login_targets = NIL;
}

/* f's target as s's login knew it, or NULL: added to the catalog since. */
static LoginTarget *
login_target(TunnelSession *s, TunnelChannel *f)
{
	ListCell   *lc;

	foreach(lc, s->login_targets)
	{
		LoginTarget *t = lfirst(lc);

		if (t->port == channel_remote_port(f) &&
			strcmp(t->host, channel_remote_host(f)) == 0)
			return t;
	}
	return NULL;
}

/* Has the catalog f's target now?  (A forward dropped meanwhile: no.) */
static bool
catalog_has_target(TunnelSession *s, TunnelChannel *f)
{
	ListCell   *lc;

	foreach(lc, s->def->forwards)
	{
		ForwardDef *fwd = lfirst(lc);

		if (fwd->remote_port == channel_remote_port(f) &&
			strcmp(fwd->remote_host, channel_remote_host(f)) == 0)
			return true;
	}
	return false;
}

/* May an open of f be tried on s, as far as s's login goes? */
static bool
login_permits(TunnelSession *s, TunnelChannel *f)
{
	LoginTarget *t = login_target(s, f);

	return t != NULL && !t->prohibited;
}

/*
 * Would a new login of the tunnel's session p serve f where p's does not?
 * When f's target was added to the catalog after p logged in: the line on
 * the bastion may have been replaced since (once per change of the
 * targets).  When the target was refused on p's login although the catalog
 * had it then: after a backoff, the line may have been pasted meanwhile.
 */
static bool
relogin_would_serve(TunnelSession *p, TunnelChannel *f, TimestampTz now)
{
	LoginTarget *t;

	if (p->primary != NULL || p->phase != PHASE_READY || p->key_check ||
		!catalog_has_target(p, f))
		return false;
	t = login_target(p, f);
	if (t == NULL)
		return true;
	return t->prohibited && now >= p->relogin_at;
}

/*
 * Log in again for the targets of waiting clients (relogin_would_serve):
 * p's connection goes to a new lane that retires it, and p connects anew.
 * Called after a pass of p, outside its iteration over its channels.
 */
void
tunnel_lanes_relogin(TunnelSession *p)
{
	TimestampTz now = GetCurrentTimestamp();
	TunnelSession *lane;
	dlist_iter	iter;
	bool		added = false;
	bool		wanted = false;
	long		delay_ms;

	p->relogin_wanted = false;
	if (p->primary != NULL || p->phase != PHASE_READY || p->fail_pending)
		return;
	/* Still wanted?  And for a target added since, or one refused? */
	dlist_foreach(iter, &p->channels)
	{
		TunnelChannel *f = channel_from_node(iter.cur);

		if (!channel_waits_for_session(f) ||
			tunnel_turn_holds_open(&p->turn, f) ||
			!relogin_would_serve(p, f, now))
			continue;
		wanted = true;
		if (login_target(p, f) == NULL)
			added = true;
	}
	if (!wanted)
		return;

	/* A target still refused waits longer each time; a new one resets. */
	p->relogins = added ? 0 : p->relogins + 1;
	delay_ms = Min((long) RELOGIN_FIRST_MS << Min(p->relogins, 10),
				   (long) RELOGIN_MAX_MS);
	p->relogin_at = TimestampTzPlusMilliseconds(now, delay_ms);

	ereport(LOG,
			(errmsg("tunnel \"%s\": logging in again to %s port %d for a target %s",
					p->def->name, p->def->ssh_host, p->def->ssh_port,
					added ? "added since the session logged in" :
					"the bastion refused on the last login"),
			 errdetail("sshd grants a key's permitopen targets at login; connections already established stay on the previous session until they end.")));

	lane = new_lane(p);
	lane->retiring = true;
	tunnel_session_move_connection(p, lane);
	/* Should the new login fail, the waiting clients wait for the next. */
	p->lost_at = now;
	p->phase = PHASE_IDLE;		/* the next tick starts the attempt */
}

void
tunnel_session_open_took(TunnelSession *s, long elapsed_ms)
{
	TunnelSession *p = tunnel_lanes_pool_of(s);

	p->open_ms = p->open_ms == 0 ? elapsed_ms :
		p->open_ms + (elapsed_ms - p->open_ms) / 8;
}

void
tunnel_session_open_answered(TunnelSession *s, TunnelChannel *f)
{
	TunnelSession *p = tunnel_lanes_pool_of(s);
	MemoryContext old;
	ListCell   *lc;
	TargetAnswer *a;
	LoginTarget *t = login_target(s, f);

	/*
	 * Refused for want of permission on this login?  The pump that got the
	 * answer was the last libssh2 call, so the session's last error is the
	 * refusal's (RFC 4254 reason 1, as libssh2 words it).
	 */
	if (t != NULL && s->ssh != NULL && channel_ssh_channel(f) == NULL &&
		!channel_wants_open(f))
	{
		char	   *msg = NULL;

		if (libssh2_session_last_error(s->ssh, &msg, NULL, 0) ==
			LIBSSH2_ERROR_CHANNEL_FAILURE && msg != NULL &&
			strstr(msg, "administratively prohibited") != NULL)
			t->prohibited = true;
	}

	foreach(lc, p->answers)
	{
		a = lfirst(lc);
		if (answer_for(a, f))
		{
			a->at = GetCurrentTimestamp();
			return;
		}
	}
	old = MemoryContextSwitchTo(GetMemoryChunkContext(p));
	a = palloc(sizeof(TargetAnswer));
	a->host = pstrdup(channel_remote_host(f));
	a->port = channel_remote_port(f);
	a->at = GetCurrentTimestamp();
	p->answers = lappend(p->answers, a);
	MemoryContextSwitchTo(old);
}

/*
 * Has an open to f's target been pending for SLOW_OPEN_MS somewhere in the
 * pool, with no open to it answered since?  Then f waits for its answer
 * instead of taking a lane of its own: a target that drops packets holds
 * one open slot however many clients try it, and the others stay free for
 * the targets that answer.  A target that is only busy keeps answering and
 * keeps the lanes.
 */
static bool
slow_open_on(TunnelSession *lane, TunnelChannel *f, TimestampTz now,
			 TimestampTz answered)
{
	TunnelChannel *o = opening_channel(lane);

	return o != NULL && o != f && channel_same_target(o, f) &&
		channel_open_since(o) != 0 &&
		now - channel_open_since(o) >= SLOW_OPEN_MS * 1000L &&
		answered < channel_open_since(o);
}

static bool
target_is_slow(TunnelSession *p, TunnelChannel *f, TimestampTz now)
{
	TimestampTz answered = target_answered_at(p, f);
	dlist_iter	iter;

	if (slow_open_on(p, f, now, answered))
		return true;
	dlist_foreach(iter, &p->lanes)
	{
		if (slow_open_on(tunnel_lane_from_node(iter.cur), f, now, answered))
			return true;
	}
	return false;
}

/*
 * May f open on s now?  Not while its target is slow (above); and not on a
 * login that would refuse it when a new login may not: f waits for that one
 * (tunnel_lanes_relogin, after this pass).
 */
bool
tunnel_session_open_allowed(TunnelSession *s, TunnelChannel *f)
{
	TimestampTz now = GetCurrentTimestamp();

	if (relogin_would_serve(s, f, now))
	{
		s->relogin_wanted = true;
		return false;
	}
	return !target_is_slow(tunnel_lanes_pool_of(s), f, now);
}

/*
 * A connected lane with no open in flight whose login permits f's target,
 * or NULL.
 */
static TunnelSession *
free_lane(TunnelSession *p, TunnelChannel *f, bool *connecting)
{
	dlist_iter	iter;

	*connecting = false;
	dlist_foreach(iter, &p->lanes)
	{
		TunnelSession *lane = tunnel_lane_from_node(iter.cur);

		if (lane->retiring)
			continue;
		if (lane->phase == PHASE_READY && !lane->fail_pending &&
			tunnel_turn_opener(&lane->turn) == NULL &&
			login_permits(lane, f))
			return lane;
		if (lane->phase != PHASE_READY && lane->phase != PHASE_DONE)
			*connecting = true;
	}
	return NULL;
}

/*
 * Clients waiting for the open slot of the tunnel's session, which another
 * client's open holds, move to a lane with a free slot.  When there is none
 * and the open in flight has taken LANE_WAIT_MS, one more lane is started,
 * up to tunnel_ssh.max_extra_sessions.
 */
void
tunnel_lanes_dispatch(TunnelSession *p)
{
	TimestampTz now = GetCurrentTimestamp();
	TunnelChannel *busy = opening_channel(p);
	dlist_mutable_iter iter;
	bool		want_lane = false;
	bool		connecting;
	long		wait_ms;
	TimestampTz since = now;

	if (p->phase != PHASE_READY || busy == NULL)
		return;
	dlist_foreach_modify(iter, &p->channels)
	{
		TunnelChannel *f = channel_from_node(iter.cur);
		TunnelSession *lane;

		if (f == busy || channel_waiting_since(f) == 0 ||
			target_is_slow(p, f, now))
			continue;
		lane = free_lane(p, f, &connecting);
		if (lane == NULL)
		{
			/* The first one left waiting is the longest waiting. */
			want_lane = true;
			since = channel_waiting_since(f);
			break;
		}
		dlist_delete(iter.cur);
		channel_move(f, &lane->turn, lane);
		dlist_push_tail(&lane->channels, iter.cur);
		(void) tunnel_turn_claim_open(&lane->turn, f);
		lane->idle_since = 0;
		tunnel_session_mark_dirty(lane);
	}
	if (!want_lane || connecting || p->nlanes >= tunnel_max_extra_sessions ||
		now < p->lane_retry_at)
		return;
	wait_ms = Min(Max(LANE_WAIT_MS, LANE_WAIT_FACTOR * p->open_ms),
				  LANE_WAIT_MAX_MS);
	if (channel_open_since(busy) != 0)
	{
		since = Min(since, channel_open_since(busy));
		if (now - since < (TimestampTz) wait_ms * 1000)
		{
			/* Most opens are answered in a round trip: give them time. */
			p->dispatch_at = since + (TimestampTz) wait_ms * 1000;
			return;
		}
	}
	start_lane(p);
}

/* Reap failed lanes, close idle ones, run the others' timers. */
long
tunnel_lanes_tick(TunnelSession *p, TimestampTz now)
{
	dlist_mutable_iter iter;
	long		timeout = -1;

	if (p->dispatch_at != 0)
	{
		if (now >= p->dispatch_at)
		{
			p->dispatch_at = 0;
			tunnel_session_mark_dirty(p);
		}
		else
			timeout = tunnel_ms_until(p->dispatch_at, now);
	}
	dlist_foreach_modify(iter, &p->lanes)
	{
		TunnelSession *lane = tunnel_lane_from_node(iter.cur);
		long		t;

		if (lane->phase == PHASE_DONE)
		{
			drop_lane(lane);
			continue;
		}
		/* A previous login is closed with its last channel. */
		if (lane->retiring && dlist_is_empty(&lane->channels) &&
			opening_channel(lane) == NULL)
		{
			ereport(DEBUG1,
					(errmsg("tunnel \"%s\": previous session closed, its last connection ended",
							p->def->name)));
			drop_lane(lane);
			continue;
		}
		if (lane->phase == PHASE_READY && dlist_is_empty(&lane->channels) &&
			opening_channel(lane) == NULL)
		{
			if (lane->idle_since == 0)
				lane->idle_since = now;
			if (now - lane->idle_since >= LANE_IDLE_MS * 1000L)
			{
				drop_lane(lane);
				continue;
			}
			t = tunnel_ms_until(lane->idle_since + LANE_IDLE_MS * 1000L, now);
			if (timeout < 0 || t < timeout)
				timeout = t;
		}
		else
			lane->idle_since = 0;
		t = tunnel_session_tick(lane, now);
		if (t >= 0 && (timeout < 0 || t < timeout))
			timeout = t;
	}
	return timeout;
}
