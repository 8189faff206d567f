/*
 * keys_public_from_private: the worker and tunnel_public_key() derive the
 * authorized_keys line from the private key text stored in
 * tunnel_ssh.secret, which a superuser may have written by hand.
 *
 * The input is that text as is, except when its first byte is one of
 * 'D', 'E', 'R': then the rest is DER, wrapped here into a PEM block
 * ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"), so that mutations
 * reach the ASN.1 structure instead of breaking the base64.
 *
 * When the key is accepted, the line must be "<type> <base64 blob> comment",
 * the blob must start with the type as an SSH string, and the fingerprint
 * must be the SHA-256 of that blob, in the form validate_fingerprint accepts.
 */
#include <openssl/evp.h>

#include "fuzz.h"
#include "validate.h"

extern bool keys_public_from_private(const char *private_pem,
									 const char *comment,
									 char **public_line, char **fingerprint);
extern char *keys_fingerprint_from_digest(const unsigned char *digest);
extern void pfree(void *pointer);

static char *
wrap_der(const char *label, const uint8_t *der, size_t len)
{
	size_t		b64len = 4 * ((len + 2) / 3);
	/* 64 characters a line, as PEM_write does */
	size_t		cap = 2 * strlen(label) + 64 + b64len + b64len / 64 + 2;
	char	   *out = malloc(cap);
	unsigned char *b64 = malloc(b64len + 1);
	size_t		pos;

	EVP_EncodeBlock(b64, der, (int) len);
	pos = sprintf(out, "-----BEGIN %s-----\n", label);
	for (size_t i = 0; i < b64len; i += 64)
	{
		size_t		n = b64len - i < 64 ? b64len - i : 64;

		memcpy(out + pos, b64 + i, n);
		pos += n;
		out[pos++] = '\n';
	}
	sprintf(out + pos, "-----END %s-----\n", label);
	free(b64);
	return out;
}

static void
check_accepted(const char *line, const char *fingerprint, const char *comment)
{
	static const char *const types[] = {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"};
	const char *reason = NULL;
	const char *b64 = NULL;
	const char *type = NULL;
	size_t		tlen = 0;
	size_t		b64len;
	unsigned char *blob;
	unsigned char digest[32];
	unsigned int dlen = 0;
	char	   *expect;
	int			n;

	for (int i = 0; i < 3; i++)
	{
		tlen = strlen(types[i]);
		if (strncmp(line, types[i], tlen) == 0 && line[tlen] == ' ')
		{
			type = types[i];
			b64 = line + tlen + 1;
			break;
		}
	}
	FUZZ_CHECK(type != NULL);
	b64len = strcspn(b64, " ");
	if (comment)
		FUZZ_CHECK(b64[b64len] == ' ' && strcmp(b64 + b64len + 1, comment) == 0);
	else
		FUZZ_CHECK(b64[b64len] == '\0');
	FUZZ_CHECK(b64len > 0 && b64len % 4 == 0);

	blob = malloc(b64len);
	n = EVP_DecodeBlock(blob, (const unsigned char *) b64, (int) b64len);
	FUZZ_CHECK(n > 0);
	while (b64len > 0 && b64[b64len - 1] == '=')	/* DecodeBlock keeps padding */
	{
		b64len--;
		n--;
	}
	FUZZ_CHECK(n >= 4 + (int) tlen);
	FUZZ_CHECK(blob[0] == 0 && blob[1] == 0 && blob[2] == 0 && blob[3] == tlen &&
			   memcmp(blob + 4, type, tlen) == 0);
	FUZZ_CHECK(EVP_Digest(blob, n, digest, &dlen, EVP_sha256(), NULL) && dlen == 32);
	free(blob);

	expect = keys_fingerprint_from_digest(digest);
	FUZZ_CHECK(strcmp(expect, fingerprint) == 0);
	pfree(expect);
	FUZZ_CHECK(validate_fingerprint(fingerprint, &reason));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *pem;
	char	   *line = NULL;
	char	   *fingerprint = NULL;
	char	   *line2 = NULL;
	char	   *fingerprint2 = NULL;
	const char *comment = "tunnel_ssh:fuzz";

	if (size > 0 && strchr("DER", data[0]) != NULL && data[0] != '\0')
	{
		const char *label = data[0] == 'D' ? "PRIVATE KEY" :
			data[0] == 'E' ? "EC PRIVATE KEY" : "RSA PRIVATE KEY";

		pem = wrap_der(label, data + 1, size - 1);
	}
	else if ((pem = fuzz_cstring(data, size)) == NULL)
		return 0;

	if (keys_public_from_private(pem, comment, &line, &fingerprint))
	{
		check_accepted(line, fingerprint, comment);
		/* the same key without a comment: same blob, same fingerprint */
		FUZZ_CHECK(keys_public_from_private(pem, NULL, &line2, &fingerprint2));
		check_accepted(line2, fingerprint2, NULL);
		FUZZ_CHECK(strcmp(fingerprint, fingerprint2) == 0);
		FUZZ_CHECK(strncmp(line, line2, strlen(line2)) == 0);
		pfree(line);
		pfree(fingerprint);
		pfree(line2);
		pfree(fingerprint2);
	}
	else
		FUZZ_CHECK(line == NULL && fingerprint == NULL);	/* sets nothing */
	free(pem);
	return 0;
}
