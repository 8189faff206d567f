/*-------------------------------------------------------------------------
 *
 * lanes.c
 *	  Extra SSH sessions of a tunnel (lanes), so that no client's channel
 *	  open waits behind another's.
 *
 * libssh2 runs one channel open at a time per session, and sshd answers a
 * direct-tcpip open only once its own connect to the target has ended: up
 * to minutes for a target that drops packets.  So the tunnel's session
 * (the tunnel's own connection, pool.c) may add a few lanes to the same
 * bastion, same key, same host key: a client whose open would wait behind
 * another's moves to a lane with no open in flight (tunnel_lanes_dispatch),
 * lanes are started on demand, up to tunnel_ssh.max_extra_sessions, and
 * closed when idle.  A lane that fails hands its waiting clients back to the
 * tunnel's connection; the tunnel is not affected.  The opens' answers per target are kept here too, so
 * that clients of a target that does not answer wait for the open already
 * pending instead of taking every lane.
 *
 * sshd fixes a key's permissions (the permitopen list of its line) when the
 * session logs in.  A forward added later is refused "administratively
 * prohibited" on a session that logged in before, even once the DBA has
 * pasted the new line.  So each session remembers the catalog's targets at
 * its login; a client of a target added since makes the tunnel's connection
 * log in again (tunnel_lanes_relogin): its connection, with every
 * established channel, moves to a retiring lane that takes no new opens and
 * is closed when its last channel ends, and the tunnel's connection connects
 * anew while the waiting clients wait for it.  That is one login per change of the
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
#include "conn.h"
#include "lanes.h"
#include "pool_state.h"
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

/* The last time the bastion answered an open to one target. */
typedef struct TargetAnswer
{
	char	   *host;
	int			port;
	TimestampTz at;
} TargetAnswer;

static TunnelConn *
lane_from_node(dlist_node *node)
{
	return dlist_container(TunnelConn, owner_node, node);
}

void
tunnel_lanes_return_waiting(TunnelPool *p, TunnelConn *lane)
{
	tunnel_conn_move_waiting(lane, p->conn);
}

static void
drop_lane(TunnelPool *p, TunnelConn *lane)
{
	p->nlanes--;
	tunnel_status_set_extra_sessions(p->slot, p->nlanes);
	dlist_delete(&lane->owner_node);
	tunnel_conn_destroy(lane);
}

void
tunnel_lanes_drop_all(TunnelPool *p, bool keep_retiring)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &p->lanes)
	{
		TunnelConn *lane = lane_from_node(iter.cur);

		if (keep_retiring && lane->retiring)
			continue;
		drop_lane(p, lane);
	}
}

/*
 * A lane could not connect or lost its connection: its clients with a
 * channel are closed, the others go back to wait; the tunnel is not
 * affected.  The next lane waits a while, longer after each failure.  The
 * lane, closed, is reaped at the next tick.
 */
void
tunnel_lane_ended(TunnelPool *p, TunnelConn *lane, const TunnelConnEnd *end)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		penalised = end->refused ||
		end->state == TUNNEL_STATE_AUTH_FAILED ||
		end->state == TUNNEL_STATE_HOST_KEY_MISMATCH;
	long		delay_ms;

	ereport(LOG,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("tunnel \"%s\": extra session to %s port %d failed",
					p->def->name, tunnel_pool_bastion(p)->host,
					tunnel_pool_bastion(p)->port),
			 errdetail_internal("%s", end->message)));
	tunnel_lanes_return_waiting(p, lane);
	tunnel_conn_close(lane, false, false);
	/* A previous login that ended says nothing of new lanes' chances. */
	if (lane->retiring)
		return;
	p->failures_of_lanes++;
	/* A login sshd penalises waits as long (pool.c's retry delay). */
	if (penalised)
		delay_ms = tunnel_backoff_ms(p->failures_of_lanes,
									 REFUSED_FIRST_MS, REFUSED_MAX_MS);
	else
		delay_ms = LANE_RETRY_MS << Min(p->failures_of_lanes - 1, 4);
	p->lane_retry_at = TimestampTzPlusMilliseconds(now, delay_ms);
}

TunnelConn *
tunnel_lanes_add(TunnelPool *p)
{
	MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(p));
	TunnelConn *lane = tunnel_conn_create(p->def, p, p->ops);
	dlist_iter	iter;
	bool		taken;

	MemoryContextSwitchTo(old);
	/* The smallest number no other lane has: lanes come and go. */
	lane->lane = 0;
	do
	{
		lane->lane++;
		taken = false;
		dlist_foreach(iter, &p->lanes)
			if (dlist_container(TunnelConn, owner_node, iter.cur)->lane == lane->lane)
				taken = true;
	} while (taken);
	dlist_push_tail(&p->lanes, &lane->owner_node);
	p->nlanes++;
	tunnel_status_set_extra_sessions(p->slot, p->nlanes);
	return lane;
}

static bool
answer_for(TargetAnswer *a, TunnelChannel *f)
{
	return a->port == channel_remote_port(f) &&
		strcmp(a->host, channel_remote_host(f)) == 0;
}

/* When the bastion last answered an open to f's target (0: never). */
static TimestampTz
target_answered_at(TunnelPool *p, TunnelChannel *f)
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

void
tunnel_lanes_forget(TunnelPool *p)
{
	ListCell   *lc;

	foreach(lc, p->answers)
		pfree(((TargetAnswer *) lfirst(lc))->host);
	list_free_deep(p->answers);
	p->answers = NIL;
}

/* ---------- what a login permits ---------- */

void
tunnel_lanes_note_login(TunnelPool *p, TunnelConn *s)
{
	MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(s));
	ListCell   *lc;

	Assert(s->login_targets == NIL);
	foreach(lc, p->def->forwards)
	{
		ForwardDef *fwd = lfirst(lc);
		TunnelLoginTarget *t = palloc(sizeof(TunnelLoginTarget));

		t->host = pstrdup(fwd->remote_host);
		t->port = fwd->remote_port;
		t->prohibited = false;
		s->login_targets = lappend(s->login_targets, t);
	}
	MemoryContextSwitchTo(old);
}

/* f's target as s's login knew it, or NULL: added to the catalog since. */
static TunnelLoginTarget *
login_target(TunnelConn *s, TunnelChannel *f)
{
	ListCell   *lc;

	foreach(lc, s->login_targets)
	{
		TunnelLoginTarget *t = lfirst(lc);

		if (t->port == channel_remote_port(f) &&
			strcmp(t->host, channel_remote_host(f)) == 0)
			return t;
	}
	return NULL;
}

/* Has the catalog f's target now?  (A forward dropped meanwhile: no.) */
static bool
catalog_has_target(TunnelPool *p, TunnelChannel *f)
{
	ListCell   *lc;

	foreach(lc, p->def->forwards)
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
login_permits(TunnelConn *s, TunnelChannel *f)
{
	TunnelLoginTarget *t = login_target(s, f);

	return t != NULL && !t->prohibited;
}

/*
 * Would a new login of the tunnel's connection serve f where its present
 * one does not?  When f's target was added to the catalog after it logged
 * in: the line on the bastion may have been replaced since (once per change
 * of the targets).  When the target was refused on its login although the
 * catalog had it then: after a backoff, the line may have been pasted
 * meanwhile.
 */
static bool
relogin_would_serve(TunnelPool *p, TunnelChannel *f, TimestampTz now)
{
	TunnelLoginTarget *t;

	if (!tunnel_pool_serving(p) || !catalog_has_target(p, f))
		return false;
	t = login_target(p->conn, f);
	if (t == NULL)
		return true;
	return t->prohibited && now >= p->relogin_at;
}

bool
tunnel_lanes_relogin(TunnelPool *p)
{
	TimestampTz now = GetCurrentTimestamp();
	TunnelConn *c = p->conn;
	TunnelConn *lane;
	dlist_iter	iter;
	bool		added = false;
	bool		wanted = false;
	long		delay_ms;

	p->relogin_wanted = false;
	if (!tunnel_pool_serving(p) || tunnel_conn_failing(c))
		return false;
	/* Still wanted?  And for a target added since, or one refused? */
	dlist_foreach(iter, &c->channels)
	{
		TunnelChannel *f = channel_from_node(iter.cur);

		if (!channel_waits_for_session(f) ||
			tunnel_turn_holds_open(&c->turn, f) ||
			!relogin_would_serve(p, f, now))
			continue;
		wanted = true;
		if (login_target(c, f) == NULL)
			added = true;
	}
	if (!wanted)
		return false;

	/* A target still refused waits longer each time; a new one resets. */
	p->relogins = added ? 0 : p->relogins + 1;
	delay_ms = Min((long) RELOGIN_FIRST_MS << Min(p->relogins, 10),
				   (long) RELOGIN_MAX_MS);
	p->relogin_at = TimestampTzPlusMilliseconds(now, delay_ms);

	ereport(LOG,
			(errmsg("tunnel \"%s\": logging in again to %s port %d for a target %s",
					p->def->name, tunnel_pool_bastion(p)->host,
					tunnel_pool_bastion(p)->port, added ? "added since the session logged in" :
					"the bastion refused on the last login"),
			 errdetail("sshd grants a key's permitopen targets at login; connections already established stay on the previous session until they end.")));

	lane = tunnel_lanes_add(p);
	lane->retiring = true;
	tunnel_conn_move_connection(c, lane);
	return true;
}

void
tunnel_lanes_open_took(TunnelPool *p, long elapsed_ms)
{
	p->open_ms = p->open_ms == 0 ? elapsed_ms :
		p->open_ms + (elapsed_ms - p->open_ms) / 8;
}

void
tunnel_lanes_open_answered(TunnelPool *p, TunnelConn *s, TunnelChannel *f)
{
	MemoryContext old;
	ListCell   *lc;
	TargetAnswer *a;
	TunnelLoginTarget *t = login_target(s, f);

	/*
	 * Refused for want of permission on this login?  The pump that got the
	 * answer was the last libssh2 call, so the connection's last error is
	 * the refusal's (RFC 4254 reason 1, as libssh2 words it).
	 */
	if (t != NULL && channel_ssh_channel(f) == NULL && !channel_wants_open(f))
	{
		char	   *msg;

		if (tunnel_conn_last_error(s, &msg) == LIBSSH2_ERROR_CHANNEL_FAILURE &&
			msg != NULL && strstr(msg, "administratively prohibited") != NULL)
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
slow_open_on(TunnelConn *lane, TunnelChannel *f, TimestampTz now,
			 TimestampTz answered)
{
	TunnelChannel *o = tunnel_conn_opening_channel(lane);

	return o != NULL && o != f && channel_same_target(o, f) &&
		channel_open_since(o) != 0 &&
		now - channel_open_since(o) >= SLOW_OPEN_MS * 1000L &&
		answered < channel_open_since(o);
}

static bool
target_is_slow(TunnelPool *p, TunnelChannel *f, TimestampTz now)
{
	TimestampTz answered = target_answered_at(p, f);
	dlist_iter	iter;

	if (slow_open_on(p->conn, f, now, answered))
		return true;
	dlist_foreach(iter, &p->lanes)
	{
		if (slow_open_on(lane_from_node(iter.cur), f, now, answered))
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
tunnel_lanes_open_allowed(TunnelPool *p, TunnelConn *s, TunnelChannel *f)
{
	TimestampTz now = GetCurrentTimestamp();

	if (s == p->conn && relogin_would_serve(p, f, now))
	{
		p->relogin_wanted = true;
		return false;
	}
	return !target_is_slow(p, f, now);
}

/*
 * A connected lane with no open in flight whose login permits f's target,
 * or NULL.
 */
static TunnelConn *
free_lane(TunnelPool *p, TunnelChannel *f, bool *connecting)
{
	dlist_iter	iter;

	*connecting = false;
	dlist_foreach(iter, &p->lanes)
	{
		TunnelConn *lane = lane_from_node(iter.cur);

		if (lane->retiring)
			continue;
		if (lane->phase == CONN_READY && !tunnel_conn_failing(lane) &&
			tunnel_turn_opener(&lane->turn) == NULL &&
			login_permits(lane, f))
			return lane;
		if (lane->phase == CONN_CONNECTING)
			*connecting = true;
	}
	return NULL;
}

/*
 * Clients waiting for the open slot of the tunnel's connection, which
 * another client's open holds, move to a lane with a free slot.  When there
 * is none and the open in flight has taken LANE_WAIT_MS, one more lane is
 * wanted, up to tunnel_ssh.max_extra_sessions.
 */
bool
tunnel_lanes_dispatch(TunnelPool *p)
{
	TimestampTz now = GetCurrentTimestamp();
	TunnelConn *c = p->conn;
	TunnelChannel *busy = tunnel_conn_opening_channel(c);
	dlist_mutable_iter iter;
	bool		want_lane = false;
	bool		connecting;
	long		wait_ms;
	TimestampTz since = now;

	if (!tunnel_pool_serving(p) || busy == NULL)
		return false;
	dlist_foreach_modify(iter, &c->channels)
	{
		TunnelChannel *f = channel_from_node(iter.cur);
		TunnelConn *lane;

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
		tunnel_conn_move_client(c, f, lane);
		(void) tunnel_turn_claim_open(&lane->turn, f);
		lane->idle_since = 0;
	}
	if (!want_lane || connecting || p->nlanes >= tunnel_max_extra_sessions ||
		now < p->lane_retry_at)
		return false;
	wait_ms = Min(Max(LANE_WAIT_MS, LANE_WAIT_FACTOR * p->open_ms),
				  LANE_WAIT_MAX_MS);
	if (channel_open_since(busy) != 0)
	{
		since = Min(since, channel_open_since(busy));
		if (now - since < (TimestampTz) wait_ms * 1000)
		{
			/* Most opens are answered in a round trip: give them time. */
			p->dispatch_at = since + (TimestampTz) wait_ms * 1000;
			return false;
		}
	}
	return true;
}

long
tunnel_lanes_tick(TunnelPool *p, TimestampTz now)
{
	dlist_mutable_iter iter;
	long		timeout = -1;

	if (p->dispatch_at != 0)
	{
		if (now >= p->dispatch_at)
		{
			p->dispatch_at = 0;
			tunnel_conn_mark_dirty(p->conn);
		}
		else
			timeout = tunnel_ms_until(p->dispatch_at, now);
	}
	dlist_foreach_modify(iter, &p->lanes)
	{
		TunnelConn *lane = lane_from_node(iter.cur);
		long		t;

		/* Ended: reaped here, outside its own calls. */
		if (lane->phase == CONN_IDLE)
		{
			drop_lane(p, lane);
			continue;
		}
		/* A previous login is closed with its last channel. */
		if (lane->retiring && dlist_is_empty(&lane->channels) &&
			tunnel_conn_opening_channel(lane) == NULL)
		{
			ereport(DEBUG1,
					(errmsg("tunnel \"%s\": previous session closed, its last connection ended",
							p->def->name)));
			drop_lane(p, lane);
			continue;
		}
		if (lane->phase == CONN_READY && dlist_is_empty(&lane->channels) &&
			tunnel_conn_opening_channel(lane) == NULL)
		{
			if (lane->idle_since == 0)
				lane->idle_since = now;
			if (now - lane->idle_since >= LANE_IDLE_MS * 1000L)
			{
				drop_lane(p, lane);
				continue;
			}
			t = tunnel_ms_until(lane->idle_since + LANE_IDLE_MS * 1000L, now);
			timeout = tunnel_min_timeout(timeout, t);
		}
		else
			lane->idle_since = 0;
		timeout = tunnel_min_timeout(timeout,
									 tunnel_conn_expire_waiting(lane, now,
																tunnel_pool_serving(p)));
		timeout = tunnel_min_timeout(timeout, tunnel_conn_tick(lane, now));
	}
	return timeout;
}
