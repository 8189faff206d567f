/*-------------------------------------------------------------------------
 *
 * pool_state.h
 *	  A tunnel's pool of connections, as pool.c and lanes.c see it.
 *
 * pool.c owns the pool: the tunnel's own connection, its waiting clients,
 * admission, backoff and the tunnel's status.  lanes.c applies the lane
 * policy to it (extra connections, logging in again for new targets) and
 * calls nothing of pool.c's: it tells pool.c what to do by its results.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_POOL_STATE_H
#define TUNNEL_POOL_STATE_H

#include "common/pg_prng.h"
#include "lib/ilist.h"
#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "conn.h"
#include "status.h"
#include "tunnel_limits.h"

typedef enum TunnelPoolPhase
{
	POOL_START,					/* start an attempt at the next tick */
	POOL_ACTIVE,				/* the tunnel's connection connects or serves */
	POOL_BACKOFF				/* waiting for retry_at */
} TunnelPoolPhase;

/* One bastion of the pool: its failures, backoff, and host key. */
typedef struct PoolBastion
{
	int			failures;		/* in a row */
	bool		penalised;		/* the last one is one sshd penalises */
	TimestampTz retry_at;		/* not tried again before */
	TimestampTz last_connected;
	char		host_key[TUNNEL_FINGERPRINT_LEN + 1];	/* trusted at first use */
	int			host_key_try;	/* family asked first for a bare pin */
	bool		host_key_unsaved;
	char		host_key_algorithm[64];
	TunnelBastionStatus status; /* as tunnel_bastion_status() shows it */
} PoolBastion;

typedef struct TunnelPool
{
	const TunnelDef *def;
	TunnelStatusSlot *slot;
	const TunnelConnOwnerOps *ops;	/* of every connection of the pool */
	TunnelPoolPhase phase;
	TunnelConn *conn;			/* the tunnel's own connection */

	/* the bastions, in the catalog's order; the one tried or serving */
	int			nbastions;
	PoolBastion bastions[TUNNEL_MAX_BASTIONS];
	int			active;

	/* the backoff when no bastion may be tried now, and its admission */
	bool		penalised;		/* the soonest bastion's last failure is one
								 * sshd penalises */
	TimestampTz retry_at;
	TimestampTz last_attempt;
	TimestampTz lost_at;		/* when a ready connection last failed, or 0 */
	char		last_logged[TUNNEL_ERROR_MAXLEN];

	/* a bare pin's algorithm, learned on the first bastion, until saved */
	bool		algorithm_unsaved;
	char		pin_algorithm[64];
	TimestampTz host_key_save_at;
	uint64		cert_warned_before; /* valid_before of the certificate whose
									 * coming expiry was logged */

	/* lanes.c: extra connections, and logging in again */
	dlist_head	lanes;			/* of TunnelConn, through owner_node */
	int			nlanes;
	TimestampTz lane_retry_at;
	int			failures_of_lanes;	/* in a row, reset when one connects */
	TimestampTz dispatch_at;	/* look at the waiting clients again then */
	List	   *answers;		/* when each target last answered an open */
	double		open_ms;		/* moving average of successful opens' times */
	bool		relogin_wanted; /* after the tunnel connection's pass */
	TimestampTz relogin_at;		/* no new login for a refused target before */
	int			relogins;		/* in a row for targets still refused */
} TunnelPool;

/* Is the tunnel's own connection logged in? */
static inline bool
tunnel_pool_serving(const TunnelPool *p)
{
	return p->phase == POOL_ACTIVE && p->conn->phase == CONN_READY;
}

/* The bastion tried or serving now. */
static inline const BastionDef *
tunnel_pool_bastion(const TunnelPool *p)
{
	return &p->def->bastions[p->active];
}

/*
 * The backoff after a bastion refused the connection (OpenSSH's
 * PerSourcePenalties, see pool.c), for the tunnel's connection and lanes.
 */
#define REFUSED_FIRST_MS		30000.0
#define REFUSED_MAX_MS			600000.0

/*
 * Exponential backoff with jitter: from first_ms, doubling, up to cap_ms;
 * each delay is drawn from its upper half.
 */
static inline long
tunnel_backoff_ms(int failures, double first_ms, double cap_ms)
{
	double		base = first_ms;
	double		delay;

	for (int i = 1; i < failures && base < cap_ms; i++)
		base *= 2;
	delay = Min(base, cap_ms);
	return (long) (delay * (0.5 + 0.5 * pg_prng_double(&pg_global_prng_state)));
}

#endif							/* TUNNEL_POOL_STATE_H */
