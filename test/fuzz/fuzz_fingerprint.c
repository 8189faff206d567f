/*
 * validate_fingerprint and keys_fingerprint_from_digest together: the
 * fingerprints accepted by tunnel_create(host_key_fingerprint => ...) are
 * exactly those keys_fingerprint_from_digest prints (the worker compares
 * the two as strings), and every digest prints as one that is accepted.
 */
#include <openssl/evp.h>

#include "fuzz.h"
#include "validate.h"

extern char *keys_fingerprint_from_digest(const unsigned char *digest);
extern void pfree(void *pointer);

/* The 32 bytes of "SHA256:" + 43 base64 characters, if it has that shape. */
static bool
decode(const char *s, unsigned char *digest)
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char		padded[45];
	unsigned char raw[33];

	if (strlen(s) != 50 || strncmp(s, "SHA256:", 7) != 0 ||
		strspn(s + 7, b64) != 43)
		return false;
	memcpy(padded, s + 7, 43);
	padded[43] = '=';
	padded[44] = '\0';
	if (EVP_DecodeBlock(raw, (unsigned char *) padded, 44) != 33)
		return false;
	memcpy(digest, raw, 32);
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *s = fuzz_cstring(data, size);
	const char *reason = NULL;
	unsigned char digest[32];
	unsigned char back[32];
	char	   *printed;
	bool		ok;

	if (size >= 32)
	{
		memcpy(digest, data, 32);
		printed = keys_fingerprint_from_digest(digest);
		FUZZ_CHECK(validate_fingerprint(printed, &reason));
		FUZZ_CHECK(decode(printed, back) && memcmp(back, digest, 32) == 0);
		pfree(printed);
	}
	if (s == NULL)
		return 0;

	reason = NULL;
	ok = validate_fingerprint(s, &reason);
	FUZZ_CHECK_RESULT(ok, reason);
	if (decode(s, digest))
	{
		/* accepted exactly when it is how this digest prints */
		printed = keys_fingerprint_from_digest(digest);
		FUZZ_CHECK(ok == (strcmp(printed, s) == 0));
		pfree(printed);
	}
	else
		FUZZ_CHECK(!ok);
	free(s);
	return 0;
}
