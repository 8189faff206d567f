/*-------------------------------------------------------------------------
 *
 * proxy.c
 *	  The outbound proxy of a tunnel's first hop (proxy.h): its URL, and
 *	  the SOCKS5 (RFC 1928, username/password per RFC 1929) and HTTP CONNECT
 *	  (RFC 9110) handshakes as pure request building and reply parsing.
 *
 * The connect machine does the I/O, so that the handshake is one more
 * non-blocking step under the owner's deadline.  Replies are read no
 * further than they go: SOCKS5 replies have lengths the protocol states,
 * and an HTTP reply is read a byte at a time up to its blank line.
 *
 * Credentials never appear in a message: a refusal names the proxy by host
 * and port only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "proxy.h"
#include "validate.h"

#define PROXY_BUF 1100			/* a request, or a reply's head */

typedef enum ProxyPhase
{
	PHASE_SOCKS_METHOD,			/* greeting sent, method choice awaited */
	PHASE_SOCKS_AUTH,			/* RFC 1929 sent, status awaited */
	PHASE_SOCKS_CONNECT,		/* CONNECT sent, reply awaited */
	PHASE_HTTP,					/* CONNECT sent, reply head awaited */
	PHASE_DONE,
	PHASE_FAILED
} ProxyPhase;

struct TunnelProxyHandshake
{
	TunnelProxyUrl url;
	char		name[TUNNEL_PROXY_FIELD + 8];	/* "host:port" of the proxy */
	char		target[TUNNEL_PROXY_FIELD];
	int			port;
	char		shown[TUNNEL_PROXY_FIELD + 8];	/* "target:port", for messages */
	ProxyPhase	phase;
	unsigned char out[PROXY_BUF];
	int			outlen;
	int			outpos;
	unsigned char in[PROXY_BUF];
	int			inlen;
	char		message[TUNNEL_ERROR_MAXLEN];
};

/* ---------- the URL ---------- */

static const struct
{
	const char *prefix;
	TunnelProxyKind kind;
}			schemes[] =
{
	{"socks5://", PROXY_SOCKS5},
	{"socks5h://", PROXY_SOCKS5H},
	{"http://", PROXY_HTTP},
};

static const char *
scheme_name(TunnelProxyKind kind)
{
	return kind == PROXY_SOCKS5 ? "socks5" :
		kind == PROXY_SOCKS5H ? "socks5h" : "http";
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode len bytes of src into out; false if malformed or long. */
static bool
decode_part(const char *src, size_t len, char *out)
{
	size_t		n = 0;

	for (size_t i = 0; i < len; i++)
	{
		char		c = src[i];

		if (c == '%')
		{
			if (i + 2 >= len ||
				hex_value(src[i + 1]) < 0 || hex_value(src[i + 2]) < 0)
				return false;
			c = (char) (hex_value(src[i + 1]) * 16 + hex_value(src[i + 2]));
			if (c == '\0')
				return false;
			i += 2;
		}
		if (n + 1 >= TUNNEL_PROXY_FIELD)
			return false;
		out[n++] = c;
	}
	out[n] = '\0';
	return true;
}

/* The credentials before '@' (the last one: a password may hold '@'). */
static bool
parse_userinfo(const char *info, size_t len, TunnelProxyUrl *url,
			   const char **reason)
{
	const char *colon = memchr(info, ':', len);

	if (colon == NULL || colon == info)
	{
		*reason = "Credentials must be given as user:password@ before the host.";
		return false;
	}
	if (!decode_part(info, colon - info, url->user) ||
		!decode_part(colon + 1, len - (colon + 1 - info), url->password))
	{
		*reason = "The user and password must be at most 255 bytes each, with valid %XX escapes.";
		return false;
	}
	url->has_auth = true;
	return true;
}

/* host:port, the host an IPv6 address in brackets or a name or IPv4. */
static bool
parse_hostport(const char *hp, TunnelProxyUrl *url, const char **reason)
{
	const char *colon;
	const char *host = hp;
	size_t		hostlen;
	char	   *end;
	long		port;

	if (hp[0] == '[')
	{
		const char *close = strchr(hp, ']');

		if (close == NULL || close[1] != ':')
		{
			*reason = "An IPv6 proxy address is written [address]:port.";
			return false;
		}
		host = hp + 1;
		hostlen = close - host;
		colon = close + 1;
	}
	else
	{
		colon = strrchr(hp, ':');
		if (colon == NULL)
		{
			*reason = "The proxy URL must end in host:port.";
			return false;
		}
		hostlen = colon - hp;
	}
	if (hostlen >= TUNNEL_PROXY_FIELD)
	{
		*reason = "The proxy's host name is too long.";
		return false;
	}
	memcpy(url->host, host, hostlen);
	url->host[hostlen] = '\0';
	if (!validate_host(url->host, reason))
		return false;
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno != 0 ||
		!validate_port(port, reason))
	{
		*reason = "The proxy's port must be a number from 1 to 65535, and nothing may follow it.";
		return false;
	}
	url->port = (int) port;
	return true;
}

bool
tunnel_proxy_parse(const char *text, TunnelProxyUrl *url, const char **reason)
{
	const char *rest = NULL;
	const char *at;

	memset(url, 0, sizeof(TunnelProxyUrl));
	for (int i = 0; i < lengthof(schemes); i++)
	{
		size_t		n = strlen(schemes[i].prefix);

		if (pg_strncasecmp(text, schemes[i].prefix, n) == 0)
		{
			url->kind = schemes[i].kind;
			rest = text + n;
			break;
		}
	}
	if (rest == NULL)
	{
		*reason = "A proxy URL starts with socks5://, socks5h:// or http://.";
		return false;
	}
	if (strpbrk(rest, "/?# \t\r\n") != NULL)
	{
		*reason = "A proxy URL is scheme://[user:password@]host:port, with no path.";
		return false;
	}
	at = strrchr(rest, '@');
	if (at)
	{
		if (!parse_userinfo(rest, at - rest, url, reason))
			return false;
		rest = at + 1;
	}
	return parse_hostport(rest, url, reason);
}

void
tunnel_proxy_name(const TunnelProxyUrl *url, char *buf, size_t len)
{
	bool		v6 = strchr(url->host, ':') != NULL;

	snprintf(buf, len, "%s%s%s:%d", v6 ? "[" : "", url->host, v6 ? "]" : "",
			 url->port);
}

char *
tunnel_proxy_display(const TunnelProxyUrl *url)
{
	char		name[TUNNEL_PROXY_FIELD + 8];

	tunnel_proxy_name(url, name, sizeof(name));
	return psprintf("%s://%s", scheme_name(url->kind), name);
}

void
tunnel_proxy_wipe(TunnelProxyUrl *url)
{
	OPENSSL_cleanse(url->user, sizeof(url->user));
	OPENSSL_cleanse(url->password, sizeof(url->password));
}

/* ---------- requests ---------- */

static void
out_byte(TunnelProxyHandshake *h, int b)
{
	Assert(h->outlen < PROXY_BUF);
	h->out[h->outlen++] = (unsigned char) b;
}

static void
out_bytes(TunnelProxyHandshake *h, const void *data, size_t n)
{
	Assert(h->outlen + n <= PROXY_BUF);
	memcpy(h->out + h->outlen, data, n);
	h->outlen += n;
}

static void
new_request(TunnelProxyHandshake *h, ProxyPhase phase)
{
	OPENSSL_cleanse(h->out, sizeof(h->out));
	h->outlen = h->outpos = 0;
	h->inlen = 0;
	h->phase = phase;
}

/* RFC 1928 section 3: offer no authentication, or username/password. */
static void
socks_greeting(TunnelProxyHandshake *h)
{
	new_request(h, PHASE_SOCKS_METHOD);
	out_byte(h, 5);
	out_byte(h, 1);
	out_byte(h, h->url.has_auth ? 2 : 0);
}

/* RFC 1929 section 2. */
static void
socks_auth(TunnelProxyHandshake *h)
{
	size_t		ulen = strlen(h->url.user);
	size_t		plen = strlen(h->url.password);

	new_request(h, PHASE_SOCKS_AUTH);
	out_byte(h, 1);
	out_byte(h, (int) ulen);
	out_bytes(h, h->url.user, ulen);
	out_byte(h, (int) plen);
	out_bytes(h, h->url.password, plen);
}

/* RFC 1928 section 4: CONNECT to an IPv4, IPv6 address or a domain name. */
static void
socks_connect(TunnelProxyHandshake *h)
{
	unsigned char addr[16];
	size_t		len = strlen(h->target);

	new_request(h, PHASE_SOCKS_CONNECT);
	out_byte(h, 5);
	out_byte(h, 1);
	out_byte(h, 0);
	/* A literal is sent as an address whatever the scheme: no name to resolve. */
	if (inet_pton(AF_INET, h->target, addr) == 1)
	{
		out_byte(h, 1);
		out_bytes(h, addr, 4);
	}
	else if (inet_pton(AF_INET6, h->target, addr) == 1)
	{
		out_byte(h, 4);
		out_bytes(h, addr, 16);
	}
	else
	{
		out_byte(h, 3);
		out_byte(h, (int) Min(len, 255));
		out_bytes(h, h->target, Min(len, 255));
	}
	out_byte(h, h->port >> 8);
	out_byte(h, h->port & 0xff);
}

/* RFC 9110 section 9.3.6, with Basic credentials (RFC 7617). */
static void
http_connect(TunnelProxyHandshake *h)
{
	bool		v6 = strchr(h->target, ':') != NULL;
	char		authority[TUNNEL_PROXY_FIELD + 8];
	char		line[PROXY_BUF];
	int			n;

	new_request(h, PHASE_HTTP);
	snprintf(authority, sizeof(authority), "%s%s%s:%d", v6 ? "[" : "",
			 h->target, v6 ? "]" : "", h->port);
	n = snprintf(line, sizeof(line), "CONNECT %s HTTP/1.1\r\nHost: %s\r\n",
				 authority, authority);
	out_bytes(h, line, n);
	if (h->url.has_auth)
	{
		char		plain[2 * TUNNEL_PROXY_FIELD + 1];
		unsigned char b64[4 * ((sizeof(plain) + 2) / 3) + 1];
		int			plen;
		int			blen;

		plen = snprintf(plain, sizeof(plain), "%s:%s", h->url.user,
						h->url.password);
		blen = EVP_EncodeBlock(b64, (unsigned char *) plain, plen);
		out_bytes(h, "Proxy-Authorization: Basic ", 27);
		out_bytes(h, b64, blen);
		out_bytes(h, "\r\n", 2);
		OPENSSL_cleanse(plain, sizeof(plain));
		OPENSSL_cleanse(b64, sizeof(b64));
	}
	out_bytes(h, "\r\n", 2);
	OPENSSL_cleanse(line, sizeof(line));
}

TunnelProxyHandshake *
tunnel_proxy_start(const TunnelProxyUrl *url, const char *target, int port)
{
	TunnelProxyHandshake *h = palloc0(sizeof(TunnelProxyHandshake));

	h->url = *url;
	tunnel_proxy_name(url, h->name, sizeof(h->name));
	strlcpy(h->target, target, sizeof(h->target));
	h->port = port;
	snprintf(h->shown, sizeof(h->shown), "%s%s%s:%d",
			 strchr(target, ':') ? "[" : "", target,
			 strchr(target, ':') ? "]" : "", port);
	if (url->kind == PROXY_HTTP)
		http_connect(h);
	else
		socks_greeting(h);
	return h;
}

const char *
tunnel_proxy_pending(TunnelProxyHandshake *h, int *len)
{
	*len = h->outlen - h->outpos;
	return (const char *) h->out + h->outpos;
}

void
tunnel_proxy_sent(TunnelProxyHandshake *h, int n)
{
	h->outpos += n;
}

/* ---------- replies ---------- */

static TunnelProxyResult
failed(TunnelProxyHandshake *h, const char *fmt,...) pg_attribute_printf(2, 3);

static TunnelProxyResult
failed(TunnelProxyHandshake *h, const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vsnprintf(h->message, sizeof(h->message), fmt, args);
	va_end(args);
	h->phase = PHASE_FAILED;
	return PROXY_FAILED;
}

/* RFC 1928 section 6, in its own words. */
static const char *
socks_reply_text(int rep)
{
	static const char *const texts[] = {
		"succeeded",
		"general SOCKS server failure",
		"connection not allowed by ruleset",
		"network unreachable",
		"host unreachable",
		"connection refused",
		"TTL expired",
		"command not supported",
		"address type not supported",
	};

	return rep >= 0 && rep < lengthof(texts) ? texts[rep] : "unknown error";
}

/* The whole length of a SOCKS5 CONNECT reply, once 5 bytes are in. */
static int
socks_reply_length(TunnelProxyHandshake *h)
{
	switch (h->in[3])
	{
		case 1:
			return 4 + 4 + 2;
		case 4:
			return 4 + 16 + 2;
		case 3:
			return 4 + 1 + h->in[4] + 2;
		default:
			return -1;
	}
}

int
tunnel_proxy_wanted(TunnelProxyHandshake *h)
{
	int			len;

	switch (h->phase)
	{
		case PHASE_SOCKS_METHOD:
		case PHASE_SOCKS_AUTH:
			return 2 - h->inlen;
		case PHASE_SOCKS_CONNECT:
			if (h->inlen < 5)
				return 5 - h->inlen;
			len = socks_reply_length(h);
			return len < 0 ? 0 : len - h->inlen;
		case PHASE_HTTP:
			return 1;
		default:
			return 0;
	}
}

static TunnelProxyResult
socks_method(TunnelProxyHandshake *h)
{
	if (h->in[0] != 5)
		return failed(h, "proxy %s did not answer as a SOCKS5 proxy (version byte %d)",
					  h->name, h->in[0]);
	if (h->in[1] == 0 && !h->url.has_auth)
	{
		socks_connect(h);
		return PROXY_MORE;
	}
	if (h->in[1] == 2 && h->url.has_auth)
	{
		socks_auth(h);
		return PROXY_MORE;
	}
	if (h->url.has_auth)
		return failed(h, "proxy %s does not take a username and password (SOCKS5 method %d): remove the credentials from the proxy URL",
					  h->name, h->in[1]);
	return failed(h, "proxy %s requires a username and password (SOCKS5 method %d): give them in the proxy URL",
				  h->name, h->in[1]);
}

static TunnelProxyResult
socks_reply(TunnelProxyHandshake *h)
{
	int			len = socks_reply_length(h);

	if (h->in[0] != 5)
		return failed(h, "proxy %s did not answer as a SOCKS5 proxy (version byte %d)",
					  h->name, h->in[0]);
	if (h->in[1] != 0)
		return failed(h, "proxy %s refused the connection to %s: %s (SOCKS5 reply %d)",
					  h->name, h->shown,
					  socks_reply_text(h->in[1]), h->in[1]);
	if (len < 0)
		return failed(h, "proxy %s answered with an unknown address type %d",
					  h->name, h->in[3]);
	if (h->inlen < len)
		return PROXY_MORE;
	h->phase = PHASE_DONE;
	return PROXY_DONE;
}

/* The status line of an HTTP reply head: 2xx connects. */
static TunnelProxyResult
http_reply(TunnelProxyHandshake *h)
{
	char		status[128];
	size_t		n = strcspn((char *) h->in, "\r\n");
	int			code = 0;

	if (h->inlen < 4 || memcmp(h->in + h->inlen - 4, "\r\n\r\n", 4) != 0)
		return PROXY_MORE;
	memcpy(status, h->in, Min(n, sizeof(status) - 1));
	status[Min(n, sizeof(status) - 1)] = '\0';
	for (char *c = status; *c; c++)
		if ((unsigned char) *c < 0x20 || (unsigned char) *c > 0x7e)
			*c = '?';
	if (strncmp(status, "HTTP/1.", 7) != 0 ||
		sscanf(status + 8, " %3d", &code) != 1)
		return failed(h, "proxy %s did not answer as an HTTP proxy: \"%s\"",
					  h->name, status);
	/* 407 per RFC 9110; tinyproxy's BasicAuth answers a CONNECT with 401. */
	if ((code == 407 || code == 401) && h->url.has_auth)
		return failed(h, "proxy %s refused the credentials (%s)", h->name, status);
	if (code == 407 || code == 401)
		return failed(h, "proxy %s requires a username and password (%s): give them in the proxy URL",
					  h->name, status);
	if (code < 200 || code > 299)
		return failed(h, "proxy %s refused the connection to %s: %s",
					  h->name, h->shown, status);
	h->phase = PHASE_DONE;
	return PROXY_DONE;
}

TunnelProxyResult
tunnel_proxy_received(TunnelProxyHandshake *h, const char *data, int n)
{
	Assert(n <= tunnel_proxy_wanted(h));
	if (h->inlen + n >= PROXY_BUF)
		return failed(h, "proxy %s sent a reply longer than %d bytes",
					  h->name, PROXY_BUF - 1);
	memcpy(h->in + h->inlen, data, n);
	h->inlen += n;
	h->in[h->inlen] = '\0';
	switch (h->phase)
	{
		case PHASE_SOCKS_METHOD:
			return h->inlen < 2 ? PROXY_MORE : socks_method(h);
		case PHASE_SOCKS_AUTH:
			if (h->inlen < 2)
				return PROXY_MORE;
			if (h->in[1] != 0)
				return failed(h, "proxy %s refused the credentials", h->name);
			socks_connect(h);
			return PROXY_MORE;
		case PHASE_SOCKS_CONNECT:
			return h->inlen < 5 ? PROXY_MORE : socks_reply(h);
		case PHASE_HTTP:
			return http_reply(h);
		case PHASE_DONE:
			return PROXY_DONE;
		case PHASE_FAILED:
			break;
	}
	return PROXY_FAILED;
}

const char *
tunnel_proxy_message(TunnelProxyHandshake *h)
{
	return h->message;
}

void
tunnel_proxy_free(TunnelProxyHandshake *h)
{
	if (h == NULL)
		return;
	OPENSSL_cleanse(h, sizeof(TunnelProxyHandshake));
	pfree(h);
}
