/*-------------------------------------------------------------------------
 *
 * tunnel_ssh.h
 *	  Settings and limits shared by every module of tunnel_ssh.
 *
 * The GUC variables live in tunnel_ssh.c, which defines them in _PG_init;
 * everything else only reads them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_SSH_H
#define TUNNEL_SSH_H

/* Tunnel names are identifiers: at most NAMEDATALEN - 1 bytes. */
#define TUNNEL_NAME_MAXLEN	63
/* A DNS name is at most 253 bytes; an IPv6 literal is shorter. */
#define TUNNEL_HOST_MAXLEN	253
/* "SHA256:" followed by 43 characters of unpadded base64. */
#define TUNNEL_FINGERPRINT_LEN 50
#define TUNNEL_ERROR_MAXLEN 512

/* GUCs */
extern char *tunnel_database;
extern char *tunnel_port_range;
extern char *tunnel_listen_address;
extern bool tunnel_allow_remote_listen;
extern char *tunnel_socket_directory;

/* tunnel_ssh.socket_directory as an absolute path (palloc'd), or NULL. */
extern char *tunnel_socket_directory_path(void);

/*
 * The host clients of the tunnels' ports use (a foreign server's "host"):
 * the socket directory while the worker listens there (only the server's
 * OS user can enter it), else the TCP listen address, else NULL: the worker
 * refused the socket directory and TCP is off.
 */
extern const char *tunnel_connect_host(void);
extern int	tunnel_keepalive_interval;	/* seconds */
extern int	tunnel_keepalive_count;
extern int	tunnel_connect_timeout;		/* seconds */
extern int	tunnel_reconnect_max_delay;	/* seconds */
extern int	tunnel_max_tunnels;
extern int	tunnel_max_forwards;
extern int	tunnel_max_extra_sessions;
extern int	tunnel_window_budget;	/* kB */
extern bool tunnel_bulk_keystream;
extern char *tunnel_ciphers;

/* True when loaded through shared_preload_libraries (the worker runs). */
extern bool tunnel_preloaded;

#endif							/* TUNNEL_SSH_H */
