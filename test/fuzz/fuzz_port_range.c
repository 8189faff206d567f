/*
 * validate_port_range: the tunnel_ssh.port_range GUC, "LOW-HIGH".  Compared
 * with an independent reading of the documented grammar.
 */
#include "fuzz.h"
#include "validate.h"

/* 1 to 5 ASCII digits, exactly n bytes of them. */
static bool
reference_number(const char *s, size_t n, long *out)
{
	if (n < 1 || n > 5 || strspn(s, "0123456789") < n)
		return false;
	*out = strtol(s, NULL, 10);
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *s = fuzz_cstring(data, size);
	const char *reason = NULL;
	int			low = -7,
				high = -7;
	long		rlow,
				rhigh;
	const char *dash;
	bool		ok,
				expect;

	if (s == NULL)
		return 0;
	ok = validate_port_range(s, &low, &high, &reason);
	FUZZ_CHECK_RESULT(ok, reason);

	dash = strchr(s, '-');
	expect = dash != NULL &&
		reference_number(s, dash - s, &rlow) &&
		reference_number(dash + 1, strlen(dash + 1), &rhigh) &&
		rlow >= 1024 && rlow <= rhigh && rhigh <= 65535;
	FUZZ_CHECK(ok == expect);
	if (ok)
		FUZZ_CHECK(low == rlow && high == rhigh);
	else
		FUZZ_CHECK(low == -7 && high == -7);	/* untouched on failure */
	free(s);
	return 0;
}
