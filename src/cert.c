/*-------------------------------------------------------------------------
 *
 * cert.c
 *	  OpenSSH user certificates: the parser of PROTOCOL.certkeys, their
 *	  validity, and the signature libssh2_userauth_publickey asks for.
 *
 * A certificate is public: what it says (principals, key id, CA, validity)
 * is shown in tunnel_status.  The tunnel logs in with the certificate's
 * blob and a signature made here with OpenSSL from the tunnel's private
 * key, on every libssh2 version the same way (connect.c, step_auth).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "lib/stringinfo.h"

#include "cert.h"
#include "keys.h"

/* ---------- reading the wire format (RFC 4251 types) ---------- */

typedef struct Reader
{
	const unsigned char *p;
	size_t		left;
	bool		bad;
} Reader;

static uint32
get_u32(Reader *r)
{
	uint32		v;

	if (r->bad || r->left < 4)
	{
		r->bad = true;
		return 0;
	}
	v = ((uint32) r->p[0] << 24) | ((uint32) r->p[1] << 16) |
		((uint32) r->p[2] << 8) | r->p[3];
	r->p += 4;
	r->left -= 4;
	return v;
}

static uint64
get_u64(Reader *r)
{
	uint64		hi = get_u32(r);

	return (hi << 32) | get_u32(r);
}

/* A string's bytes (not terminated), or NULL when the blob ends first. */
static const unsigned char *
get_string(Reader *r, size_t *len)
{
	uint32		n = get_u32(r);
	const unsigned char *s;

	if (r->bad || n > r->left)
	{
		r->bad = true;
		*len = 0;
		return NULL;
	}
	s = r->p;
	r->p += n;
	r->left -= n;
	*len = n;
	return s;
}

static char *
get_cstring(Reader *r)
{
	size_t		len;
	const unsigned char *s = get_string(r, &len);

	if (s == NULL || memchr(s, '\0', len) != NULL)
	{
		r->bad = true;
		return NULL;
	}
	return pnstrdup((const char *) s, len);
}

/* ---------- parsing ---------- */

/* The certificate types and how many public key fields follow the nonce. */
static const struct
{
	const char *type;
	const char *plain;
	int			nfields;
}			cert_types[] =
{
	{"ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519", 1},
	{"ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp256", 2},
	{"ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp384", 2},
	{"ecdsa-sha2-nistp521-cert-v01@openssh.com", "ecdsa-sha2-nistp521", 2},
	{"ssh-rsa-cert-v01@openssh.com", "ssh-rsa", 2},
};

static char *
fingerprint_of(const unsigned char *blob, size_t len)
{
	unsigned char digest[32];

	EVP_Digest(blob, len, digest, NULL, EVP_sha256(), NULL);
	return keys_fingerprint_from_digest(digest);
}

/* SHA256 of string plain || the key's fields, as they came. */
static char *
plain_key_fingerprint(const char *plain, const unsigned char *fields,
					  size_t len)
{
	size_t		n = strlen(plain);
	size_t		total = 4 + n + len;
	unsigned char *blob = palloc(total);
	char	   *fp;

	blob[0] = (n >> 24) & 0xff;
	blob[1] = (n >> 16) & 0xff;
	blob[2] = (n >> 8) & 0xff;
	blob[3] = n & 0xff;
	memcpy(blob + 4, plain, n);
	memcpy(blob + 4 + n, fields, len);
	fp = fingerprint_of(blob, total);
	pfree(blob);
	return fp;
}

static bool
parse_blob(TunnelCert *cert, const char **error)
{
	Reader		r = {cert->blob, cert->blob_len, false};
	Reader		list;
	char	   *inner;
	const unsigned char *fields;
	const unsigned char *s;
	size_t		len;
	int			t;

	inner = get_cstring(&r);
	if (inner == NULL || strcmp(inner, cert->type) != 0)
	{
		*error = "The type inside the certificate is not the one its line names.";
		return false;
	}
	for (t = 0; t < lengthof(cert_types); t++)
		if (strcmp(cert->type, cert_types[t].type) == 0)
			break;
	(void) get_string(&r, &len);	/* nonce */
	fields = r.p;
	for (int i = 0; i < cert_types[t].nfields; i++)
		(void) get_string(&r, &len);
	if (r.bad)
	{
		*error = "The certificate ends before its public key does.";
		return false;
	}
	cert->key_fingerprint = plain_key_fingerprint(cert_types[t].plain, fields,
												  r.p - fields);
	cert->serial = get_u64(&r);
	cert->cert_type = get_u32(&r);
	cert->key_id = get_cstring(&r);

	/* valid principals: a string holding strings */
	s = get_string(&r, &len);
	list.p = s;
	list.left = len;
	list.bad = r.bad;
	cert->nprincipals = 0;
	cert->principals = palloc0(sizeof(char *) * (len / 4 + 1));
	while (!list.bad && list.left > 0)
	{
		char	   *p = get_cstring(&list);

		if (p)
			cert->principals[cert->nprincipals++] = p;
	}
	cert->valid_after = get_u64(&r);
	cert->valid_before = get_u64(&r);
	(void) get_string(&r, &len);	/* critical options */
	(void) get_string(&r, &len);	/* extensions */
	(void) get_string(&r, &len);	/* reserved */
	s = get_string(&r, &len);	/* signature key */
	if (s != NULL && !r.bad)
	{
		Reader		ca = {s, len, false};

		cert->ca_fingerprint = fingerprint_of(s, len);
		cert->ca_type = get_cstring(&ca);
	}
	(void) get_string(&r, &len);	/* signature */
	if (r.bad || list.bad || cert->ca_type == NULL)
	{
		*error = "The certificate is cut short or malformed.";
		return false;
	}
	if (r.left != 0)
	{
		*error = "The certificate has bytes after its signature.";
		return false;
	}
	return true;
}

bool
cert_parse(const char *line, TunnelCert *cert, const char **error)
{
	const char *p = line;
	const char *end;
	char	   *b64;
	int			n;
	int			t;

	memset(cert, 0, sizeof(*cert));
	while (*p == ' ' || *p == '\t')
		p++;
	end = p + strcspn(p, " \t\r\n");
	cert->type = pnstrdup(p, end - p);
	for (t = 0; t < lengthof(cert_types); t++)
		if (strcmp(cert->type, cert_types[t].type) == 0)
			break;
	if (t == lengthof(cert_types))
	{
		*error = (strstr(cert->type, "-cert-") != NULL) ?
			"Its type is not one tunnel_ssh knows (Ed25519, ECDSA and RSA certificates are)." :
			"An OpenSSH certificate line begins with its type, such as \"ssh-ed25519-cert-v01@openssh.com\" (ssh-keygen -s writes it to KEY-cert.pub).";
		return false;
	}
	p = end;
	while (*p == ' ' || *p == '\t')
		p++;
	end = p + strcspn(p, " \t\r\n");
	if (end == p || (end - p) % 4 != 0)
	{
		*error = "The certificate's base64 is missing or cut short.";
		return false;
	}
	b64 = pnstrdup(p, end - p);
	cert->blob = palloc(end - p);
	n = EVP_DecodeBlock(cert->blob, (unsigned char *) b64, end - p);
	if (n < 0)
	{
		*error = "The certificate's base64 does not decode.";
		return false;
	}
	/* EVP_DecodeBlock counts the padding as bytes */
	if (end - p >= 1 && p[end - p - 1] == '=')
		n--;
	if (end - p >= 2 && p[end - p - 2] == '=')
		n--;
	cert->blob_len = n;
	return parse_blob(cert, error);
}

/* ---------- validity ---------- */

TunnelCertValidity
cert_validity(const TunnelCert *cert, uint64 now)
{
	uint64		life;

	if (now < cert->valid_after)
		return CERT_NOT_YET_VALID;
	if (now >= cert->valid_before)
		return CERT_EXPIRED;
	if (cert->valid_before == UINT64_MAX)
		return CERT_VALID;
	life = cert->valid_before - cert->valid_after;
	if ((cert->valid_before - now) * 10 <= life)
		return CERT_EXPIRING;
	return CERT_VALID;
}

void
cert_format_time(uint64 t, char *buf, size_t len)
{
	time_t		tt = (time_t) t;
	struct tm	tm;

	if (t == UINT64_MAX || t > (uint64) INT64CONST(253402300799))
	{
		strlcpy(buf, "forever", len);
		return;
	}
	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

bool
cert_libssh2_can(const char *type, const char **reason)
{
	/*
	 * Measured and read in libssh2's userauth.c: 1.10.0 names the signature
	 * after the certificate type, except for ECDSA; OpenSSH wants the plain
	 * key's name ("ssh-ed25519") and refuses the login.  1.11 strips the
	 * suffix for every type and signs RSA with rsa-sha2-256/512.
	 */
	if (libssh2_version(0x010b00) != NULL)
		return true;
	if (strncmp(type, "ecdsa-", 6) == 0)
		return true;
	*reason = "libssh2 1.10 (this server's) sends the signature of an Ed25519 or RSA certificate under the certificate's own type name, which OpenSSH refuses; libssh2 1.11 or later can log in with it.";
	return false;
}

/* ---------- signing ---------- */

static bool
put_mpint(StringInfo buf, const BIGNUM *bn)
{
	int			n = BN_num_bytes(bn);
	unsigned char tmp[80];
	int			pad;
	uint32		len;

	if (n > 70)
		return false;
	BN_bn2bin(bn, tmp + 1);
	tmp[0] = 0;
	pad = (n > 0 && (tmp[1] & 0x80)) ? 1 : 0;
	len = n + pad;
	appendStringInfoChar(buf, (len >> 24) & 0xff);
	appendStringInfoChar(buf, (len >> 16) & 0xff);
	appendStringInfoChar(buf, (len >> 8) & 0xff);
	appendStringInfoChar(buf, len & 0xff);
	appendBinaryStringInfo(buf, (char *) tmp + 1 - pad, len);
	return true;
}

/*
 * The algorithm libssh2 put in the request it asks us to sign: string
 * session id, byte 50, string user, string service, string "publickey",
 * bool, string algorithm, string blob.
 */
static char *
signed_algorithm(const unsigned char *data, size_t len)
{
	Reader		r = {data, len, false};
	size_t		n;

	(void) get_string(&r, &n);
	if (r.left < 1)
		return NULL;
	r.p++;
	r.left--;
	(void) get_string(&r, &n);
	(void) get_string(&r, &n);
	(void) get_string(&r, &n);
	if (r.bad || r.left < 1)
		return NULL;
	r.p++;
	r.left--;
	return get_cstring(&r);
}

static const EVP_MD *
digest_for(EVP_PKEY *pkey, const char *algorithm)
{
	switch (EVP_PKEY_get_base_id(pkey))
	{
		case EVP_PKEY_ED25519:
			return NULL;
		case EVP_PKEY_EC:
			switch (EVP_PKEY_get_bits(pkey))
			{
				case 256:
					return EVP_sha256();
				case 384:
					return EVP_sha384();
				default:
					return EVP_sha512();
			}
		case EVP_PKEY_RSA:
			if (algorithm && strncmp(algorithm, "rsa-sha2-512", 12) == 0)
				return EVP_sha512();
			if (algorithm && strncmp(algorithm, "rsa-sha2-256", 12) == 0)
				return EVP_sha256();
			return EVP_sha1();
	}
	return NULL;
}

int
cert_sign(LIBSSH2_SESSION *session, unsigned char **sig, size_t *sig_len,
		  const unsigned char *data, size_t data_len, void **abstract)
{
	TunnelCertSigner *signer = (TunnelCertSigner *) abstract;
	BIO		   *bio;
	EVP_PKEY   *pkey;
	EVP_MD_CTX *ctx = NULL;
	unsigned char *raw = NULL;
	size_t		raw_len = 0;
	char	   *algorithm;
	int			result = -1;

	bio = BIO_new_mem_buf(signer->private_pem, -1);
	pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (pkey == NULL)
		return -1;
	algorithm = signed_algorithm(data, data_len);
	ctx = EVP_MD_CTX_new();
	if (ctx &&
		EVP_DigestSignInit(ctx, NULL, digest_for(pkey, algorithm), NULL, pkey) == 1 &&
		EVP_DigestSign(ctx, NULL, &raw_len, data, data_len) == 1 &&
		(raw = OPENSSL_malloc(raw_len)) != NULL &&
		EVP_DigestSign(ctx, raw, &raw_len, data, data_len) == 1)
	{
		StringInfoData out;

		initStringInfo(&out);
		if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC)
		{
			/* DER SEQUENCE { r, s } -> mpint r, mpint s */
			const unsigned char *p = raw;
			ECDSA_SIG  *es = d2i_ECDSA_SIG(NULL, &p, raw_len);

			if (es && put_mpint(&out, ECDSA_SIG_get0_r(es)) &&
				put_mpint(&out, ECDSA_SIG_get0_s(es)))
				result = 0;
			ECDSA_SIG_free(es);
		}
		else
		{
			appendBinaryStringInfo(&out, (char *) raw, raw_len);
			result = 0;
		}
		if (result == 0)
		{
			/* libssh2 frees it with its allocator: malloc's (connect.c) */
			*sig = malloc(out.len);
			if (*sig == NULL)
				result = -1;
			else
			{
				memcpy(*sig, out.data, out.len);
				*sig_len = out.len;
			}
		}
		pfree(out.data);
	}
	OPENSSL_free(raw);
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(pkey);
	if (algorithm)
		pfree(algorithm);
	return result;
}
