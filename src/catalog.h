/*-------------------------------------------------------------------------
 *
 * catalog.h
 *	  Tunnel definitions as the worker reads them, and the commit-time
 *	  signal that tells it to read them again.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_CATALOG_H
#define TUNNEL_CATALOG_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

#include "tunnel_limits.h"

typedef struct ForwardDef
{
	int			local_port;
	char	   *remote_host;
	int			remote_port;
} ForwardDef;

/*
 * One bastion of a tunnel's list (ssh_host).  The first one's host key is
 * the tunnel's (host_key_fingerprint); each other's, trusted at first use,
 * is kept in tunnel_ssh.bastion_host_key.  Pins (host_key_pinned) serve all.
 */
typedef struct BastionDef
{
	char		host[TUNNEL_HOST_MAXLEN + 1];
	int			port;
	char	   *host_key_fingerprint;	/* recorded (not the first), or NULL */
	char	   *host_key_algorithms;
} BastionDef;

#define TUNNEL_MAX_BASTIONS 8

typedef struct TunnelDef
{
	char	   *name;
	char	   *ssh_host;
	int			ssh_port;
	char	   *ssh_user;
	char	   *key_type;
	char	   *key_fingerprint;
	char	   *private_key;	/* secret: wiped by catalog_free_def */
	char	   *host_key_fingerprint;	/* NULL until first recorded */
	bool		host_key_pinned;
	/* host key algorithms to prefer, as when it was recorded (1.2), or NULL */
	char	   *host_key_algorithms;
	bool		enabled;
	char	   *via;			/* jump tunnel carrying the session, or NULL */
	char	   *proxy;			/* secret: the first hop's proxy URL (1.4) */
	/* a key rotation under way (version 1.1): NULL when none */
	char	   *next_private_key;	/* secret, wiped like private_key */
	char	   *next_key_fingerprint;
	TimestampTz rotation_started;
	/* OpenSSH certificates of the key and of the next key (1.4), or NULL */
	char	   *certificate;
	char	   *next_certificate;
	List	   *forwards;		/* of ForwardDef */
	/* ssh_host as a list (0 when it cannot be parsed: the tunnel is invalid) */
	int			nbastions;
	BastionDef	bastions[TUNNEL_MAX_BASTIONS];
} TunnelDef;

/*
 * libssh2's own host key order (ECDSA first), in which versions up to 1.1
 * negotiated: what a catalog before 1.2 recorded was seen in this order.
 */
#define TUNNEL_LEGACY_HOST_KEY_ALGORITHMS \
	"ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521," \
	"ssh-ed25519,rsa-sha2-512,rsa-sha2-256,ssh-rsa"

/*
 * SQL for TunnelDef.host_key_algorithms of tunnel_ssh.tunnel t, whatever
 * the catalog's version: before 1.2 it has no such column, and every
 * session then asks in the legacy order, as before.
 */
#define TUNNEL_HOST_KEY_ALGORITHMS_SQL \
	"CASE WHEN pg_catalog.to_jsonb(t) OPERATOR(pg_catalog.?) 'host_key_algorithms' " \
	"THEN pg_catalog.to_jsonb(t) OPERATOR(pg_catalog.->>) 'host_key_algorithms' " \
	"ELSE '" TUNNEL_LEGACY_HOST_KEY_ALGORITHMS "' END"

/*
 * SQL for a column of tunnel_ssh.tunnel t that came with 1.4, NULL in a
 * catalog of an earlier version.
 */
#define TUNNEL_V14_COLUMN_SQL(col) \
	"pg_catalog.to_jsonb(t) OPERATOR(pg_catalog.->>) '" col "'"

/*
 * Has tunnel_ssh.tunnel this column in the catalog version installed (the
 * one probe of the schema version)?  Needs SPI.
 */
extern bool catalog_has_column(const char *attname);


/*
 * Run step in a short transaction of the worker's own, with SPI connected:
 * its lock waits are bounded and an error in it is logged (at elevel), not
 * raised.
 * False if it did not commit (try again later).
 */
extern bool catalog_run(void (*step) (void *arg), void *arg,
						const char *what, int elevel);

/* The worker's SIGINT handler: cancels reach catalog steps only. */
extern void catalog_handle_sigint(SIGNAL_ARGS);

/* Settings of the worker's session that its catalog steps rely on. */
extern void catalog_worker_settings(void);

/*
 * Read every tunnel in its own transaction (catalog_run).  *defs is a List
 * of TunnelDef allocated in the current memory context, NIL if the
 * extension is not installed (*installed tells which).  False, with *defs
 * NIL, if the catalog could not be read now (a lock held, an error): keep
 * what runs, and try again later.
 */
extern bool catalog_load(bool *installed, List **defs, int elevel);

/* Deep copy into the current memory context. */
extern TunnelDef *catalog_copy_def(const TunnelDef *def);

/* Release one definition, wiping its private key first. */
extern void catalog_free_def(TunnelDef *def);

/* Do two definitions hold a different private key or key fingerprint? */
extern bool catalog_stored_key_differs(const TunnelDef *a, const TunnelDef *b);

/*
 * Do two definitions hold other certificates?  Never a reason for a new
 * session: the next login uses them.
 */
extern bool catalog_certificate_differs(const TunnelDef *a, const TunnelDef *b);

/* Do two definitions need a new SSH session (bastion, account, key)? */
extern bool catalog_session_differs(const TunnelDef *a, const TunnelDef *b);

/*
 * The next key authenticated: make it the tunnel's key and erase the old
 * one.  Returns false if the rotation is no longer the one that was tried
 * (cancelled or replaced meanwhile) or we cannot write (a standby, a lock
 * held by another transaction, an error, all logged).
 */
extern bool catalog_promote_key(const char *tunnel, const char *fingerprint);

/* Preloaded: wake the worker after COMMIT PREPARED too. */
extern void catalog_install_hooks(void);

/* What became of a write of the worker's. */
typedef enum CatalogWrite
{
	CATALOG_WRITE_DONE,			/* written */
	CATALOG_WRITE_NONE,			/* nothing to write (already set, a standby) */
	CATALOG_WRITE_RETRY			/* not now: a lock held, an error (logged) */
} CatalogWrite;

/*
 * Trust on first use: remember the host key seen for a tunnel, and the
 * algorithm it was negotiated with (if known), so that later sessions ask
 * for it first.  NONE if the catalog has a host key already (a pin set
 * meanwhile: the catalog change decides whether the session may stay).
 */
extern CatalogWrite catalog_record_host_key(const char *tunnel, const char *fingerprint,
									const char *algorithm);

/* Parse def->ssh_host into def->bastions (nbastions 0 if invalid). */
extern void catalog_parse_bastions(TunnelDef *def);

/*
 * Record the host key of a tunnel's bastion other than the first, trusted at
 * first use (tunnel_ssh.bastion_host_key, 1.4).
 */
extern CatalogWrite catalog_record_bastion_host_key(const char *tunnel,
													const char *host, int port,
													const char *fingerprint,
													const char *algorithm);

/*
 * A pin without algorithm matched: remember the algorithm it was negotiated
 * with, so that later sessions ask for that key first (unless the pins or
 * the learned algorithm changed meanwhile).  False if the write must be
 * tried again later (the row is locked).
 */
extern bool catalog_learn_host_key_algorithm(const char *tunnel,
											 const char *pins,
											 const char *algorithm);

/*
 * Point the foreign servers tunnel_server_create made at host (the socket
 * directory moves with the data directory, e.g. after a restore).  Not on a
 * standby.  A server of the same name made by hand with other options is
 * left alone (SERVER_IS_OURS_SQL).  False if one could not be pointed now.
 */
extern bool catalog_servers_follow_host(const char *host);

/*
 * SQL condition: foreign server fs is still the one tunnel_server_create
 * made for row s of tunnel_ssh.server (a host option, and a port option
 * naming the row's local port).
 */
#define SERVER_IS_OURS_SQL \
	"EXISTS (SELECT FROM pg_catalog.pg_options_to_table(fs.srvoptions) o " \
	"        WHERE o.option_name = 'port' AND o.option_value = s.local_port::pg_catalog.text) " \
	"AND EXISTS (SELECT FROM pg_catalog.pg_options_to_table(fs.srvoptions) o " \
	"            WHERE o.option_name = 'host')"

#endif							/* TUNNEL_CATALOG_H */
