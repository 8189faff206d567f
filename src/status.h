/*-------------------------------------------------------------------------
 *
 * status.h
 *	  Shared-memory status of every tunnel, written by the worker and read
 *	  by tunnel_status() without ever waiting for the worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_STATUS_H
#define TUNNEL_STATUS_H

#include "datatype/timestamp.h"
#include "storage/latch.h"

typedef enum TunnelState
{
	TUNNEL_STATE_CONNECTING,
	TUNNEL_STATE_CONNECTED,
	TUNNEL_STATE_AUTH_FAILED,
	TUNNEL_STATE_HOST_KEY_MISMATCH,
	TUNNEL_STATE_UNREACHABLE,
	TUNNEL_STATE_BACKOFF,
	TUNNEL_STATE_DISABLED,
	TUNNEL_STATE_INVALID,		/* the catalog holds a value we cannot use */
	TUNNEL_STATE_BIND_FAILED	/* the local port cannot be bound */
} TunnelState;

/* What the worker knows of one bastion of a tunnel (tunnel_bastion_status). */
typedef enum TunnelBastionState
{
	TUNNEL_BASTION_STANDBY,		/* not serving: untried, or fine */
	TUNNEL_BASTION_CONNECTING,
	TUNNEL_BASTION_SERVING,
	TUNNEL_BASTION_BACKOFF		/* failed, waiting to be tried again */
} TunnelBastionState;

#define TUNNEL_STATUS_MAX_BASTIONS 8

typedef struct TunnelBastionStatus
{
	TunnelBastionState state;
	int			failures;		/* in a row */
	TimestampTz last_connected;
	char		host_key[82];	/* presented last, with its type */
	char		last_error[200];
} TunnelBastionStatus;

/* One tunnel's row, one forward's row, and the counters both keep. */
typedef struct TunnelStatusSlot TunnelStatusSlot;
typedef struct TunnelForwardSlot TunnelForwardSlot;
typedef struct TunnelCounters TunnelCounters;

extern void tunnel_status_request_shmem(void);
extern void tunnel_status_install_hooks(void);

/* Catalog change signalling: backends bump, the worker compares. */
extern void tunnel_status_catalog_changed(void);
extern uint64 tunnel_status_catalog_generation(void);
extern void tunnel_status_set_worker_latch(Latch *latch);

/*
 * The socket directory the worker checked and listens in (its last check
 * passed), or NULL: none, or refused.  Kept across worker restarts.  The
 * setter returns whether the value changed.
 */
extern bool tunnel_status_set_socket_directory(const char *dir);
extern char *tunnel_status_socket_directory(void);	/* palloc'd, or NULL */

/*
 * The host clients of the tunnels' ports use (a foreign server's "host"):
 * the socket directory while the worker listens there (only the server's
 * OS user can enter it), else the TCP listen address, else NULL: the worker
 * refused the socket directory and TCP is off.  Here, beside the directory
 * the worker publishes, so that backends need not include the worker.
 */
extern const char *tunnel_status_connect_host(void);

/* The worker's side: one slot per tunnel it runs. */
extern TunnelStatusSlot *tunnel_status_acquire(const char *name);
extern void tunnel_status_release(TunnelStatusSlot *slot);
extern void tunnel_status_release_all(void);
extern void tunnel_status_set_state(TunnelStatusSlot *slot, TunnelState state,
									const char *error);
extern void tunnel_status_set_listen(TunnelStatusSlot *slot,
									 const char *address, int port);
extern void tunnel_status_set_host_key(TunnelStatusSlot *slot,
									   const char *fingerprint);
/* The methods the session negotiated; NULL clears them. */
struct TunnelMethods;
extern void tunnel_status_set_methods(TunnelStatusSlot *slot,
									  const struct TunnelMethods *methods);
/* How many extra sessions (lanes) the tunnel has open or opening. */
extern void tunnel_status_set_extra_sessions(TunnelStatusSlot *slot, int n);
/* The bastion serving now ("host:port"), or NULL. */
extern void tunnel_status_set_serving(TunnelStatusSlot *slot, const char *bastion);
/* Bastion i (0-based) of nbastions. */
extern void tunnel_status_set_bastion(TunnelStatusSlot *slot, int i,
									  int nbastions,
									  const TunnelBastionStatus *b);
extern void tunnel_status_set_key(TunnelStatusSlot *slot,
								  const char *fingerprint);
extern void tunnel_status_set_definition(TunnelStatusSlot *slot,
										 const char *next_key,
										 TimestampTz rotation_started,
										 const char *via);
extern void tunnel_status_count_attempt(TunnelStatusSlot *slot);

/* One slot per forward (local port) of a running tunnel. */
extern TunnelForwardSlot *tunnel_status_forward_acquire(const char *tunnel,
														int local_port);
extern void tunnel_status_forward_release(TunnelForwardSlot *fs);
/* A connection through the forward ended (frees a released slot). */
extern void tunnel_status_forward_connection_ended(TunnelForwardSlot *fs);
extern void tunnel_status_forward_set_target(TunnelForwardSlot *fs,
											 const char *remote_host,
											 int remote_port);
extern void tunnel_status_forward_set_listening(TunnelForwardSlot *fs,
												bool listening,
												const char *error);
extern void tunnel_status_forward_error(TunnelForwardSlot *fs,
										const char *error);

/* The cumulative statistics (stats.h) of a tunnel, of a forward. */
struct TunnelStats;
extern struct TunnelStats *tunnel_status_stats(TunnelStatusSlot *slot);
extern struct TunnelStats *tunnel_status_forward_stats(TunnelForwardSlot *fs);
extern int	tunnel_status_forward_local_port(TunnelForwardSlot *fs);

/* Connection and byte counters; NULL is accepted and ignored. */
extern TunnelCounters *tunnel_status_counters(TunnelStatusSlot *slot);
extern TunnelCounters *tunnel_status_forward_counters(TunnelForwardSlot *fs);
extern void tunnel_status_count_connection(TunnelCounters *c, int delta);
extern void tunnel_status_count_bytes(TunnelCounters *c,
									  uint64 bytes_in, uint64 bytes_out);

extern const char *tunnel_state_name(TunnelState state);

/* The tunnel's name in slot (the worker's own; NULL for no slot). */
extern const char *tunnel_status_name(TunnelStatusSlot *slot);

#endif							/* TUNNEL_STATUS_H */
