/*-------------------------------------------------------------------------
 *
 * validate.c
 *	  Checks of the untrusted text a tunnel definition is made of.
 *
 * Pure functions with no backend dependencies, shared by the SQL functions,
 * the worker, GUC check hooks and (later) fuzz targets.
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

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
		if (!(isascii((unsigned char) *p) && (isalnum((unsigned char) *p) ||
											  *p == '_' || *p == '-')))
		{
			*reason = "Names may contain only letters, digits, \"_\" and \"-\".";
			return false;
		}
	return true;
}

static bool
all_digits_and_dots(const char *s)
{
	for (; *s; s++)
		if (!isdigit((unsigned char) *s) && *s != '.')
			return false;
	return true;
}

bool
validate_host(const char *host, const char **reason)
{
	unsigned char buf[16];
	size_t		len = host ? strlen(host) : 0;
	size_t		label = 0;

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
	if (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1)
		return true;
	if (all_digits_and_dots(host))
	{
		*reason = "The host looks like an IPv4 address but is not a valid one.";
		return false;
	}
	for (size_t i = 0; i < len; i++)
	{
		char		c = host[i];

		if (c == '.')
		{
			if (label == 0 || host[i - 1] == '-')
			{
				*reason = "Each label of a host name must be 1 to 63 letters, digits or hyphens, not starting or ending with a hyphen.";
				return false;
			}
			label = 0;
			continue;
		}
		if (!(isascii((unsigned char) c) && (isalnum((unsigned char) c) || c == '-')) ||
			(c == '-' && label == 0) || ++label > 63)
		{
			*reason = "A host must be a host name, an IPv4 address or an IPv6 address.";
			return false;
		}
	}
	if (label > 0 && host[len - 1] == '-')
	{
		*reason = "Each label of a host name must be 1 to 63 letters, digits or hyphens, not starting or ending with a hyphen.";
		return false;
	}
	return true;
}

bool
validate_user(const char *user, const char **reason)
{
	size_t		len = user ? strlen(user) : 0;

	if (len == 0 || len > 32 || user[0] == '-')
	{
		*reason = "An SSH user name must be 1 to 32 bytes long and must not start with \"-\".";
		return false;
	}
	for (const char *p = user; *p; p++)
		if (!isgraph((unsigned char) *p) || !isascii((unsigned char) *p) ||
			*p == '@' || *p == ':' || *p == '/')
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

	*reason = "A host key fingerprint must look like ssh-keygen -l prints it: \"SHA256:\" followed by 43 base64 characters.";
	if (text == NULL || strncmp(text, "SHA256:", 7) != 0 || strlen(text) != 50)
		return false;
	for (int i = 7; i < 50; i++)
		if (text[i] == '\0' || strchr(b64, text[i]) == NULL)
			return false;
	/* The last character carries only 4 bits of a 32-byte digest. */
	return strchr("AEIMQUYcgkosw048", text[49]) != NULL;
}

static bool
parse_port_number(const char *s, size_t len, int *out)
{
	long		v = 0;

	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if (!isdigit((unsigned char) s[i]))
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = (int) v;
	return true;
}

bool
validate_port_range(const char *text, int *low, int *high, const char **reason)
{
	const char *dash = text ? strchr(text, '-') : NULL;
	int			lo,
				hi;

	*reason = "A port range must be written LOW-HIGH with 1024 <= LOW <= HIGH <= 65535.";
	if (dash == NULL ||
		!parse_port_number(text, dash - text, &lo) ||
		!parse_port_number(dash + 1, strlen(dash + 1), &hi))
		return false;
	if (lo < 1024 || hi > 65535 || lo > hi)
		return false;
	*low = lo;
	*high = hi;
	return true;
}
