/*-------------------------------------------------------------------------
 *
 * listener.c
 *	  Listening sockets for forwards: bind, accept, hand clients over.
 *
 * Accepted sockets get TCP_NODELAY at once: libpq's TLS handshake and
 * PostgreSQL's small protocol messages otherwise stall on delayed ACKs
 * (shared/PLATFORM.md measured 6-10x slower connection set-up).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listener.h"
#include "watch.h"

/* Clients accepted per wake-up, so one busy port cannot starve the rest. */
#define ACCEPT_BATCH 32

struct TunnelListener
{
	pgsocket	fd;
	Watch		watch;
	ListenerAccept on_accept;
	void	   *arg;
};

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
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
				errno != ECONNABORTED)
				ereport(LOG,
						(errcode_for_socket_access(),
						 errmsg("tunnel_ssh could not accept a connection: %m")));
			return;
		}
		(void) setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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
	TunnelListener *l;

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

	l = palloc0(sizeof(TunnelListener));
	l->fd = fd;
	l->on_accept = on_accept;
	l->arg = arg;
	watch_add(&l->watch, fd, WL_SOCKET_READABLE, on_readable, l);
	return l;
}

void
listener_close(TunnelListener *l)
{
	watch_remove(&l->watch);
	close(l->fd);
	pfree(l);
}
