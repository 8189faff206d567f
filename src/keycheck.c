/*-------------------------------------------------------------------------
 *
 * keycheck.c
 *	  A rotation's key check: a connection to the tunnel's bastion run up to
 *	  authentication with the new key only, then closed.
 *
 * A tunnel whose connection stays up for months must still complete its
 * rotation: beside it, the worker checks now and then whether the bastion
 * accepts the new key yet; an accepted key is promoted in the catalog.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "conn.h"
#include "pool.h"

struct TunnelKeyCheck
{
	const TunnelDef *def;
	TunnelConn *conn;
	bool		started;
	int			result;			/* 0 not yet, 1 accepted, -1 not */
};

static void
check_logged_in(void *owner, TunnelConn *c)
{
	TunnelKeyCheck *kc = (TunnelKeyCheck *) owner;

	if (c->authed_next)
		tunnel_pool_adopt_next_key(kc->def);
	kc->result = 1;
	tunnel_conn_close(c, false, false);
}

static void
check_ended(void *owner, TunnelConn *c, const TunnelConnEnd *e)
{
	TunnelKeyCheck *kc = (TunnelKeyCheck *) owner;

	ereport(DEBUG1,
			(errmsg("tunnel \"%s\": check of the new key: %s",
					kc->def->name, e->message)));
	kc->result = -1;
	tunnel_conn_close(c, false, false);
}

static void
check_nothing(void *owner, TunnelConn *c)
{
}

static bool
check_no_open(void *owner, TunnelConn *c, TunnelChannel *f)
{
	return false;
}

static void
check_no_answer(void *owner, TunnelConn *c, TunnelChannel *f)
{
}

static void
check_no_time(void *owner, TunnelConn *c, long elapsed_ms)
{
}

static void
check_no_error(void *owner, TunnelConn *c, const char *message)
{
}

static const TunnelConnOwnerOps key_check_ops = {
	.handshake = check_nothing,
	.logged_in = check_logged_in,
	.ended = check_ended,
	.passed = check_nothing,
	.open_allowed = check_no_open,
	.open_answered = check_no_answer,
	.open_took = check_no_time,
	.open_released = check_nothing,
	.forward_error = check_no_error,
};

/*
 * A connection that only checks whether the bastion accepts the rotation's
 * new key, so that a tunnel whose connection stays up for months still
 * completes its rotation.  It reports nothing in the tunnel's status.
 */
TunnelKeyCheck *
tunnel_key_check_create(const TunnelDef *def)
{
	TunnelKeyCheck *kc = palloc0(sizeof(TunnelKeyCheck));

	kc->def = def;
	kc->conn = tunnel_conn_create(def, kc, &key_check_ops);
	return kc;
}

int
tunnel_key_check_result(TunnelKeyCheck *kc)
{
	return kc->result;
}

long
tunnel_key_check_tick(TunnelKeyCheck *kc, TimestampTz now)
{
	if (!kc->started)
	{
		TunnelConnPlan plan;

		kc->started = true;
		/* The first bastion: all take the same key. */
		plan.host = kc->def->bastions[0].host;
		plan.port = kc->def->bastions[0].port;
		plan.host_keys = kc->def->host_key_fingerprint;
		plan.host_key_algorithms = kc->def->host_key_algorithms;
		plan.host_key_try = 0;
		plan.trust_first_use = true;
		plan.keys = CONN_KEYS_NEXT_ONLY;
		(void) tunnel_pool_start_conn(kc->def, kc->conn, &plan, now);
		return 0;
	}
	if (kc->result != 0)
		return -1;
	return tunnel_conn_tick(kc->conn, now);
}

void
tunnel_key_check_set_def(TunnelKeyCheck *kc, const TunnelDef *def)
{
	kc->def = def;
	kc->conn->def = def;
}

void
tunnel_key_check_destroy(TunnelKeyCheck *kc)
{
	tunnel_conn_destroy(kc->conn);
	pfree(kc);
}
