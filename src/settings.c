/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  The settings (GUC variables) of tunnel_ssh: their storage, check
 *	  hooks and registration.
 *
 * Kept apart from the entry file so that the modules reading a setting
 * include settings.h and nothing that includes them back (see settings.h).
 * The ciphers' hooks stay in methods.c, which knows libssh2's ciphers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "miscadmin.h"
#include "utils/guc.h"

#include "methods.h"
#include "settings.h"
#include "validate.h"

char	   *tunnel_database = NULL;
char	   *tunnel_port_range = NULL;
char	   *tunnel_listen_address = NULL;
bool		tunnel_allow_remote_listen = false;
char	   *tunnel_socket_directory = NULL;
int			tunnel_keepalive_interval = 15;
int			tunnel_keepalive_count = 3;
int			tunnel_connect_timeout = 10;
int			tunnel_reconnect_max_delay = 30;
int			tunnel_max_tunnels = 1000;
int			tunnel_max_forwards = 4000;
int			tunnel_max_tracked_connections = 2000;
bool		tunnel_log_connections = false;
int			tunnel_max_extra_sessions = 4;
int			tunnel_window_budget = 32 * 1024;
bool		tunnel_bulk_keystream = false;
char	   *tunnel_ciphers = NULL;

bool		tunnel_preloaded = false;

static bool
check_port_range(char **newval, void **extra, GucSource source)
{
	int			low;
	int			high;
	const char *reason;

	if (!validate_port_range(*newval, &low, &high, &reason))
	{
		GUC_check_errdetail("%s", reason);
		return false;
	}
	return true;
}

/* A listen address is a numeric literal (or empty: no TCP at all). */
static bool
check_listen_address(char **newval, void **extra, GucSource source)
{
	struct in_addr v4;
	struct in6_addr v6;

	if (**newval == '\0' || inet_pton(AF_INET, *newval, &v4) == 1 ||
		inet_pton(AF_INET6, *newval, &v6) == 1)
		return true;
	GUC_check_errdetail("A listen address must be an IPv4 or IPv6 address, or empty to listen on Unix sockets only.");
	return false;
}

/* The socket path must fit sun_path with ".s.PGSQL.65535" appended. */
static bool
check_socket_directory(char **newval, void **extra, GucSource source)
{
	size_t		len = strlen(*newval);

	if (len > 0 && (*newval)[0] != '/' && DataDir != NULL)
		len += strlen(DataDir) + 1;
	if (len + strlen("/.s.PGSQL.65535") > 107)
	{
		GUC_check_errdetail("The socket directory's path is %zu bytes long; with \"/.s.PGSQL.65535\" it would exceed the 107 bytes a Unix socket path may have.",
							len);
		GUC_check_errhint("Choose a shorter directory, such as /var/lib/postgresql/tunnel_ssh.");
		return false;
	}
	return true;
}

char *
tunnel_socket_directory_path(void)
{
	if (tunnel_socket_directory == NULL || tunnel_socket_directory[0] == '\0')
		return NULL;
	if (tunnel_socket_directory[0] == '/')
		return pstrdup(tunnel_socket_directory);
	return psprintf("%s/%s", DataDir, tunnel_socket_directory);
}

void
tunnel_settings_define(void)
{
	/*
	 * PostgreSQL ends the session (FATAL) when a setting read only at server
	 * start is defined after start-up.  Loaded without the preload, where
	 * CREATE EXTENSION warns that no tunnel runs, they are defined as
	 * reloadable instead: they still take postgresql.conf's values, and no
	 * worker reads them.
	 */
	GucContext	restart = process_shared_preload_libraries_in_progress ?
		PGC_POSTMASTER : PGC_SIGHUP;

	DefineCustomStringVariable("tunnel_ssh.database",
							   "Database that holds the tunnel catalog and that the worker connects to.",
							   "CREATE EXTENSION tunnel_ssh is refused in any other database.",
							   &tunnel_database,
							   "postgres",
							   restart,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("tunnel_ssh.port_range",
							   "Range of local ports from which tunnel_create picks one when local_port is not given.",
							   "Written as LOW-HIGH, for example 50000-50999.",
							   &tunnel_port_range,
							   "50000-50999",
							   PGC_SUSET,
							   0,
							   check_port_range, NULL, NULL);

	DefineCustomStringVariable("tunnel_ssh.listen_address",
							   "Local TCP address on which tunnels accept connections; empty for none.",
							   "Every local OS user can connect to a loopback port; an empty value leaves only the Unix sockets of tunnel_ssh.socket_directory.  Other than loopback addresses need tunnel_ssh.allow_remote_listen.",
							   &tunnel_listen_address,
							   "127.0.0.1",
							   PGC_SIGHUP,
							   0,
							   check_listen_address, NULL, NULL);

	DefineCustomBoolVariable("tunnel_ssh.allow_remote_listen",
							 "Allows tunnel_ssh.listen_address to be an address other than loopback.",
							 "Other hosts could then use the tunnels.",
							 &tunnel_allow_remote_listen,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("tunnel_ssh.socket_directory",
							   "Directory of the tunnels' Unix sockets (.s.PGSQL.<local_port>); empty for none.",
							   "A relative path is taken from the data directory.  The worker keeps it owned by the server's OS user with mode 0700, so only that user can connect, and refuses it if it is a symbolic link or another user could replace it.",
							   &tunnel_socket_directory,
							   "tunnel_ssh",
							   PGC_SIGHUP,
							   0,
							   check_socket_directory, NULL, NULL);

	DefineCustomIntVariable("tunnel_ssh.keepalive_interval",
							"Seconds of silence from a bastion after which the worker probes the session.",
							NULL,
							&tunnel_keepalive_interval,
							15, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tunnel_ssh.keepalive_count",
							"Unanswered keepalive intervals after which a session is considered dead.",
							NULL,
							&tunnel_keepalive_count,
							3, 1, 100,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tunnel_ssh.connect_timeout",
							"Seconds allowed for TCP connect, SSH handshake and authentication.",
							NULL,
							&tunnel_connect_timeout,
							10, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tunnel_ssh.reconnect_max_delay",
							"Upper bound of the delay between reconnection attempts.",
							"Delays grow exponentially, with jitter, up to this value.",
							&tunnel_reconnect_max_delay,
							30, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tunnel_ssh.max_extra_sessions",
							"Extra SSH sessions a tunnel may open to its bastion while a channel open is pending on the others.",
							"libssh2 runs one channel open at a time per session, and the bastion answers an open only once its connect to the target ends.  "
							"Each extra session is one more login on the bastion (count it in MaxStartups); idle ones are closed.",
							&tunnel_max_extra_sessions,
							4, 0, 64,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tunnel_ssh.window_budget",
							"Upper bound of the data all channels together may have in flight from bastions to the worker.",
							"The sum of the channels' SSH receive windows: what clients that stop reading can make the worker hold.  "
							"A channel gets its share, up to 4 MB; many channels get smaller windows, new ones at least 64 kB.",
							&tunnel_window_budget,
							32 * 1024, 1024, 4 * 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tunnel_ssh.max_tunnels",
							"Maximum number of tunnels whose status shared memory can hold.",
							NULL,
							&tunnel_max_tunnels,
							1000, 1, 100000,
							restart,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("tunnel_ssh.max_forwards",
							"Maximum number of forwards whose status shared memory can hold.",
							"A forward is a local port of a tunnel; most tunnels have one.",
							&tunnel_max_forwards,
							4000, 1, 400000,
							restart,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tunnel_ssh.max_tracked_connections",
							"Maximum number of client connections tunnel_connections() can list.",
							"Connections beyond it are forwarded, logged and counted as any other, but not listed.",
							&tunnel_max_tracked_connections,
							2000, 0, 1000000,
							restart,
							0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("tunnel_ssh.log_connections",
							 "Logs each connection through a tunnel: its arrival, its channel's opening, its end.",
							 "Each line names the tunnel, the target and the client's process id.",
							 &tunnel_log_connections,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("tunnel_ssh.ciphers",
							   "Ciphers offered to bastions, in order of preference.",
							   "OpenSSH's Ciphers syntax: a list replaces the default, \"+list\" appends to it, \"-list\" removes from it, \"^list\" puts it first.",
							   &tunnel_ciphers,
							   tunnel_default_ciphers,
							   PGC_SIGHUP,
							   0,
							   tunnel_methods_check_ciphers,
							   tunnel_methods_assign_ciphers, NULL);

	DefineCustomBoolVariable("tunnel_ssh.bulk_keystream",
							 "Computes the AES-CTR keystream of SSH sessions in bulk.",
							 "Only with libssh2 older than 1.11, which encrypts one block per call; a no-op with libssh2 1.11 and later. See keystream.c.",
							 &tunnel_bulk_keystream,
							 false,
							 restart,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("tunnel_ssh");
}
