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

typedef struct ForwardDef
{
	int			local_port;
	char	   *remote_host;
	int			remote_port;
} ForwardDef;

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
	/* a key rotation under way (version 1.1): NULL when none */
	char	   *next_private_key;	/* secret, wiped like private_key */
	char	   *next_key_fingerprint;
	TimestampTz rotation_started;
	List	   *forwards;		/* of ForwardDef */
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
 * Has tunnel_ssh.tunnel this column in the catalog version installed (the
 * one probe of the schema version)?  Needs SPI.
 */
extern bool catalog_has_column(const char *attname);

/*
 * Read every tunnel in its own transaction.  Returns a List of TunnelDef
 * allocated in the current memory context, or NIL if the extension is not
 * installed (*installed tells which).
 */
extern List *catalog_load(bool *installed);

/* Deep copy into the current memory context. */
extern TunnelDef *catalog_copy_def(const TunnelDef *def);

/* Release one definition, wiping its private key first. */
extern void catalog_free_def(TunnelDef *def);

/* Do two definitions hold a different private key or key fingerprint? */
extern bool catalog_stored_key_differs(const TunnelDef *a, const TunnelDef *b);

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

/*
 * Trust on first use: remember the host key seen for a tunnel, and the
 * algorithm it was negotiated with (if known), so that later sessions ask
 * for it first.  Returns false if it could not be written now (a lock held,
 * an error): try again.
 */
extern bool catalog_record_host_key(const char *tunnel, const char *fingerprint,
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
 * standby.
 */
extern void catalog_servers_follow_host(const char *host);

#endif							/* TUNNEL_CATALOG_H */
