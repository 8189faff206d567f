/*-------------------------------------------------------------------------
 *
 * proxy.h
 *	  An outbound proxy for the first hop: the proxy URL of a tunnel, and
 *	  the handshake (SOCKS5, RFC 1928 and 1929; HTTP CONNECT, RFC 9110) that
 *	  makes a TCP connection to the proxy a connection to the bastion.
 *
 * No socket is touched here: the connect machine (connect.c) sends what
 * tunnel_proxy_pending returns, reads at most tunnel_proxy_wanted bytes
 * (never past the proxy's reply: the bastion's SSH banner follows it) and
 * hands them to tunnel_proxy_received.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_PROXY_H
#define TUNNEL_PROXY_H

#include "tunnel_limits.h"

typedef enum TunnelProxyKind
{
	PROXY_SOCKS5,				/* socks5://: the bastion's address is sent */
	PROXY_SOCKS5H,				/* socks5h://: its name, the proxy resolves */
	PROXY_HTTP					/* http://: CONNECT name:port */
} TunnelProxyKind;

#define TUNNEL_PROXY_FIELD 256

typedef struct TunnelProxyUrl
{
	TunnelProxyKind kind;
	char		host[TUNNEL_PROXY_FIELD];
	int			port;
	bool		has_auth;
	char		user[TUNNEL_PROXY_FIELD];	/* secret */
	char		password[TUNNEL_PROXY_FIELD];	/* secret */
} TunnelProxyUrl;

/*
 * Parse 'socks5://[user:password@]host:port' (or socks5h://, http://);
 * user and password may be percent-encoded.  False with *reason (never
 * quoting the credentials) if it is no such URL.
 */
extern bool tunnel_proxy_parse(const char *text, TunnelProxyUrl *url,
							   const char **reason);

/* The URL without its credentials ("socks5://host:port"), palloc'd. */
extern char *tunnel_proxy_display(const TunnelProxyUrl *url);

/* "host:port" of the proxy, for messages, into buf. */
extern void tunnel_proxy_name(const TunnelProxyUrl *url, char *buf, size_t len);

/* Wipe the credentials. */
extern void tunnel_proxy_wipe(TunnelProxyUrl *url);

typedef enum TunnelProxyResult
{
	PROXY_MORE,					/* send what is pending, read what is wanted */
	PROXY_DONE,					/* the connection now reaches the bastion */
	PROXY_FAILED				/* see message */
} TunnelProxyResult;

typedef struct TunnelProxyHandshake TunnelProxyHandshake;

/*
 * A handshake through url to target:port (target a name, or for socks5://
 * the address the caller resolved), in the current memory context; its
 * first request is pending.
 */
extern TunnelProxyHandshake *tunnel_proxy_start(const TunnelProxyUrl *url,
												const char *target, int port);

/* Bytes to send now (*len 0: none). */
extern const char *tunnel_proxy_pending(TunnelProxyHandshake *h, int *len);

/* n bytes of the pending request were sent. */
extern void tunnel_proxy_sent(TunnelProxyHandshake *h, int n);

/* How many bytes may be read now without reading past the reply. */
extern int	tunnel_proxy_wanted(TunnelProxyHandshake *h);

/* Feed n (<= wanted) bytes the proxy sent. */
extern TunnelProxyResult tunnel_proxy_received(TunnelProxyHandshake *h,
											   const char *data, int n);

/* PROXY_FAILED: what the proxy said, in a DBA's words. */
extern const char *tunnel_proxy_message(TunnelProxyHandshake *h);

/* Wipe and free (the request may hold the credentials). */
extern void tunnel_proxy_free(TunnelProxyHandshake *h);

#endif							/* TUNNEL_PROXY_H */
