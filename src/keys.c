/*-------------------------------------------------------------------------
 *
 * keys.c
 *	  Key pairs for tunnels: OpenSSL generation, the OpenSSH authorized_keys
 *	  line built from the key itself, and SHA256 fingerprints.
 *
 * The private key is kept as unencrypted PKCS#8 PEM, which libssh2 1.10
 * loads from memory for all three types (shared/PLATFORM.md).  Buffers that
 * held it are cleansed before they are released.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "lib/stringinfo.h"
#include "port/pg_bswap.h"

#include "keys.h"

static const char *const type_names[] = {
	[TUNNEL_KEY_ED25519] = "ed25519",
	[TUNNEL_KEY_ECDSA] = "ecdsa",
	[TUNNEL_KEY_RSA] = "rsa",
};

bool
keys_type_from_name(const char *name, TunnelKeyType *type)
{
	for (int i = 0; i < lengthof(type_names); i++)
		if (name && strcmp(name, type_names[i]) == 0)
		{
			*type = (TunnelKeyType) i;
			return true;
		}
	return false;
}

const char *
keys_type_name(TunnelKeyType type)
{
	return type_names[type];
}

static void
put_string(StringInfo buf, const void *data, uint32 len)
{
	uint32		be = pg_hton32(len);

	appendBinaryStringInfo(buf, (const char *) &be, 4);
	appendBinaryStringInfo(buf, data, len);
}

/* RFC 4251 mpint: big-endian, a leading zero when the top bit is set. */
static bool
put_mpint(StringInfo buf, const EVP_PKEY *pkey, const char *param)
{
	BIGNUM	   *bn = NULL;
	unsigned char bytes[1024 + 1];
	int			n;

	if (!EVP_PKEY_get_bn_param(pkey, param, &bn) || BN_num_bytes(bn) > 1024)
	{
		BN_free(bn);
		return false;
	}
	bytes[0] = 0;
	n = BN_bn2bin(bn, bytes + 1);
	BN_free(bn);
	if (n > 0 && (bytes[1] & 0x80))
		put_string(buf, bytes, n + 1);
	else
		put_string(buf, bytes + 1, n);
	return true;
}

/* The SSH wire encoding of the public key (RFC 4253, 5656, 8709). */
static bool
public_blob(EVP_PKEY *pkey, StringInfo blob, const char **type_out)
{
	switch (EVP_PKEY_get_base_id(pkey))
	{
		case EVP_PKEY_ED25519:
			{
				unsigned char raw[32];
				size_t		len = sizeof(raw);

				if (!EVP_PKEY_get_raw_public_key(pkey, raw, &len) || len != 32)
					return false;
				*type_out = "ssh-ed25519";
				put_string(blob, *type_out, strlen(*type_out));
				put_string(blob, raw, 32);
				return true;
			}
		case EVP_PKEY_EC:
			{
				unsigned char point[65];
				size_t		len = 0;
				char		group[32];

				if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME,
													group, sizeof(group), NULL) ||
					strcmp(group, "prime256v1") != 0 ||
					!EVP_PKEY_get_octet_string_param(pkey,
													 OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
													 point, sizeof(point), &len) ||
					len != 65)
					return false;
				*type_out = "ecdsa-sha2-nistp256";
				put_string(blob, *type_out, strlen(*type_out));
				put_string(blob, "nistp256", 8);
				put_string(blob, point, 65);
				return true;
			}
		case EVP_PKEY_RSA:
			*type_out = "ssh-rsa";
			put_string(blob, *type_out, strlen(*type_out));
			return put_mpint(blob, pkey, OSSL_PKEY_PARAM_RSA_E) &&
				put_mpint(blob, pkey, OSSL_PKEY_PARAM_RSA_N);
		default:
			return false;
	}
}

static char *
base64(const unsigned char *data, size_t len, bool strip_padding)
{
	char	   *out = palloc(4 * ((len + 2) / 3) + 1);
	int			n = EVP_EncodeBlock((unsigned char *) out, data, (int) len);

	while (strip_padding && n > 0 && out[n - 1] == '=')
		out[--n] = '\0';
	return out;
}

char *
keys_fingerprint_from_digest(const unsigned char *digest)
{
	char	   *b64 = base64(digest, 32, true);
	char	   *result = psprintf("SHA256:%s", b64);

	pfree(b64);
	return result;
}

/* Public line and fingerprint of a key; false if OpenSSL cannot say. */
static bool
describe(EVP_PKEY *pkey, const char *comment, char **line, char **fingerprint)
{
	StringInfoData blob;
	const char *type;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen;
	char	   *b64;

	initStringInfo(&blob);
	if (!public_blob(pkey, &blob, &type) ||
		!EVP_Digest(blob.data, blob.len, digest, &dlen, EVP_sha256(), NULL))
	{
		pfree(blob.data);
		return false;
	}
	b64 = base64((unsigned char *) blob.data, blob.len, false);
	*line = psprintf("%s %s %s", type, b64, comment);
	*fingerprint = keys_fingerprint_from_digest(digest);
	pfree(b64);
	pfree(blob.data);
	return true;
}

static EVP_PKEY *
generate(TunnelKeyType type)
{
	switch (type)
	{
		case TUNNEL_KEY_ED25519:
			return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
		case TUNNEL_KEY_ECDSA:
			return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		case TUNNEL_KEY_RSA:
			return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 3072);
	}
	return NULL;
}

static void
openssl_error(const char *what)
{
	unsigned long code = ERR_get_error();

	ERR_clear_error();
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("could not %s", what),
			 errdetail("OpenSSL: %s", code ? ERR_reason_error_string(code) : "unknown error")));
}

void
keys_generate(TunnelKeyType type, const char *comment, TunnelKey *key)
{
	EVP_PKEY   *pkey = generate(type);
	BIO		   *bio;
	char	   *pem;
	long		len;

	if (pkey == NULL)
		openssl_error("generate a key pair");

	bio = BIO_new(BIO_s_secmem());
	if (bio == NULL ||
		!PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL))
	{
		BIO_free(bio);
		EVP_PKEY_free(pkey);
		openssl_error("encode the private key");
	}
	len = BIO_get_mem_data(bio, &pem);
	key->private_pem = palloc(len + 1);
	memcpy(key->private_pem, pem, len);
	key->private_pem[len] = '\0';
	BIO_free(bio);				/* secure memory is cleansed on free */

	if (!describe(pkey, comment, &key->public_line, &key->fingerprint))
	{
		EVP_PKEY_free(pkey);
		keys_wipe(key->private_pem);
		openssl_error("encode the public key");
	}
	EVP_PKEY_free(pkey);
}

bool
keys_public_from_private(const char *private_pem, const char *comment,
						 char **public_line, char **fingerprint)
{
	BIO		   *bio = BIO_new_mem_buf(private_pem, -1);
	EVP_PKEY   *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	bool		ok = pkey != NULL && describe(pkey, comment, public_line, fingerprint);

	EVP_PKEY_free(pkey);
	BIO_free(bio);
	ERR_clear_error();
	return ok;
}

void
keys_wipe(char *secret)
{
	if (secret)
		OPENSSL_cleanse(secret, strlen(secret));
}
