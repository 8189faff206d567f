/*-------------------------------------------------------------------------
 *
 * connect.h
 *	  The connect machine: the one way in to a bastion, for the worker's
 *	  sessions and tunnel_test alike.  Name lookup, TCP connect (or a socket
 *	  the owner hands over: a jump tunnel's channel), SSH handshake with the
 *	  method preferences, host key check, public key authentication.
 *
 * The machine never blocks and never waits: its owner calls
 * tunnel_connect_step whenever the socket is ready for what
 * tunnel_connect_events asked (or every few milliseconds while a name is
 * being looked up), and decides itself how long a step may take: the worker
 * from its WaitEventSet with one deadline per attempt, tunnel_test from a
 * WaitLatchOrSocket loop with one per step (as libpqsrv_connect serves
 * postgres_fdw, dblink and walreceiver).  A failure ends the machine with a
 * cause and one message, the same words in the worker's last_error, its log
 * and tunnel_test (which only adds its advice).
 *
 * libssh2's handshake and userauth calls are made here and nowhere else.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_CONNECT_H
#define TUNNEL_CONNECT_H

#include <netdb.h>
#include <libssh2.h>

#include "cert.h"
#include "methods.h"
#include "proxy.h"
#include "tunnel_limits.h"

typedef enum TunnelConnectStep
{
	CONNECT_RESOLVE,			/* looking up the bastion's name */
	CONNECT_TCP,				/* TCP connect, address after address */
	CONNECT_PROXY,				/* the proxy's handshake (proxy.h) */
	CONNECT_HANDSHAKE,			/* SSH handshake and host key check */
	CONNECT_AUTH,				/* public key authentication */
	CONNECT_DONE,				/* logged in: the owner takes sock and ssh */
	CONNECT_FAILED				/* see failure and message */
} TunnelConnectStep;

typedef enum TunnelConnectFailure
{
	CONNECT_OK,
	CONNECT_FAILURE_RESOLVE,	/* the name did not resolve */
	CONNECT_FAILURE_TCP,		/* no address took the connection */
	CONNECT_FAILURE_PROXY,		/* the proxy refused, or did not speak */
	CONNECT_FAILURE_TIMEOUT,	/* the owner's deadline passed (any step) */
	CONNECT_FAILURE_HANDSHAKE,	/* no SSH handshake: not SSH, or it broke */
	CONNECT_FAILURE_REFUSED,	/* closed before its banner: sshd's penalties */
	CONNECT_FAILURE_JUMP,		/* the jump tunnel's channel closed first */
	CONNECT_FAILURE_HOST_KEY,	/* the host key matches no pin */
	CONNECT_FAILURE_HOST_KEY_UNKNOWN,	/* none known, and none may be trusted */
	CONNECT_FAILURE_KEY_REFUSED,	/* the bastion accepted none of the keys */
	CONNECT_FAILURE_KEY_UNREADABLE, /* libssh2 could not load the key */
	CONNECT_FAILURE_INVALID,	/* a setting libssh2 refused */
	CONNECT_FAILURE_OTHER		/* the socket or libssh2 failed otherwise */
} TunnelConnectFailure;

/* A key to offer; the machine tries them in order. */
typedef struct TunnelConnectKey
{
	const char *private_key;	/* secret; NULL reads as unreadable */
	const char *fingerprint;
	const char *certificate;	/* OpenSSH certificate line of it, or NULL */
} TunnelConnectKey;

#define TUNNEL_CONNECT_MAX_KEYS 2

/*
 * Tells the owner when the machine opens a socket and before it closes one,
 * so that the owner can watch it (the worker's wait set).
 */
typedef void (*TunnelConnectSocketHook) (void *owner, pgsocket sock,
										 bool opened);

typedef struct TunnelConnect
{
	/*
	 * What to reach, set by the owner before tunnel_connect_begin.  The
	 * machine copies the strings at begin: the worker may replace a
	 * tunnel's definition (and wipe its keys) while an attempt runs.
	 */
	const char *tunnel;			/* the tunnel's name, for advice */
	const char *host;
	int			port;
	const char *user;
	const char *via;			/* the jump tunnel's name, or NULL */
	const char *proxy;			/* secret: the first hop's proxy URL, or NULL */
	const char *key_type;		/* of the tunnel's key ("ed25519", "rsa") */
	const char *host_keys;		/* pins or the key trusted, or NULL */
	const char *host_key_algorithms;	/* learned order to ask in, or NULL */
	int			host_key_try;	/* family asked first for a bare pin */
	bool		trust_first_use;	/* host_keys NULL: accept what comes */
	TunnelConnectKey keys[TUNNEL_CONNECT_MAX_KEYS];
	int			nkeys;
	void	   *owner;			/* libssh2's abstract and the hook's */
	TunnelConnectSocketHook socket_hook;	/* or NULL */

	/* progress */
	MemoryContext parent;		/* the context the machine was made in */
	MemoryContext cxt;			/* the copies of the strings above */
	char	   *secrets[TUNNEL_CONNECT_MAX_KEYS];	/* the copies of the keys */
	char	   *proxy_secret;	/* the copy of proxy */
	TunnelConnectStep step;
	struct gaicb *gai;			/* a lookup under way */
	struct addrinfo *addrs;		/* the name's addresses */
	struct addrinfo *next_addr; /* to try after the current one */
	int			tcp_errno;		/* of the last address that failed */
	pgsocket	sock;
	bool		tcp;			/* false: a socket the owner handed over */
	LIBSSH2_SESSION *ssh;
	int			key;			/* being offered */
	TunnelProxyUrl *proxy_url;		/* parsed c->proxy, or NULL */
	TunnelProxyHandshake *proxy_hs;		/* PROXY: under way */
	char		proxy_name[NI_MAXHOST + 8];	/* "host:port" of the proxy */
	char		proxy_target[NI_MAXHOST];	/* what the proxy is asked for */

	/* what was learned: valid from the step named */
	char		address[NI_MAXHOST];	/* TCP: the address being tried */
	bool		handshaken;		/* HANDSHAKE done: what follows is known */
	TunnelMethods methods;		/* negotiated */
	char		host_key_shown[TUNNEL_FINGERPRINT_LEN + 80];	/* "ssh-ed25519 SHA256:..." */
	char		host_key_seen[TUNNEL_FINGERPRINT_LEN + 1];	/* "SHA256:..." */
	char		host_key_algorithm[64]; /* as negotiated */
	const char *host_key_type;	/* "ssh-ed25519" */
	bool		host_key_trusted;	/* first use: nothing was expected */
	bool		next_family;	/* a bare pin: ask for the next family */
	int			accepted;		/* DONE: index of the key accepted */
	TunnelCertSigner signer;	/* AUTH: libssh2's sign callback reads it */
	/* DONE: the accepted key's certificate, if it had one (cert.h) */
	bool		cert_used;
	char		cert_key_id[128];
	uint64		cert_valid_after;
	uint64		cert_valid_before;

	/* the end */
	TunnelConnectFailure failure;
	TunnelConnectStep failed_at;	/* the step that failed */
	char		message[TUNNEL_ERROR_MAXLEN];
	char		banner[81];		/* REFUSED: what was said instead, or "" */
} TunnelConnect;

/*
 * Before first use, in the memory context the machine lives in: a machine
 * that holds nothing.
 */
extern void tunnel_connect_init(TunnelConnect *c);

/*
 * Start reaching c->host:c->port (the fields above "progress" are set).  A
 * literal address is ready at once; a name goes to glibc's resolver thread.
 */
extern void tunnel_connect_begin(TunnelConnect *c);

/*
 * Start at the handshake on a socket the owner connected (one end of a
 * socketpair carried by a jump tunnel's channel); the machine owns it now.
 */
extern void tunnel_connect_begin_on(TunnelConnect *c, pgsocket sock);

/*
 * Whether one of c->keys can log in now: false, with why, when each has a
 * certificate that is expired, not yet valid or unreadable.  The machine
 * then fails at CONNECT_AUTH before it connects.
 */
extern bool tunnel_connect_keys_usable(const TunnelConnect *c, char *why,
									   size_t size);

/* Go as far as possible without waiting; c->step says where it stands. */
extern void tunnel_connect_step(TunnelConnect *c);

/*
 * What to wait for on c->sock before the next step (WL_SOCKET_* flags); 0
 * while a name is looked up (no descriptor: step again in a few ms).
 */
extern uint32 tunnel_connect_events(TunnelConnect *c);

/* The owner's deadline passed: the machine fails, naming its step. */
extern void tunnel_connect_timed_out(TunnelConnect *c, int seconds);

/* DONE: the owner takes the socket and the SSH session. */
extern void tunnel_connect_detach(TunnelConnect *c);

/*
 * Release whatever the machine still holds (lookup, addresses, SSH session,
 * socket), without waiting on a bastion that may never answer.
 */
extern void tunnel_connect_close(TunnelConnect *c);

/* ---------- words shared by the machine's owners ---------- */

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
 * Why the bastion refused a direct-tcpip channel of tunnel to host:port, in
 * buf, from libssh2's ssh_message; for the status and tunnel_test alike.
 */
extern void tunnel_open_error_text(char *buf, size_t len, const char *tunnel,
								   const char *host, int port,
								   const char *ssh_message);

#endif							/* TUNNEL_CONNECT_H */
