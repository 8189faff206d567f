/*-------------------------------------------------------------------------
 *
 * settings.h
 *	  The settings (GUC variables) of tunnel_ssh.
 *
 * settings.c defines and registers them; every other module only reads
 * them.  settings.c includes no module that reads a setting (only
 * methods.h and validate.h, for check hooks, and they include no module),
 * so any module may include this header without making an include circle:
 * the entry file (tunnel_ssh.c) calls tunnel_settings_define() and the
 * modules read the variables, and neither includes the other.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_SETTINGS_H
#define TUNNEL_SETTINGS_H

extern char *tunnel_database;
extern char *tunnel_port_range;
extern char *tunnel_listen_address;
extern bool tunnel_allow_remote_listen;
extern char *tunnel_socket_directory;
extern int	tunnel_keepalive_interval;	/* seconds */
extern int	tunnel_keepalive_count;
extern int	tunnel_connect_timeout;		/* seconds */
extern int	tunnel_reconnect_max_delay;	/* seconds */
extern int	tunnel_max_tunnels;
extern int	tunnel_max_forwards;
extern int	tunnel_max_tracked_connections;
extern bool tunnel_log_connections;
extern int	tunnel_max_extra_sessions;
extern int	tunnel_window_budget;	/* kB */
extern bool tunnel_bulk_keystream;
extern char *tunnel_ciphers;

/*
 * True when loaded through shared_preload_libraries (the worker runs).  Set
 * by _PG_init; kept here, beside the settings whose context it decides, so
 * that readers need not include the entry file.
 */
extern bool tunnel_preloaded;

/* Registers every tunnel_ssh.* setting; called once, from _PG_init. */
extern void tunnel_settings_define(void);

/* tunnel_ssh.socket_directory as an absolute path (palloc'd), or NULL. */
extern char *tunnel_socket_directory_path(void);

#endif							/* TUNNEL_SETTINGS_H */
