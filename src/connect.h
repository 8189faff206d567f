/*-------------------------------------------------------------------------
 *
 * connect.h
 *	  Reaching a bastion: name lookup, TCP connect, and libssh2's errors and
 *	  host key in a DBA's words.  The worker's sessions and tunnel_test both
 *	  use these, so both reach a bastion alike.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_CONNECT_H
#define TUNNEL_CONNECT_H

#include <netdb.h>
#include <libssh2.h>

/*
 * Start looking up host:port.  A literal address resolves at once: *addrs
 * is set and NULL returned.  A name goes to glibc's resolver thread: the
 * request is returned (poll it with gai_error(); its ar_result is the
 * answer), and must be freed with tunnel_resolve_free.  On failure, NULL
 * with *addrs NULL and *rc the getaddrinfo error.
 */
extern struct gaicb *tunnel_resolve_start(const char *host, int port,
										  struct addrinfo **addrs, int *rc);

/* Free a lookup; one glibc cannot cancel any more is left to its thread. */
extern void tunnel_resolve_free(struct gaicb *gai);

/*
 * A non-blocking TCP socket to ai, with TCP_NODELAY, its connect started;
 * PGINVALID_SOCKET with errno set if that failed at once.
 */
extern pgsocket tunnel_connect_start(const struct addrinfo *ai);

/* 0 once the connect started on fd has succeeded, else its errno. */
extern int	tunnel_connect_result(pgsocket fd);

/* libssh2's last error on ssh, in a DBA's words for the socket errors. */
extern const char *tunnel_ssh_error_text(LIBSSH2_SESSION *ssh);

/*
 * Did a call on ssh that returned rc leave a packet half sent?  Then only
 * that call may finish it (sendturn.h).
 */
static inline bool
tunnel_ssh_send_stalled(LIBSSH2_SESSION *ssh, int rc)
{
	return rc == LIBSSH2_ERROR_EAGAIN &&
		(libssh2_session_block_directions(ssh) & LIBSSH2_SESSION_BLOCK_OUTBOUND) != 0;
}

/*
 * Why libssh2_session_handshake failed with rc; *refused tells whether the
 * bastion closed the connection before its banner (sshd's penalties).
 */
extern const char *tunnel_ssh_handshake_error(LIBSSH2_SESSION *ssh, int rc,
											  bool *refused);

/*
 * The host key the bastion presented, as ssh-keygen -l shows it
 * ("ssh-ed25519 SHA256:..."), with its fingerprint alone in *fingerprint;
 * both palloc'd.  NULL if the bastion sent none.
 */
extern char *tunnel_ssh_host_key(LIBSSH2_SESSION *ssh, char **fingerprint);

/*
 * Why the bastion refused a direct-tcpip channel to host:port, in buf, from
 * libssh2's ssh_message; for the status and tunnel_test.
 */
extern void tunnel_open_error_text(char *buf, size_t len, const char *host,
								   int port, const char *ssh_message);

#endif							/* TUNNEL_CONNECT_H */
