/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Cumulative counters per tunnel and per forward, for monitoring
 *	  (tunnel_stat(), tunnel_stat_reset()).
 *
 * tunnel_status() shows what the worker runs now and starts again when a
 * tunnel is altered; these counters are kept in a table of their own, keyed
 * by tunnel name and local port, so that they outlive a tunnel being
 * disabled, altered or its worker restarted, as a monitoring system expects
 * of a counter.  They last until the server stops or tunnel_stat_reset().
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_STATS_H
#define TUNNEL_STATS_H

typedef struct TunnelStats TunnelStats;

/* Why a client's channel was not opened. */
typedef enum TunnelOpenFailure
{
	TUNNEL_OPEN_PROHIBITED,		/* the bastion refused: permitopen and such */
	TUNNEL_OPEN_CONNECT_FAILED, /* the bastion could not reach the target */
	TUNNEL_OPEN_TIMEOUT,		/* tunnel_ssh.connect_timeout, session up */
	TUNNEL_OPEN_NO_SESSION,		/* there was no SSH session to open it on */
	TUNNEL_OPEN_OTHER
} TunnelOpenFailure;

#define TUNNEL_OPEN_FAILURES (TUNNEL_OPEN_OTHER + 1)

extern Size tunnel_stats_shmem_size(void);
extern void tunnel_stats_shmem_init(void);

extern const char *tunnel_open_failure_name(TunnelOpenFailure why);

/*
 * The worker's side.  An entry is pinned while the worker refers to it, and
 * only an unpinned one is ever given to another key (when the table is
 * full).  local_port 0 is the tunnel's own entry (its sessions); any other
 * is a forward's.  Every function accepts NULL (the table was full).
 */
extern TunnelStats *tunnel_stats_pin(const char *tunnel, int local_port);
extern void tunnel_stats_pin_again(TunnelStats *s);
extern void tunnel_stats_unpin(TunnelStats *s);
/* A restarted worker holds no pins. */
extern void tunnel_stats_unpin_all(void);

extern void tunnel_stats_set_target(TunnelStats *s, const char *remote_host,
									int remote_port);
extern void tunnel_stats_count_connection(TunnelStats *s);
extern void tunnel_stats_count_open_failure(TunnelStats *s,
											TunnelOpenFailure why);
extern void tunnel_stats_count_bytes(TunnelStats *s, uint64 bytes_in,
									 uint64 bytes_out);

/*
 * The tunnel's session logged in on bastion ("host:port"), or was lost.
 * A login after a loss is a reconnect; one on another bastion than the last
 * a failover.  A login while up (logging in again for new targets) is
 * neither.
 */
extern void tunnel_stats_session_up(TunnelStats *s, const char *bastion);
extern void tunnel_stats_session_down(TunnelStats *s);

#endif							/* TUNNEL_STATS_H */
