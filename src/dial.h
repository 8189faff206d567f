/*-------------------------------------------------------------------------
 *
 * dial.h
 *	  Name lookup and TCP connects that never block (dial.c), for the
 *	  connect machine (connect.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_DIAL_H
#define TUNNEL_DIAL_H

#include <netdb.h>

/*
 * Start looking up host:port.  A literal address resolves at once: *addrs
 * is set and NULL returned.  A name goes to glibc's resolver thread: the
 * request is returned (tunnel_dial_resolve_poll).  On failure, NULL with *addrs
 * NULL and *rc the getaddrinfo error.
 */
extern struct gaicb *tunnel_dial_resolve_start(const char *host, int port,
											   struct addrinfo **addrs,
											   int *rc);

/*
 * How the lookup *gai goes: EAI_INPROGRESS, its error, or 0 once it
 * answered: *addrs is the answer (freeaddrinfo it), and *gai freed and NULL.
 */
extern int	tunnel_dial_resolve_poll(struct gaicb **gai,
									 struct addrinfo **addrs);

/* Free a lookup; one glibc cannot cancel any more is left to its thread. */
extern void tunnel_dial_resolve_free(struct gaicb *gai);

/*
 * Start a non-blocking connect (TCP_NODELAY) to the next address of *next
 * that takes one, moving *next past it; its numeric text in address (host
 * if it has none).  PGINVALID_SOCKET once none is left; *err is the errno
 * of the last address that failed at once.
 */
extern pgsocket tunnel_dial_tcp_next(struct addrinfo **next,
									 const char *host, char *address,
									 size_t address_len, int *err);

/*
 * How the connect started on fd went: 0 once it succeeded, its errno once
 * it failed, EINPROGRESS while it goes on.
 */
extern int	tunnel_dial_tcp_result(pgsocket fd);

/*
 * The text of the one address of addrs that a proxy is asked for; false if
 * it has none.
 */
extern bool tunnel_dial_proxy_address(const struct addrinfo *addrs,
									  char *buf, size_t len);

#endif							/* TUNNEL_DIAL_H */
