/*-------------------------------------------------------------------------
 *
 * listener.c
 *	  Listening sockets for forwards: bind, accept, hand clients over.
 *
 * Accepted sockets get TCP_NODELAY at once: libpq's TLS handshake and
 * PostgreSQL's small protocol messages otherwise stall on delayed ACKs
 * (shared/PLATFORM.md measured 6-10x slower connection set-up).
 *
 * Each forward also listens on a Unix socket in a directory only the
 * server's OS user can enter (tunnel_ssh.socket_directory), which other
 * local users cannot reach, unlike a loopback TCP port.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "utils/timestamp.h"

#include "listener.h"
#include "watch.h"

/* Clients accepted per wake-up, so one busy port cannot starve the rest. */
#define ACCEPT_BATCH 32
/* Out of file descriptors: listeners rest this long, clients wait queued. */
#define ACCEPT_PAUSE_MS 200
#define FD_LOG_INTERVAL_MS 10000

struct TunnelListener
{
	pgsocket	fd;
	Watch		watch;
	ListenerAccept on_accept;
	void	   *arg;
	bool		paused;
	dlist_node	paused_node;
	char	   *path;			/* a Unix socket's file, or NULL */
};

/*
 * A listener whose accept() found no file descriptor left would be readable
 * again at once: it stops watching its socket until resume_at, and the
 * clients wait in the listen backlog instead of the worker spinning.
 */
static dlist_head paused_listeners = DLIST_STATIC_INIT(paused_listeners);
static TimestampTz resume_at = 0;
static TimestampTz fd_logged_at = 0;

static void
pause_accepting(TunnelListener *l)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!l->paused)
	{
		l->paused = true;
		dlist_push_tail(&paused_listeners, &l->paused_node);
		watch_set_events(&l->watch, 0);
	}
	resume_at = TimestampTzPlusMilliseconds(now, ACCEPT_PAUSE_MS);
	if (TimestampDifferenceExceeds(fd_logged_at, now, FD_LOG_INTERVAL_MS))
	{
		ereport(LOG,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("tunnel_ssh worker has no file descriptor left for new connections: %m"),
				 errdetail("New connections wait in the listen backlog until connections close."),
				 errhint("Raise the open files limit of the PostgreSQL service (LimitNOFILE).")));
		fd_logged_at = now;
	}
}

long
listener_resume_due(TimestampTz now)
{
	dlist_mutable_iter iter;

	if (dlist_is_empty(&paused_listeners))
		return -1;
	if (now < resume_at)
		return (long) ((resume_at - now + 999) / 1000);
	dlist_foreach_modify(iter, &paused_listeners)
	{
		TunnelListener *l = dlist_container(TunnelListener, paused_node, iter.cur);

		dlist_delete(iter.cur);
		l->paused = false;
		watch_set_events(&l->watch, WL_SOCKET_READABLE);
	}
	return -1;
}

static TunnelListener *make_listener(pgsocket fd, ListenerAccept on_accept,
									 void *arg);

static void
on_readable(void *arg, uint32 occurred)
{
	TunnelListener *l = (TunnelListener *) arg;

	for (int i = 0; i < ACCEPT_BATCH; i++)
	{
		int			one = 1;
		pgsocket	client = accept4(l->fd, NULL, NULL,
									 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (client < 0)
		{
			if (errno == EMFILE || errno == ENFILE)
				pause_accepting(l);
			else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
				errno != ECONNABORTED)
				ereport(LOG,
						(errcode_for_socket_access(),
						 errmsg("tunnel_ssh could not accept a connection: %m")));
			return;
		}
		if (l->path == NULL)
			(void) setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one,
							  sizeof(one));
		l->on_accept(l->arg, client);
	}
}

TunnelListener *
listener_open(const char *address, int port, ListenerAccept on_accept,
			  void *arg, char *errbuf, size_t errlen)
{
	struct addrinfo hints = {0};
	struct addrinfo *ai = NULL;
	char		service[16];
	int			one = 1;
	int			rc;
	pgsocket	fd;

	/* Only literals: a listen address never needs DNS. */
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	snprintf(service, sizeof(service), "%d", port);
	rc = getaddrinfo(address, service, &hints, &ai);
	if (rc != 0)
	{
		snprintf(errbuf, errlen, "invalid listen address \"%s\": %s",
				 address, gai_strerror(rc));
		return NULL;
	}

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
	{
		snprintf(errbuf, errlen, "could not create socket: %m");
		freeaddrinfo(ai);
		return NULL;
	}
	/* A restarted worker must rebind ports whose old sockets linger. */
	(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0)
	{
		snprintf(errbuf, errlen, "could not listen on %s port %d: %m",
				 address, port);
		close(fd);
		freeaddrinfo(ai);
		return NULL;
	}
	freeaddrinfo(ai);
	return make_listener(fd, on_accept, arg);
}

static TunnelListener *
make_listener(pgsocket fd, ListenerAccept on_accept, void *arg)
{
	TunnelListener *l = palloc0(sizeof(TunnelListener));

	l->fd = fd;
	l->on_accept = on_accept;
	l->arg = arg;
	watch_add(&l->watch, fd, WL_SOCKET_READABLE, on_readable, l);
	return l;
}

bool
listener_prepare_directory(const char *dir, char *errbuf, size_t errlen)
{
	struct stat st;

	if (mkdir(dir, S_IRWXU) < 0 && errno != EEXIST)
	{
		snprintf(errbuf, errlen, "could not create socket directory \"%s\": %m",
				 dir);
		return false;
	}
	if (lstat(dir, &st) < 0)
	{
		snprintf(errbuf, errlen, "could not stat socket directory \"%s\": %m",
				 dir);
		return false;
	}
	if (!S_ISDIR(st.st_mode))
	{
		snprintf(errbuf, errlen, "socket directory \"%s\" is not a directory",
				 dir);
		return false;
	}
	if (st.st_uid != geteuid())
	{
		snprintf(errbuf, errlen,
				 "socket directory \"%s\" is owned by user ID %u, not by the server's user",
				 dir, (unsigned) st.st_uid);
		return false;
	}
	if ((st.st_mode & 07777) != S_IRWXU && chmod(dir, S_IRWXU) < 0)
	{
		snprintf(errbuf, errlen,
				 "could not make socket directory \"%s\" mode 0700: %m", dir);
		return false;
	}
	return true;
}

TunnelListener *
listener_open_unix(const char *dir, int port, ListenerAccept on_accept,
				   void *arg, char *errbuf, size_t errlen)
{
	struct sockaddr_un addr = {0};
	struct stat st;
	pgsocket	fd;
	TunnelListener *l;
	int			n;

	addr.sun_family = AF_UNIX;
	n = snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/.s.PGSQL.%d",
				 dir, port);
	if (n < 0 || n >= (int) sizeof(addr.sun_path))
	{
		snprintf(errbuf, errlen,
				 "socket path \"%s/.s.PGSQL.%d\" is longer than %d bytes",
				 dir, port, (int) sizeof(addr.sun_path) - 1);
		return NULL;
	}
	/* A socket file left by a worker that was killed: ours to replace. */
	if (lstat(addr.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
		(void) unlink(addr.sun_path);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
	{
		snprintf(errbuf, errlen, "could not create socket: %m");
		return NULL;
	}
	if (bind(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0 ||
		chmod(addr.sun_path, S_IRUSR | S_IWUSR) < 0 || listen(fd, 128) < 0)
	{
		snprintf(errbuf, errlen, "could not listen on Unix socket \"%s\": %m",
				 addr.sun_path);
		close(fd);
		return NULL;
	}
	l = make_listener(fd, on_accept, arg);
	l->path = pstrdup(addr.sun_path);
	return l;
}

bool
listener_is_loopback(const char *address)
{
	struct in_addr v4;
	struct in6_addr v6;

	if (inet_pton(AF_INET, address, &v4) == 1)
		return (ntohl(v4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, address, &v6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&v6);
	return false;
}

void
listener_close(TunnelListener *l)
{
	if (l->paused)
		dlist_delete(&l->paused_node);
	watch_remove(&l->watch);
	close(l->fd);
	if (l->path)
	{
		(void) unlink(l->path);
		pfree(l->path);
	}
	pfree(l);
}
