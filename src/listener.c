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
 * local users cannot reach, unlike a loopback TCP port.  As PostgreSQL does
 * for its own sockets (miscinit.c, CreateSocketLockFile), a lock file beside
 * each socket names the server that owns it, so two servers sharing a
 * directory never take each other's sockets; and the directory is checked
 * before each bind, parents included: nobody but the server's OS user (and
 * root) may be able to put another directory in its place.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <signal.h>
#include <unistd.h>

#include "miscadmin.h"
#include "utils/timestamp.h"

#include "listener.h"
#include "tunnel_limits.h"
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
	char	   *lock_path;		/* its lock file */
	dev_t		sock_dev;		/* the socket file we bound, to remove only */
	ino_t		sock_ino;		/* that one */
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

/*
 * Is dir (st: its lstat), a parent of socket directory sockdir, safe: can
 * no OS user but root and ours rename what it holds?  Its owner can, and
 * whoever may write to it; in a sticky directory (/tmp) only their own
 * entries.  A symbolic link cannot be changed, only replaced in its own
 * parent, which the caller checks next.
 */
static bool
parent_is_safe(const char *dir, const struct stat *st, const char *sockdir,
			   char *errbuf, size_t errlen)
{
	if (st->st_uid != 0 && st->st_uid != geteuid())
	{
		snprintf(errbuf, errlen,
				 "socket directory \"%s\" is unsafe: its parent \"%s\" is owned by user ID %u, who could replace it",
				 sockdir, dir, (unsigned) st->st_uid);
		return false;
	}
	if (S_ISLNK(st->st_mode))
		return true;
	if ((st->st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
		(st->st_mode & S_ISVTX) == 0)
	{
		snprintf(errbuf, errlen,
				 "socket directory \"%s\" is unsafe: its parent \"%s\" is writable by other users and has no sticky bit, so they could replace it",
				 sockdir, dir);
		return false;
	}
	return true;
}

/* Check every parent of path, an absolute path, up to the root. */
static bool
parents_are_safe(const char *path, const char *sockdir,
				 char *errbuf, size_t errlen)
{
	char		dir[MAXPGPATH];
	struct stat st;

	strlcpy(dir, path, sizeof(dir));
	canonicalize_path(dir);
	for (;;)
	{
		char	   *slash = strrchr(dir, '/');

		if (slash == NULL || strcmp(dir, "/") == 0)
			return true;
		if (slash == dir)
			slash[1] = '\0';	/* the root itself */
		else
			*slash = '\0';
		if (lstat(dir, &st) < 0)
		{
			snprintf(errbuf, errlen,
					 "could not stat \"%s\", a parent of socket directory \"%s\": %m",
					 dir, sockdir);
			return false;
		}
		if (!parent_is_safe(dir, &st, sockdir, errbuf, errlen))
			return false;
	}
}

bool
listener_prepare_directory(const char *dir, char *errbuf, size_t errlen)
{
	char		real[PATH_MAX];
	struct stat st;

	/*
	 * The path as clients and bind() walk it, and, where a parent is a
	 * symbolic link (/var/run on Debian), the directories it resolves to.
	 */
	if (!parents_are_safe(dir, dir, errbuf, errlen))
		return false;
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
	if (S_ISLNK(st.st_mode))
	{
		snprintf(errbuf, errlen,
				 "socket directory \"%s\" is a symbolic link", dir);
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
				 "socket directory \"%s\" is owned by user ID %u, not by the server's user (ID %u)",
				 dir, (unsigned) st.st_uid, (unsigned) geteuid());
		return false;
	}
	if (realpath(dir, real) == NULL)
	{
		snprintf(errbuf, errlen,
				 "could not resolve socket directory \"%s\": %m", dir);
		return false;
	}
	if (strcmp(real, dir) != 0 && !parents_are_safe(real, dir, errbuf, errlen))
		return false;
	/* Ours: we may set its mode, as PostgreSQL's initdb does for PGDATA. */
	if ((st.st_mode & 07777) != S_IRWXU && chmod(dir, S_IRWXU) < 0)
	{
		snprintf(errbuf, errlen,
				 "could not make socket directory \"%s\" mode 0700: %m", dir);
		return false;
	}
	return true;
}

/*
 * The lock file's contents, PostgreSQL's layout for a socket lock file
 * (pidfile.h: PID, data directory, start time, port, socket directory),
 * then a line of our own: it tells this server's tunnel sockets from its
 * own (unix_socket_directories), whose lock files name the same PID.
 */
#define LOCK_MARKER "tunnel_ssh"

static void
lock_contents(char *buf, size_t len, const char *dir, int port)
{
	snprintf(buf, len, "%d\n%s\n%ld\n%d\n%s\n%s\n",
			 (int) PostmasterPid, DataDir,
			 (long) timestamptz_to_time_t(PgStartTime), port, dir,
			 LOCK_MARKER);
}

/* Reads a lock file: 1 read, 0 gone, -1 unreadable (errno set). */
static int
read_lock(const char *lock_path, char *buf, size_t len)
{
	int			fd = open(lock_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t		n;

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 1;
}

/* Line n (from 1) of a lock file's text, or "" when it has fewer. */
static void
lock_line(const char *text, int n, char *out, size_t len)
{
	const char *p = text;
	size_t		l;

	while (--n > 0 && p != NULL)
	{
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	if (p == NULL)
	{
		out[0] = '\0';
		return;
	}
	l = strcspn(p, "\n");
	strlcpy(out, p, Min(len, l + 1));
}

/*
 * Does process pid live?  As CreateLockFile reasons: kill(pid, 0) fails
 * with ESRCH if there is no such process, and with EPERM if it belongs to
 * another OS user, which cannot be a server writing in a directory only we
 * can enter.  Beyond that, a zombie is no server either: a postmaster that
 * exited keeps its PID until its parent reaps it, which in a container whose
 * first process does not reap can take a long time.
 */
static bool
process_lives(pid_t pid)
{
	char		path[64];
	char		stat_line[512];
	FILE	   *f;
	char	   *p = NULL;

	if (kill(pid, 0) != 0)
		return errno != ESRCH && errno != EPERM;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
	f = fopen(path, "r");
	if (f == NULL)
		return true;			/* no /proc: trust kill() */
	if (fgets(stat_line, sizeof(stat_line), f) != NULL)
		p = strrchr(stat_line, ')');
	fclose(f);
	/* "pid (comm) S ...": the state follows the command's parenthesis. */
	return !(p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

/*
 * Take the lock file of the socket at path, as CreateLockFile does: a lock
 * file that names a live process other than our postmaster means another
 * server owns the socket (LISTENER_SOCKET_IN_USE).  One that names our
 * postmaster is ours, left by an earlier worker that was killed; one whose
 * process is gone is stale.  Those are replaced.
 */
static bool
lock_socket(const char *dir, int port, const char *path,
			const char *lock_path, ListenerFailure *why,
			char *errbuf, size_t errlen)
{
	char		buf[MAXPGPATH * 2 + 256];
	int			fd;

	*why = LISTENER_FAILED;
	for (int tries = 0;; tries++)
	{
		char		line[MAXPGPATH];
		pid_t		other;
		int			rc;

		fd = open(lock_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
				  S_IRUSR | S_IWUSR);
		if (fd >= 0)
			break;
		if ((errno != EEXIST && errno != EACCES) || tries > 100)
		{
			snprintf(errbuf, errlen, "could not create lock file \"%s\": %m",
					 lock_path);
			return false;
		}
		rc = read_lock(lock_path, buf, sizeof(buf));
		if (rc == 0)
			continue;			/* removed meanwhile: try again */
		if (rc < 0)
		{
			snprintf(errbuf, errlen, "could not read lock file \"%s\": %m",
					 lock_path);
			return false;
		}
		lock_line(buf, 1, line, sizeof(line));
		other = (pid_t) abs(atoi(line));
		lock_line(buf, 2, line, sizeof(line));
		if (other <= 0)
		{
			/* Empty: another server is writing it, or crashed doing so. */
			*why = LISTENER_SOCKET_IN_USE;
			snprintf(errbuf, errlen,
					 "Unix socket \"%s\" is locked by another server: its lock file \"%s\" holds no process ID",
					 path, lock_path);
			return false;
		}
		if (other == PostmasterPid && strstr(buf, "\n" LOCK_MARKER "\n") == NULL)
		{
			*why = LISTENER_SOCKET_IN_USE;
			snprintf(errbuf, errlen,
					 "Unix socket \"%s\" is this server's own socket (unix_socket_directories)",
					 path);
			return false;
		}
		if (other != PostmasterPid && other != MyProcPid &&
			process_lives(other))
		{
			*why = LISTENER_SOCKET_IN_USE;
			snprintf(errbuf, errlen,
					 "Unix socket \"%s\" belongs to another server: PID %d, data directory \"%s\"",
					 path, (int) other, line);
			return false;
		}

		/* Ours (an earlier worker of this server), or nobody's: stale. */
		if (unlink(lock_path) < 0 && errno != ENOENT)
		{
			snprintf(errbuf, errlen,
					 "could not remove old lock file \"%s\": %m", lock_path);
			return false;
		}
	}
	lock_contents(buf, sizeof(buf), dir, port);
	errno = 0;
	if (write(fd, buf, strlen(buf)) != (ssize_t) strlen(buf))
	{
		if (errno == 0)
			errno = ENOSPC;
		snprintf(errbuf, errlen, "could not write lock file \"%s\": %m",
				 lock_path);
		close(fd);
		(void) unlink(lock_path);
		return false;
	}
	close(fd);
	return true;
}

/* Is the lock file at lock_path still the one we wrote? */
static bool
lock_is_ours(const char *lock_path)
{
	char		buf[MAXPGPATH * 2 + 256];
	char		line[32];

	if (read_lock(lock_path, buf, sizeof(buf)) <= 0)
		return false;
	lock_line(buf, 1, line, sizeof(line));
	return atoi(line) == (int) PostmasterPid &&
		strstr(buf, "\n" LOCK_MARKER "\n") != NULL;
}

/*
 * A directory that failed its checks is not checked again for this long:
 * with the directory unusable every forward retries its bind each second,
 * and a failure reused binds nothing.
 */
#define DIR_FAILURE_REUSE_MS 500

TunnelListener *
listener_open_unix(const char *dir, int port, ListenerAccept on_accept,
				   void *arg, ListenerFailure *why,
				   char *errbuf, size_t errlen)
{
	static char failed_dir[MAXPGPATH];
	static char failed_error[TUNNEL_ERROR_MAXLEN];
	static TimestampTz failed_at = 0;
	struct sockaddr_un addr = {0};
	char		lock_path[sizeof(addr.sun_path) + 8];
	struct stat st;
	TimestampTz now = GetCurrentTimestamp();
	pgsocket	fd;
	TunnelListener *l;
	int			n;

	*why = LISTENER_FAILED;
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
	snprintf(lock_path, sizeof(lock_path), "%s.lock", addr.sun_path);

	/* Before each bind: the directory may have changed since the last. */
	if (strcmp(failed_dir, dir) == 0 &&
		!TimestampDifferenceExceeds(failed_at, now, DIR_FAILURE_REUSE_MS))
	{
		*why = LISTENER_UNSAFE_DIRECTORY;
		strlcpy(errbuf, failed_error, errlen);
		return NULL;
	}
	if (!listener_prepare_directory(dir, errbuf, errlen))
	{
		*why = LISTENER_UNSAFE_DIRECTORY;
		strlcpy(failed_dir, dir, sizeof(failed_dir));
		strlcpy(failed_error, errbuf, sizeof(failed_error));
		failed_at = now;
		return NULL;
	}
	failed_dir[0] = '\0';

	if (!lock_socket(dir, port, addr.sun_path, lock_path, why, errbuf, errlen))
		return NULL;
	/* The lock is ours: whatever is at the socket's path is stale. */
	(void) unlink(addr.sun_path);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
	{
		snprintf(errbuf, errlen, "could not create socket: %m");
		(void) unlink(lock_path);
		return NULL;
	}
	if (bind(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0 ||
		chmod(addr.sun_path, S_IRUSR | S_IWUSR) < 0 || listen(fd, 128) < 0 ||
		lstat(addr.sun_path, &st) < 0)
	{
		snprintf(errbuf, errlen, "could not listen on Unix socket \"%s\": %m",
				 addr.sun_path);
		close(fd);
		(void) unlink(lock_path);
		return NULL;
	}
	l = make_listener(fd, on_accept, arg);
	l->path = pstrdup(addr.sun_path);
	l->lock_path = pstrdup(lock_path);
	l->sock_dev = st.st_dev;
	l->sock_ino = st.st_ino;
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
		struct stat st;

		/*
		 * Socket first, then its lock, as PostgreSQL does; only what is
		 * still ours (someone may have removed them, and another server
		 * put its own there).
		 */
		if (lstat(l->path, &st) == 0 && st.st_dev == l->sock_dev &&
			st.st_ino == l->sock_ino)
			(void) unlink(l->path);
		if (lock_is_ours(l->lock_path))
			(void) unlink(l->lock_path);
		pfree(l->path);
		pfree(l->lock_path);
	}
	pfree(l);
}
