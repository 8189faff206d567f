/*-------------------------------------------------------------------------
 *
 * dial.c
 *	  The way to a bastion's (or a proxy's) TCP port without ever blocking:
 *	  a name looked up in glibc's resolver thread (getaddrinfo_a), and its
 *	  addresses connected to in turn with non-blocking sockets.
 *
 * Only sockets and addresses here, no SSH: the connect machine (connect.c)
 * drives these calls from its steps and words their failures.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dial.h"

/*
 * Start looking up host:port.  A literal address resolves at once: *addrs
 * is set and NULL returned.  A name goes to glibc's resolver thread: the
 * request is returned (poll it with gai_error(); its ar_result is the
 * answer).  On failure, NULL with *addrs NULL and *rc the getaddrinfo error.
 */
struct gaicb *
tunnel_dial_resolve_start(const char *host, int port, struct addrinfo **addrs,
						  int *rc)
{
	struct addrinfo hints = {0};
	char		service[16];
	struct gaicb *gai;
	struct addrinfo *req;
	char	   *svc;
	char	   *name;

	*addrs = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	snprintf(service, sizeof(service), "%d", port);
	*rc = getaddrinfo(host, service, &hints, addrs);
	if (*rc == 0)
		return NULL;
	*addrs = NULL;

	/*
	 * glibc's resolver thread reads the request until it ends, which may be
	 * after the caller has gone (a reload freed the tunnel's definition, a
	 * cancelled tunnel_test): the request owns a copy of every string.
	 */
	gai = calloc(1, sizeof(struct gaicb) + sizeof(struct addrinfo) +
				 sizeof(service) + strlen(host) + 1);
	if (gai == NULL)
	{
		*rc = EAI_MEMORY;
		return NULL;
	}
	req = (struct addrinfo *) (gai + 1);
	svc = (char *) (req + 1);
	name = svc + sizeof(service);
	req->ai_family = AF_UNSPEC;
	req->ai_socktype = SOCK_STREAM;
	req->ai_flags = AI_NUMERICSERV;
	strlcpy(svc, service, sizeof(service));
	strcpy(name, host);
	gai->ar_name = name;
	gai->ar_service = svc;
	gai->ar_request = req;
	*rc = getaddrinfo_a(GAI_NOWAIT, &gai, 1, NULL);
	if (*rc != 0)
	{
		free(gai);
		return NULL;
	}
	return gai;
}

/* Free a lookup; one glibc cannot cancel any more is left to its thread. */
void
tunnel_dial_resolve_free(struct gaicb *gai)
{
	if (gai == NULL)
		return;
	if (gai_cancel(gai) == EAI_NOTCANCELED)
		return;
	if (gai->ar_result)
		freeaddrinfo(gai->ar_result);
	free(gai);
}

/*
 * A non-blocking TCP socket to ai, with TCP_NODELAY, its connect started;
 * PGINVALID_SOCKET with errno set if that failed at once.
 */
static pgsocket
tcp_start(const struct addrinfo *ai)
{
	int			one = 1;
	pgsocket	fd;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return PGINVALID_SOCKET;
	/* libssh2 does not set it; without it small packets wait on ACKs. */
	(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)
		return fd;
	{
		int			save_errno = errno;

		close(fd);
		errno = save_errno;
	}
	return PGINVALID_SOCKET;
}

/*
 * How the connect started on fd went: 0 once it succeeded, its errno once
 * it failed, EINPROGRESS while it goes on.
 */
int
tunnel_dial_tcp_result(pgsocket fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};
	int			err = 0;
	socklen_t	len = sizeof(err);

	if (poll(&pfd, 1, 0) == 0)
		return EINPROGRESS;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

int
tunnel_dial_resolve_poll(struct gaicb **gai, struct addrinfo **addrs)
{
	int			rc = gai_error(*gai);

	if (rc != 0)
		return rc;
	*addrs = (*gai)->ar_result;
	(*gai)->ar_result = NULL;
	tunnel_dial_resolve_free(*gai);
	*gai = NULL;
	return 0;
}

pgsocket
tunnel_dial_tcp_next(struct addrinfo **next, const char *host,
					 char *address, size_t address_len, int *err)
{
	while (*next)
	{
		struct addrinfo *ai = *next;
		pgsocket	fd;

		*next = ai->ai_next;
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, address, address_len,
						NULL, 0, NI_NUMERICHOST) != 0)
			strlcpy(address, host, address_len);
		fd = tcp_start(ai);
		if (fd == PGINVALID_SOCKET)
		{
			*err = errno;
			continue;
		}
		return fd;
	}
	return PGINVALID_SOCKET;
}

/*
 * The proxy gets one address and cannot try the next: the first IPv4 one,
 * as a proxy's way out is IPv4 more often than not ("localhost" is ::1
 * first on some hosts).
 */
bool
tunnel_dial_proxy_address(const struct addrinfo *addrs, char *buf,
						  size_t len)
{
	const struct addrinfo *ai = addrs;

	while (ai->ai_next && ai->ai_family != AF_INET)
		ai = ai->ai_next;
	if (ai->ai_family != AF_INET)
		ai = addrs;
	return getnameinfo(ai->ai_addr, ai->ai_addrlen, buf, len, NULL, 0,
					   NI_NUMERICHOST) == 0;
}
