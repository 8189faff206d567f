/*-------------------------------------------------------------------------
 *
 * pool.c
 *	  A tunnel's pool: its own connection to the bastion (conn.c), the lanes
 *	  beside it (lanes.c), the clients waiting for a channel, admission,
 *	  backoff and failure reports, the host key trusted at first use, and
 *	  the checks of a rotation's new key.
 *
 * A connection reports its end here (TunnelConnEnd), whatever it was doing:
 * the pool decides what follows.  The tunnel's status in shared memory is
 * written here only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "cert.h"
#include "conn.h"
#include "hostkeys.h"
#include "lanes.h"
#include "pool.h"
#include "pool_state.h"
#include "settings.h"
#include "stats.h"
#include "tunnel_limits.h"

/* A host key that could not be written is tried again after this. */
#define HOST_KEY_RETRY_MS	2000

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

static TunnelPoolLookup pool_lookup = NULL;
static const TunnelConnOwnerOps pool_ops;

void
tunnel_pool_set_lookup(TunnelPoolLookup lookup)
{
	pool_lookup = lookup;
}

static void
set_state(TunnelPool *p, TunnelState state, const char *error)
{
	tunnel_status_set_state(p->slot, state, error);
}

/* ---------- starting a connection ---------- */

/*
 * What bastion i must present: the pins, which serve every bastion; else
 * the key recorded for it (the tunnel's own for the first), or the one
 * trusted at its first use; NULL if none yet.
 */
static const char *
expected_host_keys(TunnelPool *p, int i)
{
	const TunnelDef *def = p->def;

	if (def->host_key_pinned || (i == 0 && def->host_key_fingerprint))
		return def->host_key_fingerprint;
	if (i > 0 && def->bastions[i].host_key_fingerprint)
		return def->bastions[i].host_key_fingerprint;
	return p->bastions[i].host_key[0] != '\0' ? p->bastions[i].host_key : NULL;
}

/* The host key algorithms to ask bastion i for first, as recorded. */
static const char *
expected_algorithms(TunnelPool *p, int i)
{
	if (i == 0 || p->def->host_key_pinned)
		return p->def->host_key_algorithms;
	return p->def->bastions[i].host_key_algorithms;
}

/* Show bastion i as tunnel_bastion_status() does. */
static void
publish_bastion(TunnelPool *p, int i)
{
	tunnel_status_set_bastion(p->slot, i, p->nbastions, &p->bastions[i].status);
}

static void
set_bastion_state(TunnelPool *p, int i, TunnelBastionState state)
{
	p->bastions[i].status.state = state;
	publish_bastion(p, i);
}

/*
 * The bastion to try now: the first of the list not waiting out a backoff.
 * When all are (a client brought the attempt forward), the one that failed
 * in a way sshd does not penalise and is due soonest.
 */
static int
pick_bastion(TunnelPool *p, TimestampTz now, bool any)
{
	int			best = -1;

	for (int i = 0; i < p->nbastions; i++)
		if (p->bastions[i].retry_at <= now)
			return i;
	if (!any)
		return -1;
	for (int i = 0; i < p->nbastions; i++)
	{
		const PoolBastion *b = &p->bastions[i];

		if (best < 0 ||
			(!b->penalised && p->bastions[best].penalised) ||
			(b->penalised == p->bastions[best].penalised &&
			 b->retry_at < p->bastions[best].retry_at))
			best = i;
	}
	return best;
}

/*
 * Start c to the tunnel's bastion.  A tunnel with "via" reaches its bastion
 * as ssh -J does: through a direct-tcpip channel of the jump tunnel's
 * connection.  libssh2 wants a socket, so it gets one end of a socketpair,
 * and the jump tunnel carries the other end like any client connection.
 * The jump host resolves the bastion's name, as with ssh -J.  Should the
 * jump connection fail, its end closes and c fails with it; a chain that
 * loops never starts, since each link waits for the next to be connected.
 * Returns false if c ended at once for want of a jump tunnel.
 */
bool
tunnel_pool_start_conn(const TunnelDef *def, TunnelConn *c,
					   const TunnelConnPlan *plan, TimestampTz now)
{
	TunnelPool *jump;
	char		text[TUNNEL_ERROR_MAXLEN];
	int			sv[2];

	if (def->via == NULL)
	{
		tunnel_conn_start(c, plan, now);
		return true;
	}
	jump = pool_lookup ? pool_lookup(def->via) : NULL;
	if (jump == NULL || !tunnel_pool_serving(jump))
	{
		if (jump == NULL)
			snprintf(text, sizeof(text),
					 "jump tunnel \"%s\" is not running (it does not exist, or is disabled or invalid)",
					 def->via);
		else
			snprintf(text, sizeof(text), "jump tunnel \"%s\" is not connected",
					 def->via);
		tunnel_conn_end_now(c, TUNNEL_STATE_UNREACHABLE, text);
		return false;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
	{
		snprintf(text, sizeof(text), "could not create a socket pair: %m");
		tunnel_conn_end_now(c, TUNNEL_STATE_UNREACHABLE, text);
		return true;
	}
	tunnel_pool_add_client(jump, sv[1], plan->host, plan->port, NULL);
	tunnel_conn_start_on(c, plan, sv[0], now);
	return true;
}

/*
 * The tunnel's connection offers a rotation's new key first, its current
 * one after; a lane offers first the key the tunnel's connection was
 * accepted with, and trusts only the host key that one checked.
 */
static void
plan_for(TunnelPool *p, bool lane, TunnelConnPlan *plan)
{
	plan->host = tunnel_pool_bastion(p)->host;
	plan->port = tunnel_pool_bastion(p)->port;
	plan->host_keys = expected_host_keys(p, p->active);
	plan->host_key_algorithms = expected_algorithms(p, p->active);
	plan->host_key_try = p->bastions[p->active].host_key_try;
	plan->trust_first_use = !lane;
	plan->keys = !lane || p->conn->authed_next ?
		CONN_KEYS_NEXT_FIRST : CONN_KEYS_CURRENT;
}

static void
start_attempt(TunnelPool *p, TimestampTz now)
{
	TunnelConnPlan plan;

	p->last_attempt = now;
	p->active = pick_bastion(p, now, true);
	tunnel_status_count_attempt(p->slot);
	set_state(p, TUNNEL_STATE_CONNECTING, NULL);
	set_bastion_state(p, p->active, TUNNEL_BASTION_CONNECTING);
	p->phase = POOL_ACTIVE;
	plan_for(p, false, &plan);
	if (!tunnel_pool_start_conn(p->def, p->conn, &plan, now))
	{
		/* Not this bastion's fault: look again soon, without backing off. */
		for (int i = 0; i < p->nbastions; i++)
		{
			p->bastions[i].failures = 0;
			p->bastions[i].retry_at = 0;
		}
		p->retry_at = TimestampTzPlusMilliseconds(now, 1000);
		p->phase = POOL_BACKOFF;
	}
}

static void
start_lane(TunnelPool *p)
{
	TunnelConn *lane = tunnel_lanes_add(p);
	TunnelConnPlan plan;

	ereport(DEBUG1,
			(errmsg("tunnel \"%s\": opening extra session %d to %s port %d",
					p->def->name, p->nlanes, tunnel_pool_bastion(p)->host,
					tunnel_pool_bastion(p)->port)));
	plan_for(p, true, &plan);
	(void) tunnel_pool_start_conn(p->def, lane, &plan, GetCurrentTimestamp());
}

/* ---------- the end of the tunnel's connection ---------- */

/*
 * A bastion that was serving until moments ago (sshd restarted, a network
 * blip) is likely back within a second or two.  Clients that connect in
 * that window, or were waiting for their channel when the connection fell,
 * wait for the next attempt instead of being closed: their connection then
 * just takes a little longer.  The window is tunnel_ssh.connect_timeout
 * from the loss; a bastion down for longer fails new clients at once, as
 * does one that never worked.
 */
static bool
holding_clients(TunnelPool *p, TimestampTz now)
{
	return p->lost_at != 0 &&
		now - p->lost_at < (TimestampTz) tunnel_connect_timeout * USECS_PER_SEC;
}

/* Attempts for waiting clients: right away, but at most one a second. */
static TimestampTz
next_retry_for_clients(TunnelPool *p, TimestampTz now)
{
	return Max(now, p->last_attempt + USECS_PER_SEC);
}

static long
retry_delay_ms(int failures, TunnelState state, bool refused)
{
	if (refused)
		return tunnel_backoff_ms(failures, REFUSED_FIRST_MS, REFUSED_MAX_MS);
	if (state == TUNNEL_STATE_AUTH_FAILED ||
		state == TUNNEL_STATE_HOST_KEY_MISMATCH)
		return tunnel_backoff_ms(failures, PENALISED_FIRST_MS, PENALISED_MAX_MS);
	return tunnel_backoff_ms(failures, 500.0, tunnel_reconnect_max_delay * 1000.0);
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

/* Say it once; a bastion down for an hour need not fill the log. */
static void
log_end(TunnelPool *p, const TunnelConnEnd *e, long delay_ms)
{
	const TunnelDef *def = p->def;
	const char *host = tunnel_pool_bastion(p)->host;
	int			port = tunnel_pool_bastion(p)->port;

	if (strcmp(e->message, p->last_logged) == 0)
		return;
	if (e->refused)
		ereport(LOG,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("tunnel \"%s\": bastion %s port %d refused the connection",
						def->name, host, port),
				 refused_detail(e->banner),
				 errhint("OpenSSH 9.8 and later refuse an address for a while after failed logins (PerSourcePenalties); "
						 "add this server's address to PerSourcePenaltyExemptList in the bastion's sshd_config. "
						 "The next attempt is in %ld s.", delay_ms / 1000)));
	else if (e->state == TUNNEL_STATE_HOST_KEY_MISMATCH)
		ereport(WARNING,
				(errcode(state_errcode(e->state)),
				 errmsg("host key of bastion %s port %d does not match the pins of tunnel \"%s\"",
						host, port, def->name),
				 errdetail_internal("%s", e->message),
				 errhint("If the bastion's host key was changed on purpose, run tunnel_host_key_reset() or pin the new key with tunnel_alter().")));
	else if (e->state == TUNNEL_STATE_AUTH_FAILED)
		ereport(LOG,
				(errcode(state_errcode(e->state)),
				 errmsg("tunnel \"%s\": authentication on bastion %s port %d failed",
						def->name, host, port),
				 errdetail_internal("%s", e->message)));
	else if (e->was_ready)
		ereport(LOG,
				(errcode(state_errcode(e->state)),
				 errmsg("tunnel \"%s\": connection to bastion %s port %d lost",
						def->name, host, port),
				 errdetail_internal("%s", e->message)));
	else
		ereport(LOG,
				(errcode(state_errcode(e->state)),
				 errmsg("tunnel \"%s\": could not connect to bastion %s port %d",
						def->name, host, port),
				 errdetail_internal("%s", e->message)));
	strlcpy(p->last_logged, e->message, sizeof(p->last_logged));
}

/*
 * The tunnel's connection ended.  Its lanes go with it, and their waiting
 * clients come back; a previous login that still carries connections (a
 * retiring lane) is not this connection: it lives on until they end or its
 * own keepalive fails.  The bastion waits out its backoff; the next one of
 * the list that need not is tried at once (failover), and the clients
 * waiting for a channel wait for it.  When every bastion waits, so does
 * the tunnel, and the waiting clients are kept only when the bastion was
 * lost moments ago (holding_clients).
 */
static void
connection_ended(TunnelPool *p, TunnelConn *c, const TunnelConnEnd *e)
{
	TimestampTz now = GetCurrentTimestamp();
	PoolBastion *b = &p->bastions[p->active];
	int			next;
	bool		spare;
	long		delay_ms;
	dlist_iter	iter;

	b->failures++;
	if (e->next_family)
		b->host_key_try++;
	delay_ms = retry_delay_ms(b->failures, e->state, e->refused);
	b->penalised = e->refused || e->state == TUNNEL_STATE_AUTH_FAILED ||
		e->state == TUNNEL_STATE_HOST_KEY_MISMATCH;
	b->retry_at = TimestampTzPlusMilliseconds(now, delay_ms);
	b->status.state = TUNNEL_BASTION_BACKOFF;
	b->status.failures = b->failures;
	strlcpy(b->status.last_error, e->message, sizeof(b->status.last_error));
	publish_bastion(p, p->active);
	log_end(p, e, delay_ms);

	if (e->was_ready)
	{
		p->lost_at = now;
		tunnel_stats_session_down(tunnel_status_stats(p->slot));
	}
	dlist_foreach(iter, &p->lanes)
		tunnel_lanes_return_waiting(p, dlist_container(TunnelConn, owner_node, iter.cur));
	tunnel_lanes_drop_all(p, true);
	tunnel_status_set_methods(p->slot, NULL);
	tunnel_status_set_serving(p->slot, NULL);
	p->relogin_wanted = false;
	set_state(p, e->state, e->message);

	next = pick_bastion(p, now, false);
	if (next >= 0)
	{
		ereport(LOG,
				(errmsg("tunnel \"%s\": trying bastion %s port %d next",
						p->def->name, p->def->bastions[next].host,
						p->def->bastions[next].port)));
		tunnel_conn_close(c, false, true);
		p->penalised = false;
		p->phase = POOL_START;	/* the next tick starts it */
		return;
	}
	/* Every bastion waits: the tunnel waits for the soonest. */
	next = pick_bastion(p, now, true);
	p->retry_at = p->bastions[next].retry_at;
	p->penalised = p->bastions[next].penalised;
	spare = !p->penalised && holding_clients(p, now);
	tunnel_conn_close(c, false, spare);
	p->phase = POOL_BACKOFF;
	if (spare && !dlist_is_empty(&c->channels))
		p->retry_at = Min(p->retry_at, next_retry_for_clients(p, now));
}

static void
pool_ended(void *owner, TunnelConn *c, const TunnelConnEnd *e)
{
	TunnelPool *p = (TunnelPool *) owner;

	if (c == p->conn)
		connection_ended(p, c, e);
	else
		tunnel_lane_ended(p, c, e);
}

static void
pool_forward_error(void *owner, TunnelConn *c, const char *message)
{
	TunnelPool *p = (TunnelPool *) owner;

	/* The connection is fine; the state stays, the error is shown. */
	tunnel_status_set_state(p->slot, TUNNEL_STATE_CONNECTED, message);
	if (strcmp(message, p->last_logged) != 0)
	{
		ereport(LOG, (errmsg("tunnel \"%s\": %s", p->def->name, message)));
		strlcpy(p->last_logged, message, sizeof(p->last_logged));
	}
}

/* ---------- logged in ---------- */

/*
 * The handshake is done: the status shows the host key presented and the
 * methods; a host key accepted at first use is kept (and written to the
 * catalog by the next tick, outside libssh2's calls: save_host_key), as is
 * the algorithm a bare pin matched with.
 */
static void
pool_handshake(void *owner, TunnelConn *c)
{
	TunnelPool *p = (TunnelPool *) owner;
	TunnelConnect *m = &c->connect;
	PoolBastion *b = &p->bastions[p->active];
	bool		accepted = m->step == CONNECT_AUTH || m->step == CONNECT_DONE ||
		(m->step == CONNECT_FAILED && m->failed_at == CONNECT_AUTH);

	if (c != p->conn)
		return;
	tunnel_status_set_methods(p->slot, &m->methods);
	if (m->host_key_shown[0] != '\0')
	{
		tunnel_status_set_host_key(p->slot, m->host_key_shown);
		strlcpy(b->status.host_key, m->host_key_shown, sizeof(b->status.host_key));
		publish_bastion(p, p->active);
	}
	if (!accepted)
		return;
	if (m->host_key_trusted)
	{
		strlcpy(b->host_key, m->host_key_seen, sizeof(b->host_key));
		b->host_key_unsaved = true;
		p->host_key_save_at = 0;
		strlcpy(b->host_key_algorithm, m->host_key_algorithm,
				sizeof(b->host_key_algorithm));
	}
	else if (p->active == 0 && p->def->host_key_algorithms == NULL &&
			 p->def->host_key_fingerprint != NULL &&
			 !hostkeys_typed(p->def->host_key_fingerprint) &&
			 m->host_key_algorithm[0] != '\0')
	{
		strlcpy(p->pin_algorithm, m->host_key_algorithm,
				sizeof(p->pin_algorithm));
		p->algorithm_unsaved = true;
		p->host_key_save_at = 0;
	}
}

/*
 * The rotation's key was accepted: it becomes the tunnel's key and the old
 * private key is erased (catalog_promote_key), so the DBA can remove the old
 * line from authorized_keys.
 */
void
tunnel_pool_adopt_next_key(const TunnelDef *def)
{
	if (def->next_key_fingerprint == NULL ||
		!catalog_promote_key(def->name, def->next_key_fingerprint))
		return;
	ereport(LOG,
			(errmsg("tunnel \"%s\": new key %s accepted by %s, rotation complete",
					def->name, def->next_key_fingerprint, def->ssh_host),
			 errdetail("The previous key %s has been erased from the catalog.",
					   def->key_fingerprint),
			 errhint("Remove the line of key %s from ~%s/.ssh/authorized_keys on %s.",
					 def->key_fingerprint, def->ssh_user, def->ssh_host)));
}

/*
 * Logged in with a certificate: say which, and warn once per certificate
 * when a tenth of its life or less is left, so that a renewal that stopped
 * is noticed before the tunnel ends in auth_failed.
 */
static void
note_certificate(TunnelPool *p, TunnelConnect *m)
{
	const TunnelDef *def = p->def;
	char		until[64];
	uint64		now = (uint64) time(NULL);
	uint64		life = m->cert_valid_before - m->cert_valid_after;

	cert_format_time(m->cert_valid_before, until, sizeof(until));
	ereport(LOG,
			(errmsg("tunnel \"%s\": connected to %s port %d as \"%s\" with certificate \"%s\" (valid until %s)",
					def->name, tunnel_pool_bastion(p)->host,
					tunnel_pool_bastion(p)->port,
					def->ssh_user, m->cert_key_id, until)));
	if (m->cert_valid_before != UINT64_MAX &&
		m->cert_valid_before > now &&
		(m->cert_valid_before - now) * 10 <= life &&
		p->cert_warned_before != m->cert_valid_before)
	{
		p->cert_warned_before = m->cert_valid_before;
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("certificate \"%s\" of tunnel \"%s\" expires at %s",
						m->cert_key_id, def->name, until),
				 errdetail("A tenth of its life or less is left; once it has expired the tunnel cannot log in again."),
				 errhint("Renew it and call tunnel_certificate_set('%s', ...).",
						 def->name)));
	}
}

static void
pool_logged_in(void *owner, TunnelConn *c)
{
	TunnelPool *p = (TunnelPool *) owner;
	TunnelConnect *m = &c->connect;
	const TunnelDef *def = p->def;

	if (c != p->conn)
	{
		p->failures_of_lanes = 0;
		tunnel_lanes_note_login(p, c);
		return;
	}
	tunnel_status_set_key(p->slot, m->keys[m->accepted].fingerprint);
	if (c->authed_next)
		tunnel_pool_adopt_next_key(def);
	if (m->cert_used)
		note_certificate(p, m);
	else
		ereport(LOG,
				(errmsg("tunnel \"%s\": connected to %s port %d as \"%s\"",
						def->name, tunnel_pool_bastion(p)->host,
						tunnel_pool_bastion(p)->port, def->ssh_user)));
	{
		PoolBastion *b = &p->bastions[p->active];
		char		serving[TUNNEL_HOST_MAXLEN + 9];

		b->failures = 0;
		b->penalised = false;
		b->retry_at = 0;
		b->last_connected = GetCurrentTimestamp();
		b->status.state = TUNNEL_BASTION_SERVING;
		b->status.failures = 0;
		b->status.last_connected = b->last_connected;
		publish_bastion(p, p->active);
		snprintf(serving, sizeof(serving),
				 strchr(tunnel_pool_bastion(p)->host, ':') ? "[%s]:%d" : "%s:%d",
				 tunnel_pool_bastion(p)->host, tunnel_pool_bastion(p)->port);
		tunnel_status_set_serving(p->slot, serving);
		tunnel_stats_session_up(tunnel_status_stats(p->slot), serving);
	}
	p->penalised = false;
	tunnel_lanes_note_login(p, c);
	p->last_logged[0] = '\0';
	set_state(p, TUNNEL_STATE_CONNECTED, "");
}

/* ---------- what a pass asks, and what follows it ---------- */

static void
pool_passed(void *owner, TunnelConn *c)
{
	TunnelPool *p = (TunnelPool *) owner;

	if (c != p->conn)
		return;
	if (tunnel_lanes_dispatch(p))
		start_lane(p);
	if (p->relogin_wanted && tunnel_lanes_relogin(p))
	{
		/* Should the new login fail, the waiting clients wait for the next. */
		p->lost_at = GetCurrentTimestamp();
		p->phase = POOL_START;	/* the next tick starts the attempt */
	}
}

static bool
pool_open_allowed(void *owner, TunnelConn *c, TunnelChannel *f)
{
	return tunnel_lanes_open_allowed((TunnelPool *) owner, c, f);
}

static void
pool_open_answered(void *owner, TunnelConn *c, TunnelChannel *f)
{
	tunnel_lanes_open_answered((TunnelPool *) owner, c, f);
}

static void
pool_open_took(void *owner, TunnelConn *c, long elapsed_ms)
{
	tunnel_lanes_open_took((TunnelPool *) owner, elapsed_ms);
}

/* A lane's open slot is free again: it may take a waiting client. */
static void
pool_open_released(void *owner, TunnelConn *c)
{
	TunnelPool *p = (TunnelPool *) owner;

	if (c != p->conn)
		tunnel_conn_mark_dirty(p->conn);
}

static const TunnelConnOwnerOps pool_ops = {
	.handshake = pool_handshake,
	.logged_in = pool_logged_in,
	.ended = pool_ended,
	.passed = pool_passed,
	.open_allowed = pool_open_allowed,
	.open_answered = pool_open_answered,
	.open_took = pool_open_took,
	.open_released = pool_open_released,
	.forward_error = pool_forward_error,
};

/* ---------- timers ---------- */

/*
 * Record the host key seen at first use.  A transaction holding the tunnel's
 * row must not stall the worker, so a write that cannot be made at once is
 * tried again a little later; the key is trusted from memory meanwhile.
 */
static long
save_host_key(TunnelPool *p, TimestampTz now)
{
	const TunnelDef *def = p->def;
	long		timeout = -1;

	if (now < p->host_key_save_at)
		return tunnel_ms_until(p->host_key_save_at, now);
	if (p->algorithm_unsaved)
	{
		if (!catalog_learn_host_key_algorithm(def->name,
											  def->host_key_fingerprint,
											  p->pin_algorithm))
		{
			p->host_key_save_at = TimestampTzPlusMilliseconds(now, HOST_KEY_RETRY_MS);
			return HOST_KEY_RETRY_MS;
		}
		p->algorithm_unsaved = false;
	}
	for (int i = 0; i < p->nbastions; i++)
	{
		PoolBastion *b = &p->bastions[i];
		const char *algorithm = b->host_key_algorithm[0] ? b->host_key_algorithm : NULL;
		CatalogWrite done;

		if (!b->host_key_unsaved)
			continue;
		done = i == 0 ?
			catalog_record_host_key(def->name, b->host_key, algorithm) :
			catalog_record_bastion_host_key(def->name, def->bastions[i].host,
											def->bastions[i].port,
											b->host_key, algorithm);
		if (done == CATALOG_WRITE_RETRY)
		{
			p->host_key_save_at = TimestampTzPlusMilliseconds(now, HOST_KEY_RETRY_MS);
			timeout = HOST_KEY_RETRY_MS;
			continue;
		}
		/* NONE: a pin set meanwhile; the worker compares it with ours. */
		if (done == CATALOG_WRITE_DONE)
			ereport(LOG,
					(errmsg("tunnel \"%s\": recorded host key %s of %s port %d",
							def->name, b->host_key, def->bastions[i].host,
							def->bastions[i].port)));
		b->host_key_unsaved = false;
	}
	return timeout;
}

/* The timers of the tunnel's connection: its start, backoff, its own. */
static long
tick_connection(TunnelPool *p, TimestampTz now)
{
	switch (p->phase)
	{
		case POOL_START:
			start_attempt(p, now);
			return 0;
		case POOL_BACKOFF:
			if (now < p->retry_at)
				return tunnel_ms_until(p->retry_at, now);
			p->phase = POOL_START;
			return 0;
		case POOL_ACTIVE:
			return tunnel_conn_tick(p->conn, now);
	}
	return -1;
}

long
tunnel_pool_tick(TunnelPool *p, TimestampTz now)
{
	long		timeout;

	timeout = tunnel_conn_expire_waiting(p->conn, now, tunnel_pool_serving(p));
	timeout = tunnel_min_timeout(timeout, save_host_key(p, now));
	timeout = tunnel_min_timeout(timeout, tick_connection(p, now));
	timeout = tunnel_min_timeout(timeout, tunnel_lanes_tick(p, now));
	return timeout;
}

/* ---------- lifecycle and clients ---------- */

TunnelPool *
tunnel_pool_create(const TunnelDef *def, TunnelStatusSlot *slot)
{
	TunnelPool *p = palloc0(sizeof(TunnelPool));

	p->def = def;
	p->slot = slot;
	p->ops = &pool_ops;
	p->phase = POOL_START;
	p->conn = tunnel_conn_create(def, p, &pool_ops);
	dlist_init(&p->lanes);
	p->nbastions = def->nbastions;
	/* A single bare fingerprint also serves as trust on first use. */
	if (def->host_key_fingerprint &&
		strlen(def->host_key_fingerprint) < sizeof(p->bastions[0].host_key))
		strlcpy(p->bastions[0].host_key, def->host_key_fingerprint,
				sizeof(p->bastions[0].host_key));
	for (int i = 0; i < p->nbastions; i++)
		publish_bastion(p, i);
	return p;
}

void
tunnel_pool_destroy(TunnelPool *p)
{
	tunnel_lanes_drop_all(p, false);
	tunnel_conn_destroy(p->conn);
	tunnel_stats_session_down(tunnel_status_stats(p->slot));
	tunnel_status_set_methods(p->slot, NULL);
	tunnel_lanes_forget(p);
	pfree(p);
}

bool
tunnel_pool_ready(TunnelPool *p)
{
	return tunnel_pool_serving(p);
}

const char *
tunnel_pool_seen_host_key(TunnelPool *p)
{
	const char *key = p->bastions[p->active].host_key;

	return key[0] ? key : NULL;
}

void
tunnel_pool_credentials_changed(TunnelPool *p)
{
	/*
	 * Waiting out a refused login: the DBA's remedy (a renewed certificate)
	 * is tried now rather than at the end of a backoff of minutes.
	 */
	if (p->phase == POOL_BACKOFF && p->penalised)
	{
		p->retry_at = GetCurrentTimestamp();
		for (int i = 0; i < p->nbastions; i++)
		{
			p->bastions[i].failures = 0;
			p->bastions[i].retry_at = 0;
		}
	}
}

void
tunnel_pool_set_def(TunnelPool *p, const TunnelDef *def)
{
	dlist_iter	iter;

	p->def = def;
	p->nbastions = def->nbastions;
	p->conn->def = def;
	dlist_foreach(iter, &p->lanes)
		dlist_container(TunnelConn, owner_node, iter.cur)->def = def;
}

void
tunnel_pool_add_client(TunnelPool *p, pgsocket fd,
					   const char *remote_host, int remote_port,
					   TunnelForwardSlot *forward_slot)
{
	TimestampTz now = GetCurrentTimestamp();
	TunnelChannel *f;

	f = tunnel_conn_add_client(p->conn, fd, remote_host, remote_port,
							   p->slot, forward_slot);

	/*
	 * Someone needs the tunnel now: don't make them wait out a long backoff,
	 * but don't let a stream of clients hammer a dead bastion either.  A
	 * client arriving in backoff waits for the attempt it triggers; the
	 * connection's failure closes it, unless the bastion was lost only
	 * moments ago (holding_clients).  A bastion that refused us or a key,
	 * though, only penalises attempts made sooner: those clients are closed.
	 */
	if (p->phase == POOL_BACKOFF)
	{
		TimestampTz soonest = next_retry_for_clients(p, now);
		bool		hold = holding_clients(p, now) && !p->penalised;

		/* After a refusal or a failed login, the bastion sets the pace. */
		if (p->penalised)
			soonest = p->retry_at;
		if (soonest == now || hold)
			p->retry_at = Min(p->retry_at, soonest);
		if (p->retry_at > now && !hold)
			tunnel_conn_drop_client(p->conn, f);
	}
}

