/*
 * validate_host: what tunnel_create accepts as ssh_host / remote_host.
 * Beyond "no crash", an accepted host is an address literal or a host name
 * that no resolver would read as an address, made of RFC 1123 labels.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "validate.h"

static bool
numeric_host(const char *s)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_family = AF_UNSPEC};
	struct addrinfo *res = NULL;
	int			rc = getaddrinfo(s, NULL, &hints, &res);

	if (rc == 0)
		freeaddrinfo(res);
	return rc == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *s = fuzz_cstring(data, size);
	const char *reason = NULL;
	unsigned char addr[sizeof(struct in6_addr)];
	struct in_addr in;
	bool		ok;
	size_t		len;

	if (s == NULL)
		return 0;
	ok = validate_host(s, &reason);
	FUZZ_CHECK_RESULT(ok, reason);
	len = strlen(s);
	if (inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1)
		FUZZ_CHECK(ok);			/* every literal is accepted */
	else if (ok)
	{
		const char *label = s;

		FUZZ_CHECK(len >= 1 && len <= 253);
		FUZZ_CHECK(strspn(s, "abcdefghijklmnopqrstuvwxyz"
						  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == len);
		FUZZ_CHECK(strspn(s, "0123456789.") < len);
		FUZZ_CHECK(inet_aton(s, &in) == 0);
		FUZZ_CHECK(!numeric_host(s));
		/* labels: 1-63 bytes, no '-' at either end; one trailing dot */
		for (;;)
		{
			size_t		n = strcspn(label, ".");

			FUZZ_CHECK(n >= 1 && n <= 63);
			FUZZ_CHECK(label[0] != '-' && label[n - 1] != '-');
			if (label[n] == '\0' || label[n + 1] == '\0')
				break;
			label += n + 1;
		}
	}
	free(s);
	return 0;
}
