/*-------------------------------------------------------------------------
 *
 * connect.c
 *	  Reaching a bastion: name lookup, TCP connect, and libssh2's errors and
 *	  host key in a DBA's words, for the worker's sessions and tunnel_test.
 *
 * Neither may block: the worker serves every tunnel from one loop, and
 * tunnel_test must stop at a cancel or statement_timeout.  So names are
 * looked up in glibc's resolver thread (getaddrinfo_a) and connects are
 * non-blocking; each caller waits in its own way and keeps its own words
 * for what failed (a status line, or a step of tunnel_test with advice).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "connect.h"
#include "hostkeys.h"
#include "keys.h"

struct gaicb *
tunnel_resolve_start(const char *host, int port, struct addrinfo **addrs,
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

void
tunnel_resolve_free(struct gaicb *gai)
{
	if (gai == NULL)
		return;
	/* A lookup that cannot be cancelled still owns its gaicb: leak it. */
	if (gai_cancel(gai) == EAI_NOTCANCELED)
		return;
	if (gai->ar_result)
		freeaddrinfo(gai->ar_result);
	free(gai);
}

pgsocket
tunnel_connect_start(const struct addrinfo *ai)
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

int
tunnel_connect_result(pgsocket fd)
{
	int			err = 0;
	socklen_t	len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

/*
 * libssh2's own words ("_libssh2_transport_read() bailed out!") would mean
 * nothing to a DBA where the socket failed.
 */
const char *
tunnel_ssh_error_text(LIBSSH2_SESSION *ssh)
{
	char	   *msg = NULL;
	int			rc;

	if (ssh == NULL)
		return "unknown error";
	rc = libssh2_session_last_error(ssh, &msg, NULL, 0);
	switch (rc)
	{
		case LIBSSH2_ERROR_SOCKET_RECV:
		case LIBSSH2_ERROR_SOCKET_DISCONNECT:
			return "the bastion closed the connection";
		case LIBSSH2_ERROR_SOCKET_SEND:
			return "could not send to the bastion (connection reset)";
		default:
			return msg ? msg : "unknown error";
	}
}

/*
 * A bastion that closes the connection before its SSH banner refuses us:
 * OpenSSH 9.8 and later do so for a while after failed logins from our
 * address (PerSourcePenalties).
 */
const char *
tunnel_ssh_handshake_error(LIBSSH2_SESSION *ssh, int rc, bool *refused)
{
	const char *banner = libssh2_session_banner_get(ssh);

	/*
	 * sshd refusing an address writes one line ("Not allowed at this time")
	 * and closes; libssh2 keeps that line where the banner would be.
	 */
	*refused = (banner == NULL || strncmp(banner, "SSH-", 4) != 0) &&
		(rc == LIBSSH2_ERROR_SOCKET_RECV ||
		 rc == LIBSSH2_ERROR_SOCKET_DISCONNECT ||
		 rc == LIBSSH2_ERROR_SOCKET_SEND);
	if (*refused)
		return "the bastion refused the connection (OpenSSH 9.8+ refuses an address for a while after failed logins: see PerSourcePenalties)";
	return tunnel_ssh_error_text(ssh);
}

char *
tunnel_ssh_host_key(LIBSSH2_SESSION *ssh, char **fingerprint)
{
	const char *digest = libssh2_hostkey_hash(ssh, LIBSSH2_HOSTKEY_HASH_SHA256);
	const char *type;

	*fingerprint = NULL;
	if (digest == NULL)
		return NULL;
	*fingerprint = keys_fingerprint_from_digest((const unsigned char *) digest);
	type = hostkeys_received_type(ssh);
	return psprintf("%s%s%s", type, *type ? " " : "", *fingerprint);
}

/*
 * Say why the bastion did not open a channel in the words of its cause
 * (RFC 4254 reason codes, as libssh2 words them).
 */
void
tunnel_open_error_text(char *buf, size_t len, const char *host, int port,
					   const char *ssh_message)
{
	if (ssh_message && strstr(ssh_message, "connect failed"))
		snprintf(buf, len,
				 "nothing listens on %s:%d as seen from the bastion (connection refused or no route)",
				 host, port);
	else if (ssh_message && strstr(ssh_message, "administratively prohibited"))
		snprintf(buf, len,
				 "the bastion does not permit %s:%d: the key's authorized_keys line lacks it (replace the line with tunnel_public_key()), or AllowTcpForwarding or PermitOpen forbid it",
				 host, port);
	else
		snprintf(buf, len, "bastion could not open a connection to %s:%d: %s",
				 host, port, ssh_message ? ssh_message : "unknown error");
}
