/*
 * validate_user, validate_tunnel_name and validate_port: the other short
 * identifiers of a tunnel definition, each checked against its documented
 * character set.
 */
#include "fuzz.h"
#include "validate.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *s = fuzz_cstring(data, size);
	const char *reason = NULL;
	bool		ok;
	size_t		len;

	if (size >= sizeof(long))
	{
		long		port;

		memcpy(&port, data, sizeof(port));
		ok = validate_port(port, &reason);
		FUZZ_CHECK_RESULT(ok, reason);
		FUZZ_CHECK(ok == (port >= 1 && port <= 65535));
	}
	if (s == NULL)
		return 0;
	len = strlen(s);

	reason = NULL;
	ok = validate_user(s, &reason);
	FUZZ_CHECK_RESULT(ok, reason);
	if (ok)
	{
		FUZZ_CHECK(len >= 1 && len <= 32 && s[0] != '-');
		for (size_t i = 0; i < len; i++)
			FUZZ_CHECK(s[i] > ' ' && s[i] <= '~' && !strchr("@:/", s[i]));
	}

	reason = NULL;
	ok = validate_tunnel_name(s, &reason);
	FUZZ_CHECK_RESULT(ok, reason);
	FUZZ_CHECK(ok == (len >= 1 && len <= 63 &&
					  strspn(s, "abcdefghijklmnopqrstuvwxyz"
							 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == len));
	free(s);
	return 0;
}
