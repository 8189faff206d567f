/*-------------------------------------------------------------------------
 *
 * keys.c
 *	  Key pairs for tunnels: OpenSSL generation, the OpenSSH authorized_keys
 *	  line built from the key itself, and SHA256 fingerprints.
 *
 * The private key is kept as unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY"),
 * which libssh2 1.10 loads from memory for all three types (checked against
 * OpenSSH 9.2; RSA still needs "PubkeyAcceptedAlgorithms +ssh-rsa" on the
 * bastion, see shared/PLATFORM.md).
 *
 * All OpenSSL work happens first, into fixed-size local buffers; OpenSSL
 * objects are freed before anything is palloc'd or reported, so an ERROR
 * never leaks them.  Buffers that held the private key are cleansed.
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
#include <openssl/objects.h>
#include <openssl/pem.h>

#include "keys.h"

/* Largest RSA modulus we describe: OpenSSH's own limit, 16384 bits. */
#define MAX_MPINT_BYTES		(16384 / 8 + 1)
/* SSH wire encoding of any public key we describe. */
#define MAX_BLOB			(4 + 7 + 2 * (4 + MAX_MPINT_BYTES))
/* A generated private key as PEM: RSA 3072 needs about 2.5 kB. */
#define MAX_PEM				8192

/* The public half of a key, as OpenSSH writes it. */
typedef struct PublicKeyText
{
	const char *type;			/* "ssh-ed25519", ... */
	char		blob_b64[4 * ((MAX_BLOB + 2) / 3) + 1];
	unsigned char digest[32];	/* SHA-256 of the blob */
} PublicKeyText;

/* A public key blob under construction. */
typedef struct Blob
{
	unsigned char data[MAX_BLOB];
	size_t		len;
} Blob;

static const char *const type_names[] = {
	[TUNNEL_KEY_ED25519] = "ed25519",
	[TUNNEL_KEY_ECDSA] = "ecdsa",
	[TUNNEL_KEY_RSA] = "rsa",
};

bool
keys_type_from_name(const char *name, TunnelKeyType *type)
{
	if (name == NULL)
		return false;
	for (int i = 0; i < (int) lengthof(type_names); i++)
		if (strcmp(name, type_names[i]) == 0)
		{
			*type = (TunnelKeyType) i;
			return true;
		}
	return false;
}

const char *
keys_type_name(TunnelKeyType type)
{
	if ((int) type < 0 || (int) type >= (int) lengthof(type_names))
		return "unknown";
	return type_names[type];
}

/* RFC 4251 string: uint32 length, then the bytes. */
static bool
put_string(Blob *blob, const void *data, size_t len)
{
	if (len > sizeof(blob->data) - 4 - blob->len)
		return false;
	blob->data[blob->len++] = (len >> 24) & 0xff;
	blob->data[blob->len++] = (len >> 16) & 0xff;
	blob->data[blob->len++] = (len >> 8) & 0xff;
	blob->data[blob->len++] = len & 0xff;
	memcpy(blob->data + blob->len, data, len);
	blob->len += len;
	return true;
}

/*
 * RFC 4251 mpint of a non-negative number: no leading zero bytes, except one
 * when the top bit is set; zero is the empty string.
 */
static bool
put_mpint(Blob *blob, const EVP_PKEY *pkey, const char *param)
{
	BIGNUM	   *bn = NULL;
	unsigned char bytes[MAX_MPINT_BYTES];
	int			n;
	bool		ok;

	if (!EVP_PKEY_get_bn_param(pkey, param, &bn) || BN_is_negative(bn) ||
		BN_num_bytes(bn) > MAX_MPINT_BYTES - 1)
	{
		BN_free(bn);
		return false;
	}
	bytes[0] = 0;
	n = BN_bn2bin(bn, bytes + 1);
	BN_free(bn);
	if (n > 0 && (bytes[1] & 0x80))
		ok = put_string(blob, bytes, n + 1);
	else
		ok = put_string(blob, bytes + 1, n);
	return ok;
}

/*
 * Uncompressed point 0x04 || X || Y of a P-256 key, whatever form the key was
 * stored in.
 */
static bool
put_p256_point(Blob *blob, const EVP_PKEY *pkey)
{
	unsigned char point[65];
	BIGNUM	   *x = NULL;
	BIGNUM	   *y = NULL;
	bool		ok;

	point[0] = 0x04;
	ok = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x) &&
		EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y) &&
		BN_bn2binpad(x, point + 1, 32) == 32 &&
		BN_bn2binpad(y, point + 33, 32) == 32;
	BN_free(x);
	BN_free(y);
	return ok && put_string(blob, point, sizeof(point));
}

/* The SSH wire encoding of the public key (RFC 4253, 5656, 8709). */
static bool
public_blob(const EVP_PKEY *pkey, Blob *blob, const char **type)
{
	blob->len = 0;
	switch (EVP_PKEY_get_base_id(pkey))
	{
		case EVP_PKEY_ED25519:
			{
				unsigned char raw[32];
				size_t		len = sizeof(raw);

				*type = "ssh-ed25519";
				return EVP_PKEY_get_raw_public_key(pkey, raw, &len) &&
					len == sizeof(raw) &&
					put_string(blob, *type, strlen(*type)) &&
					put_string(blob, raw, len);
			}
		case EVP_PKEY_EC:
			{
				char		group[64];

				*type = "ecdsa-sha2-nistp256";
				return EVP_PKEY_get_utf8_string_param(pkey,
													  OSSL_PKEY_PARAM_GROUP_NAME,
													  group, sizeof(group),
													  NULL) &&
					OBJ_sn2nid(group) == NID_X9_62_prime256v1 &&
					put_string(blob, *type, strlen(*type)) &&
					put_string(blob, "nistp256", 8) &&
					put_p256_point(blob, pkey);
			}
		case EVP_PKEY_RSA:
			*type = "ssh-rsa";
			return put_string(blob, *type, strlen(*type)) &&
				put_mpint(blob, pkey, OSSL_PKEY_PARAM_RSA_E) &&
				put_mpint(blob, pkey, OSSL_PKEY_PARAM_RSA_N);
		default:
			return false;
	}
}

/* Fill *pub from the key; OpenSSL only, nothing palloc'd. */
static bool
describe(const EVP_PKEY *pkey, PublicKeyText *pub)
{
	Blob		blob;
	unsigned int dlen = 0;

	if (!public_blob(pkey, &blob, &pub->type) ||
		!EVP_Digest(blob.data, blob.len, pub->digest, &dlen, EVP_sha256(),
					NULL) ||
		dlen != sizeof(pub->digest))
		return false;
	EVP_EncodeBlock((unsigned char *) pub->blob_b64, blob.data, (int) blob.len);
	return true;
}

/* The authorized_keys line and fingerprint of *pub, palloc'd. */
static void
public_strings(const PublicKeyText *pub, const char *comment,
			   char **public_line, char **fingerprint)
{
	if (comment != NULL && comment[0] != '\0')
		*public_line = psprintf("%s %s %s", pub->type, pub->blob_b64, comment);
	else
		*public_line = psprintf("%s %s", pub->type, pub->blob_b64);
	*fingerprint = keys_fingerprint_from_digest(pub->digest);
}

char *
keys_fingerprint_from_digest(const unsigned char *digest)
{
	char		b64[4 * ((32 + 2) / 3) + 1];
	int			n = EVP_EncodeBlock((unsigned char *) b64, digest, 32);

	while (n > 0 && b64[n - 1] == '=')
		b64[--n] = '\0';
	return psprintf("SHA256:%s", b64);
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

/* Write the private key as unencrypted PKCS#8 PEM into pem[MAX_PEM]. */
static bool
write_private_pem(EVP_PKEY *pkey, char *pem)
{
	BIO		   *bio = BIO_new(BIO_s_secmem());
	char	   *data;
	long		len;
	bool		ok = false;

	if (bio != NULL &&
		PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) == 1)
	{
		len = BIO_get_mem_data(bio, &data);
		if (len > 0 && len < MAX_PEM)
		{
			memcpy(pem, data, len);
			pem[len] = '\0';
			ok = true;
		}
	}
	BIO_free(bio);				/* cleanses the buffer it held */
	return ok;
}

void
keys_generate(TunnelKeyType type, const char *comment, TunnelKey *key)
{
	char	   *pem = palloc(MAX_PEM);
	EVP_PKEY   *pkey;
	PublicKeyText pub;
	const char *failed = NULL;
	char		detail[256];

	pkey = generate(type);
	if (pkey == NULL)
		failed = "generating the key pair";
	else if (!write_private_pem(pkey, pem))
		failed = "encoding the private key";
	else if (!describe(pkey, &pub))
		failed = "encoding the public key";
	EVP_PKEY_free(pkey);

	if (failed)
	{
		unsigned long code = ERR_get_error();

		if (code != 0)
			ERR_error_string_n(code, detail, sizeof(detail));
		ERR_clear_error();
		OPENSSL_cleanse(pem, MAX_PEM);
		pfree(pem);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				 errmsg("could not create the tunnel's key pair"),
				 code != 0 ?
				 errdetail_internal("Step failed: %s. OpenSSL reported %s.",
									failed, detail) :
				 errdetail_internal("Step failed: %s.", failed)));
	}

	key->private_pem = pem;
	public_strings(&pub, comment, &key->public_line, &key->fingerprint);
}

/* Never ask for a passphrase: an encrypted key is one we cannot read. */
static int
no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	return -1;
}

bool
keys_public_from_private(const char *private_pem, const char *comment,
						 char **public_line, char **fingerprint)
{
	BIO		   *bio;
	EVP_PKEY   *pkey = NULL;
	PublicKeyText pub;
	bool		ok;

	if (private_pem == NULL)
		return false;
	bio = BIO_new_mem_buf(private_pem, -1);
	if (bio != NULL)
		pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	ok = pkey != NULL && describe(pkey, &pub);
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	ERR_clear_error();

	if (ok)
		public_strings(&pub, comment, public_line, fingerprint);
	return ok;
}

void
keys_wipe(char *secret)
{
	if (secret != NULL)
		OPENSSL_cleanse(secret, strlen(secret));
}
