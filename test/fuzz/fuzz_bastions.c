/*
 * validate_bastions: the list tunnel_create accepts as ssh_host.  Beyond "no
 * crash", an accepted list has 1 to 8 bastions, each a host validate_host
 * accepts with a port from 1 to 65535, none twice, and writing the list
 * back as "host:port, [v6]:port, ..." reads as the same list.
 */
#include <stdio.h>

#include "fuzz.h"
#include "validate.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *s = fuzz_cstring(data, size);
	const char *reason = NULL;
	ValidatedBastion list[VALIDATE_MAX_BASTIONS];
	ValidatedBastion again[VALIDATE_MAX_BASTIONS];
	char		text[VALIDATE_MAX_BASTIONS * 270];
	size_t		len = 0;
	int			n = 0;
	int			m = 0;
	bool		ok;

	if (s == NULL)
		return 0;
	ok = validate_bastions(s, 22, list, &n, &reason);
	FUZZ_CHECK_RESULT(ok, reason);
	if (ok)
	{
		FUZZ_CHECK(n >= 1 && n <= VALIDATE_MAX_BASTIONS);
		for (int i = 0; i < n; i++)
		{
			const char *r;

			FUZZ_CHECK(validate_host(list[i].host, &r));
			FUZZ_CHECK(list[i].port >= 1 && list[i].port <= 65535);
			for (int j = 0; j < i; j++)
				FUZZ_CHECK(list[j].port != list[i].port ||
						   strcmp(list[j].host, list[i].host) != 0);
			len += snprintf(text + len, sizeof(text) - len,
							strchr(list[i].host, ':') ? "%s[%s]:%d" : "%s%s:%d",
							i ? ", " : "", list[i].host, list[i].port);
		}
		FUZZ_CHECK(validate_bastions(text, 1, again, &m, &reason));
		FUZZ_CHECK(m == n);
		for (int i = 0; i < n; i++)
			FUZZ_CHECK(again[i].port == list[i].port &&
					   strcmp(again[i].host, list[i].host) == 0);
	}
	free(s);
	return 0;
}
