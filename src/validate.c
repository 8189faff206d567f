/*-------------------------------------------------------------------------
 *
 * validate.c
 *	  Checks of the untrusted text a tunnel definition is made of.
 *
 * Pure functions with no backend dependencies, shared by the SQL functions,
 * the worker, GUC check hooks and (later) fuzz targets.  Character classes
 * are spelled out in ASCII rather than taken from <ctype.h>, whose answers
 * depend on the backend's LC_CTYPE.
 *
 *-------------------------------------------------------------------------
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE			/* inet_aton() under strict -std= modes */
#endif

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "validate.h"

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool
validate_tunnel_name(const char *name, const char **reason)
{
	size_t		len = name ? strlen(name) : 0;

	if (len == 0)
	{
		*reason = "A tunnel name must not be empty.";
		return false;
	}
	if (len > 63)
	{
		*reason = "A tunnel name may be at most 63 bytes long.";
		return false;
	}
	for (const char *p = name; *p; p++)
		if (!is_alnum(*p) && *p != '_' && *p != '-')
		{
			*reason = "Names may contain only letters, digits, \"_\" and \"-\".";
			return false;
		}
	return true;
}

/*
 * Text that a resolver would read as an IPv4 address in some form: all
 * digits and dots ("1.2.3", "999.1.1.1"), or anything inet_aton() accepts
 * ("127.1", "0x7f000001"), which getaddrinfo() would not look up as a name.
 */
static bool
looks_like_ipv4(const char *host)
{
	struct in_addr addr;
	bool		digits = false;
	const char *p;

	for (p = host; *p; p++)
	{
		if (!is_digit(*p) && *p != '.')
			break;
		digits |= is_digit(*p);
	}
	return (*p == '\0' && digits) || inet_aton(host, &addr) != 0;
}

/*
 * RFC 1123 host name: labels of 1-63 [A-Za-z0-9-], no hyphen at either end,
 * separated by single dots, with an optional trailing dot.
 */
static bool
valid_host_name(const char *host, const char **reason)
{
	const char *label = host;

	for (const char *p = host;; p++)
	{
		if (*p == '.' || *p == '\0')
		{
			size_t		len = p - label;

			if (*p == '\0' && len == 0 && p > host)
				return true;	/* the optional trailing dot */
			if (len == 0 || len > 63)
			{
				*reason = "Each label of a host name must be 1 to 63 characters long.";
				return false;
			}
			if (label[0] == '-' || p[-1] == '-')
			{
				*reason = "A label of a host name must not start or end with \"-\".";
				return false;
			}
			if (*p == '\0')
				return true;
			label = p + 1;
		}
		else if (!is_alnum(*p) && *p != '-')
		{
			*reason = "A host must be a host name, an IPv4 address or an IPv6 address.";
			return false;
		}
	}
}

bool
validate_host(const char *host, const char **reason)
{
	unsigned char addr[sizeof(struct in6_addr)];
	size_t		len = host ? strlen(host) : 0;

	if (len == 0)
	{
		*reason = "A host must not be empty.";
		return false;
	}
	if (len > 253)
	{
		*reason = "A host name may be at most 253 bytes long.";
		return false;
	}
	if (inet_pton(AF_INET, host, addr) == 1 ||
		inet_pton(AF_INET6, host, addr) == 1)
		return true;
	if (host[0] == '[')
	{
		*reason = "Write an IPv6 address without brackets.";
		return false;
	}
	if (strchr(host, ':') != NULL)
	{
		*reason = "The host contains \":\" but is not a valid IPv6 address; give the port separately.";
		return false;
	}
	if (looks_like_ipv4(host))
	{
		*reason = "The host looks like an IPv4 address but is not a valid one.";
		return false;
	}
	return valid_host_name(host, reason);
}

/* One entry of a bastion list, without its surrounding blanks. */
static bool
validate_bastion(const char *entry, size_t len, int default_port,
				 ValidatedBastion *out, const char **reason)
{
	char		text[300];
	char	   *port_text = NULL;
	char	   *host = text;
	char	   *colon;

	if (len == 0)
	{
		*reason = "A bastion in the list is empty: write host, host:port or [IPv6 address]:port, separated by commas.";
		return false;
	}
	if (len >= sizeof(text))
	{
		*reason = "A host name may be at most 253 bytes long.";
		return false;
	}
	memcpy(text, entry, len);
	text[len] = '\0';
	if (text[0] == '[')
	{
		char	   *close = strchr(text, ']');

		if (close == NULL || (close[1] != '\0' && close[1] != ':'))
		{
			*reason = "Write an IPv6 address with a port as [address]:port.";
			return false;
		}
		*close = '\0';
		host = text + 1;
		if (close[1] == ':')
			port_text = close + 2;
		if (strchr(host, ':') == NULL)
		{
			*reason = "Only an IPv6 address is written in brackets.";
			return false;
		}
	}
	else if ((colon = strchr(text, ':')) != NULL && strchr(colon + 1, ':') == NULL)
	{
		/* One colon: host:port.  More: an IPv6 literal without a port. */
		*colon = '\0';
		port_text = colon + 1;
	}
	if (!validate_host(host, reason))
		return false;
	out->port = default_port;
	if (port_text != NULL)
	{
		long		port = 0;
		const char *p = port_text;

		if (*p == '\0')
		{
			*reason = "A port must be between 1 and 65535.";
			return false;
		}
		for (; *p; p++)
		{
			if (*p < '0' || *p > '9' || port > 65535)
			{
				*reason = "A port must be between 1 and 65535.";
				return false;
			}
			port = port * 10 + (*p - '0');
		}
		if (!validate_port(port, reason))
			return false;
		out->port = (int) port;
	}
	snprintf(out->host, sizeof(out->host), "%s", host);
	return true;
}

bool
validate_bastions(const char *text, int default_port, ValidatedBastion *out,
				  int *n, const char **reason)
{
	const char *p = text;

	*n = 0;
	if (text == NULL || *text == '\0')
	{
		*reason = "A host must not be empty.";
		return false;
	}
	for (;;)
	{
		const char *start;
		const char *end;

		while (*p == ' ' || *p == '\t')
			p++;
		start = p;
		while (*p != '\0' && *p != ',')
			p++;
		end = p;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (*n >= VALIDATE_MAX_BASTIONS)
		{
			*reason = "A tunnel may have at most 8 bastions.";
			return false;
		}
		if (!validate_bastion(start, end - start, default_port, &out[*n], reason))
			return false;
		for (int i = 0; i < *n; i++)
			if (out[i].port == out[*n].port &&
				strcmp(out[i].host, out[*n].host) == 0)
			{
				*reason = "A bastion appears twice in the list.";
				return false;
			}
		(*n)++;
		if (*p == '\0')
			return true;
		p++;
	}
}

bool
validate_user(const char *user, const char **reason)
{
	size_t		len = user ? strlen(user) : 0;

	if (len == 0)
	{
		*reason = "An SSH user name must not be empty.";
		return false;
	}
	if (len > 32)
	{
		*reason = "An SSH user name may be at most 32 bytes long.";
		return false;
	}
	if (user[0] == '-')
	{
		*reason = "An SSH user name must not start with \"-\".";
		return false;
	}
	for (const char *p = user; *p; p++)
		if (*p <= ' ' || *p > '~' || *p == '@' || *p == ':' || *p == '/')
		{
			*reason = "An SSH user name may not contain white space, control characters, \"@\", \":\" or \"/\".";
			return false;
		}
	return true;
}

bool
validate_port(long port, const char **reason)
{
	if (port < 1 || port > 65535)
	{
		*reason = "A port must be between 1 and 65535.";
		return false;
	}
	return true;
}

bool
validate_fingerprint(const char *text, const char **reason)
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	if (text == NULL || strncmp(text, "SHA256:", 7) != 0 ||
		strlen(text) != 7 + 43 || strspn(text + 7, b64) != 43)
	{
		*reason = "A host key fingerprint must look like ssh-keygen -l prints it: \"SHA256:\" followed by 43 base64 characters.";
		return false;
	}
	/* The 43rd character carries the last 4 bits of a 32-byte digest. */
	if (strchr("AEIMQUYcgkosw048", text[49]) == NULL)
	{
		*reason = "The last character of the fingerprint cannot end a SHA-256 digest.";
		return false;
	}
	return true;
}

/* 1 to 5 decimal digits, nothing else. */
static bool
parse_port_number(const char *s, size_t len, int *out)
{
	int			v = 0;

	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if (!is_digit(s[i]))
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

bool
validate_port_range(const char *text, int *low, int *high,
					const char **reason)
{
	const char *dash = text ? strchr(text, '-') : NULL;
	int			lo,
				hi;

	if (dash == NULL ||
		!parse_port_number(text, dash - text, &lo) ||
		!parse_port_number(dash + 1, strlen(dash + 1), &hi) ||
		lo < 1024 || hi > 65535 || lo > hi)
	{
		*reason = "A port range must be written LOW-HIGH with 1024 <= LOW <= HIGH <= 65535.";
		return false;
	}
	*low = lo;
	*high = hi;
	return true;
}

/* The key type an algorithm name or ssh-keygen's "(TYPE)" with bits means. */
static const char *
pin_key_type(const char *word, int wordlen, const char *bits)
{
	static const char *const names[][2] = {
		{"ssh-ed25519", "ssh-ed25519"},
		{"ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256"},
		{"ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384"},
		{"ecdsa-sha2-nistp521", "ecdsa-sha2-nistp521"},
		{"ssh-rsa", "ssh-rsa"},
		{"rsa-sha2-256", "ssh-rsa"},
		{"rsa-sha2-512", "ssh-rsa"},
		{"(ED25519)", "ssh-ed25519"},
		{"(RSA)", "ssh-rsa"},
	};

	for (int i = 0; i < (int) (sizeof(names) / sizeof(names[0])); i++)
		if ((int) strlen(names[i][0]) == wordlen &&
			strncmp(names[i][0], word, wordlen) == 0)
			return names[i][1];
	if (wordlen == 7 && strncmp(word, "(ECDSA)", 7) == 0 && bits)
	{
		if (strcmp(bits, "256") == 0)
			return "ecdsa-sha2-nistp256";
		if (strcmp(bits, "384") == 0)
			return "ecdsa-sha2-nistp384";
		if (strcmp(bits, "521") == 0)
			return "ecdsa-sha2-nistp521";
	}
	return NULL;
}

#define PIN_MAX_WORDS 16

/* One pin (len bytes of text, no separator in it): type and fingerprint. */
static bool
parse_pin(const char *text, int len, const char **type, char *fingerprint,
		  const char **reason)
{
	const char *word[PIN_MAX_WORDS];
	int			wlen[PIN_MAX_WORDS];
	int			nwords = 0;
	int			fp = -1;
	char		bits[8] = "";

	for (int i = 0; i < len;)
	{
		int			start;

		while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r'))
			i++;
		if (i >= len)
			break;
		if (nwords == PIN_MAX_WORDS)
		{
			*reason = "A host key pin has too many words.";
			return false;
		}
		start = i;
		while (i < len && text[i] != ' ' && text[i] != '\t' && text[i] != '\r')
			i++;
		word[nwords] = text + start;
		wlen[nwords] = i - start;
		if (wlen[nwords] >= 7 && strncmp(word[nwords], "SHA256:", 7) == 0)
		{
			if (fp >= 0)
			{
				*reason = "Separate host key pins with commas or newlines.";
				return false;
			}
			fp = nwords;
		}
		nwords++;
	}
	if (fp < 0 && nwords == 1)
		fp = 0;					/* validate_fingerprint says what is wrong */
	if (fp < 0 || wlen[fp] > 7 + 43)
	{
		*reason = "A host key fingerprint must look like ssh-keygen -l prints it: \"SHA256:\" followed by 43 base64 characters.";
		return false;
	}
	memcpy(fingerprint, word[fp], wlen[fp]);
	fingerprint[wlen[fp]] = '\0';
	if (!validate_fingerprint(fingerprint, reason))
		return false;

	*type = NULL;
	if (fp == 0 && nwords == 1)
		return true;
	/* "ssh-ed25519 SHA256:..." (ssh -v: "Server host key: ssh-ed25519 ...") */
	if (fp > 0 && (*type = pin_key_type(word[fp - 1], wlen[fp - 1], NULL)) != NULL)
		return true;
	/* "256 SHA256:... comment (ECDSA)" as ssh-keygen -l prints it */
	if (fp == 1 && nwords >= 3 && wlen[0] < (int) sizeof(bits) &&
		strspn(word[0], "0123456789") == (size_t) wlen[0])
	{
		memcpy(bits, word[0], wlen[0]);
		bits[wlen[0]] = '\0';
		*type = pin_key_type(word[nwords - 1], wlen[nwords - 1], bits);
		if (*type)
			return true;
	}
	*reason = "Write a host key pin as \"SHA256:...\", as \"ssh-ed25519 SHA256:...\" or as ssh-keygen -l prints it, with a key type of ED25519, ECDSA or RSA.";
	return false;
}

bool
validate_host_key_pins(const char *text, char *out, int outlen,
					   const char **reason)
{
	const char *types[VALIDATE_MAX_PINS];
	char		fps[VALIDATE_MAX_PINS][7 + 43 + 1];
	int			npins = 0;
	int			used = 0;
	const char *p = text;

	if (text == NULL)
	{
		*reason = "A host key fingerprint must look like ssh-keygen -l prints it: \"SHA256:\" followed by 43 base64 characters.";
		return false;
	}
	while (*p)
	{
		int			len = (int) strcspn(p, ",\n");
		const char *type;
		char		fp[7 + 43 + 1];
		bool		blank = strspn(p, " \t\r") >= (size_t) len;
		int			dup = -1;

		if (!blank)
		{
			if (!parse_pin(p, len, &type, fp, reason))
				return false;
			for (int i = 0; i < npins; i++)
				if (strcmp(fps[i], fp) == 0)
					dup = i;
			if (dup >= 0)
			{
				if (types[dup] == NULL)
					types[dup] = type;
			}
			else if (npins == VALIDATE_MAX_PINS)
			{
				*reason = "At most 8 host keys can be pinned at once.";
				return false;
			}
			else
			{
				types[npins] = type;
				strcpy(fps[npins++], fp);
			}
		}
		p += len;
		if (*p)
			p++;
	}
	if (npins == 0)
	{
		*reason = "A host key fingerprint must look like ssh-keygen -l prints it: \"SHA256:\" followed by 43 base64 characters.";
		return false;
	}
	for (int i = 0; i < npins; i++)
	{
		int			n = snprintf(out + used, outlen - used, "%s%s%s%s",
								 i > 0 ? ", " : "",
								 types[i] ? types[i] : "",
								 types[i] ? " " : "", fps[i]);

		if (n < 0 || n >= outlen - used)
		{
			*reason = "The host key pins are too long.";
			return false;
		}
		used += n;
	}
	return true;
}
