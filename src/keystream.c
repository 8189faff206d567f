/*-------------------------------------------------------------------------
 *
 * keystream.c
 *	  An OpenSSL provider of AES-CTR that computes the keystream in bulk.
 *
 * libssh2 1.10 encrypts and decrypts every packet one 16-byte block at a
 * time, each block a separate EVP_Cipher() call.  OpenSSL's AES-NI code then
 * runs one block's rounds serially instead of interleaving eight blocks, and
 * every call pays the provider dispatch: on a bulk transfer the cipher took
 * 40 % of the worker's CPU and made it the slower end of the pipe.
 *
 * In counter mode the keystream does not depend on the data.  So this
 * provider keeps, per cipher context, a run of keystream that OpenSSL's own
 * AES-CTR (whatever the process would otherwise have used) computed over
 * zeros, KEYSTREAM_CHUNK bytes per call, and answers each block with an
 * XOR.  The key, the counter and the AES rounds all stay OpenSSL's; only
 * the moment the keystream is computed changes.
 *
 * The provider is loaded in the worker only, and libssh2's implicit fetch
 * of "AES-128-CTR" (and 192, 256) finds it through a default property
 * preference ("?provider=..."), which leaves every other algorithm as it
 * was.  It is not built or loaded with libssh2 1.11 and later (which
 * negotiates AES-GCM, and where the DBA is not asked to choose a replaced
 * cipher), under a FIPS configuration, or if it does not produce exactly
 * what OpenSSL's AES-CTR produces when checked at start.
 *
 * The provider's functions (contexts, init, update, params) run inside
 * OpenSSL, called from libssh2: they must not ereport or palloc.  Only
 * tunnel_keystream_install and its start-up check run in PostgreSQL's world.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <libssh2.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include "storage/ipc.h"

#include "keystream.h"

/* The Makefile leaves this file out with libssh2 1.11 and later. */
#if LIBSSH2_VERSION_NUM >= 0x010b00
#error "keystream.c is for libssh2 older than 1.11, which crypts block by block"
#endif

#define PROVIDER_NAME	"tunnel_ssh_keystream"

/*
 * Keystream computed per call to OpenSSL: large enough that AES-NI runs at
 * full width and the call overhead vanishes, small enough to stay in L1.
 */
#define KEYSTREAM_CHUNK 4096
#define CTR_IV_LEN		16

typedef struct KeystreamCtx
{
	EVP_CIPHER_CTX *aes;		/* OpenSSL's AES-CTR, run over zeros */
	size_t		keylen;
	size_t		used;			/* bytes of ks[] already applied */
	unsigned char ks[KEYSTREAM_CHUNK];
} KeystreamCtx;

static const char *const ctr_names[] = {"AES-128-CTR", "AES-192-CTR", "AES-256-CTR"};

/* OpenSSL's own AES-CTR, fetched before this provider was loaded. */
static EVP_CIPHER *openssl_ctr[lengthof(ctr_names)];

static const unsigned char zeros[KEYSTREAM_CHUNK];

/* Loaded for the life of the process. */
static OSSL_PROVIDER *keystream_provider = NULL;

static int
key_index(size_t keylen)
{
	return keylen == 16 ? 0 : keylen == 24 ? 1 : 2;
}

static void *
new_ctx(size_t keylen)
{
	KeystreamCtx *ctx = OPENSSL_zalloc(sizeof(KeystreamCtx));

	if (ctx == NULL)
		return NULL;
	ctx->keylen = keylen;
	ctx->used = KEYSTREAM_CHUNK;
	ctx->aes = EVP_CIPHER_CTX_new();
	if (ctx->aes == NULL ||
		!EVP_EncryptInit_ex2(ctx->aes, openssl_ctr[key_index(keylen)],
							 NULL, NULL, NULL))
	{
		EVP_CIPHER_CTX_free(ctx->aes);
		OPENSSL_free(ctx);
		return NULL;
	}
	return ctx;
}

static void *
new_ctx_128(void *provctx)
{
	return new_ctx(16);
}

static void *
new_ctx_192(void *provctx)
{
	return new_ctx(24);
}

static void *
new_ctx_256(void *provctx)
{
	return new_ctx(32);
}

static void
free_ctx(void *vctx)
{
	KeystreamCtx *ctx = (KeystreamCtx *) vctx;

	if (ctx == NULL)
		return;
	EVP_CIPHER_CTX_free(ctx->aes);
	OPENSSL_clear_free(ctx, sizeof(KeystreamCtx));
}

static void *
dup_ctx(void *vctx)
{
	KeystreamCtx *src = (KeystreamCtx *) vctx;
	KeystreamCtx *dst = OPENSSL_malloc(sizeof(KeystreamCtx));

	if (dst == NULL)
		return NULL;
	memcpy(dst, src, sizeof(KeystreamCtx));
	dst->aes = EVP_CIPHER_CTX_new();
	if (dst->aes == NULL || !EVP_CIPHER_CTX_copy(dst->aes, src->aes))
	{
		EVP_CIPHER_CTX_free(dst->aes);
		OPENSSL_clear_free(dst, sizeof(KeystreamCtx));
		return NULL;
	}
	return dst;
}

/* Encryption and decryption are the same XOR; key and IV may come apart. */
static int
init_ctx(void *vctx, const unsigned char *key, size_t keylen,
		 const unsigned char *iv, size_t ivlen, const OSSL_PARAM params[])
{
	KeystreamCtx *ctx = (KeystreamCtx *) vctx;

	if ((key != NULL && keylen != ctx->keylen) ||
		(iv != NULL && ivlen != CTR_IV_LEN))
		return 0;
	if (!EVP_EncryptInit_ex2(ctx->aes, NULL, key, iv, NULL))
		return 0;
	/* Keystream of the previous key or counter must not be used. */
	ctx->used = KEYSTREAM_CHUNK;
	return 1;
}

/*
 * out = in ^ ks.  libssh2 copies each block with one 16-byte load as soon
 * as we return it, and a load that spans several smaller stores cannot be
 * forwarded from the store buffer: written in bytes or words, every block
 * stalled there (memmove rose to a fifth of the worker's CPU).  So whole
 * blocks are written with one 16-byte store.
 */
#if defined(__GNUC__)
typedef unsigned char Block16 __attribute__((vector_size(16)));
#else
typedef struct
{
	uint64		w[2];
} Block16;
#endif

static inline void
xor_into(unsigned char *out, const unsigned char *in,
		 const unsigned char *ks, size_t n)
{
	size_t		i = 0;

	for (; i + 16 <= n; i += 16)
	{
		Block16		a;
		Block16		b;

		memcpy(&a, in + i, 16);
		memcpy(&b, ks + i, 16);
#if defined(__GNUC__)
		a ^= b;
#else
		a.w[0] ^= b.w[0];
		a.w[1] ^= b.w[1];
#endif
		memcpy(out + i, &a, 16);
	}
	for (; i < n; i++)
		out[i] = in[i] ^ ks[i];
}

static int
update(void *vctx, unsigned char *out, size_t *outl, size_t outsize,
	   const unsigned char *in, size_t inl)
{
	KeystreamCtx *ctx = (KeystreamCtx *) vctx;
	size_t		done = 0;

	if (outsize < inl)
		return 0;
	while (done < inl)
	{
		size_t		n;

		if (ctx->used == KEYSTREAM_CHUNK)
		{
			int			got = 0;

			if (!EVP_EncryptUpdate(ctx->aes, ctx->ks, &got, zeros,
								   KEYSTREAM_CHUNK) ||
				got != KEYSTREAM_CHUNK)
				return 0;
			ctx->used = 0;
		}
		n = Min(inl - done, KEYSTREAM_CHUNK - ctx->used);
		xor_into(out + done, in + done, ctx->ks + ctx->used, n);
		ctx->used += n;
		done += n;
	}
	*outl = inl;
	return 1;
}

static int
final(void *vctx, unsigned char *out, size_t *outl, size_t outsize)
{
	*outl = 0;
	return 1;
}

static int
set_size_param(OSSL_PARAM params[], const char *key, size_t value)
{
	OSSL_PARAM *p = OSSL_PARAM_locate(params, key);

	return p == NULL || OSSL_PARAM_set_size_t(p, value);
}

/* What EVP caches about the cipher when it is fetched. */
static int
get_params(OSSL_PARAM params[], size_t keylen)
{
	OSSL_PARAM *p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_MODE);

	if (p != NULL && !OSSL_PARAM_set_uint(p, EVP_CIPH_CTR_MODE))
		return 0;
	return set_size_param(params, OSSL_CIPHER_PARAM_KEYLEN, keylen) &&
		set_size_param(params, OSSL_CIPHER_PARAM_IVLEN, CTR_IV_LEN) &&
		set_size_param(params, OSSL_CIPHER_PARAM_BLOCK_SIZE, 1);
}

static int
get_params_128(OSSL_PARAM params[])
{
	return get_params(params, 16);
}

static int
get_params_192(OSSL_PARAM params[])
{
	return get_params(params, 24);
}

static int
get_params_256(OSSL_PARAM params[])
{
	return get_params(params, 32);
}

static const OSSL_PARAM gettable[] = {
	OSSL_PARAM_uint(OSSL_CIPHER_PARAM_MODE, NULL),
	OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
	OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL),
	OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_BLOCK_SIZE, NULL),
	OSSL_PARAM_END
};

static const OSSL_PARAM gettable_ctx[] = {
	OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
	OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL),
	OSSL_PARAM_END
};

static const OSSL_PARAM settable_ctx[] = {
	OSSL_PARAM_END
};

static const OSSL_PARAM *
gettable_params(void *provctx)
{
	return gettable;
}

static int
get_ctx_params(void *vctx, OSSL_PARAM params[])
{
	KeystreamCtx *ctx = (KeystreamCtx *) vctx;

	return set_size_param(params, OSSL_CIPHER_PARAM_KEYLEN, ctx->keylen) &&
		set_size_param(params, OSSL_CIPHER_PARAM_IVLEN, CTR_IV_LEN);
}

/* Nothing is settable; like OpenSSL's ciphers, ignore what we do not know. */
static int
set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
	return 1;
}

static const OSSL_PARAM *
gettable_ctx_params(void *cctx, void *provctx)
{
	return gettable_ctx;
}

static const OSSL_PARAM *
settable_ctx_params(void *cctx, void *provctx)
{
	return settable_ctx;
}

#define CTR_FUNCTIONS(bits) \
static const OSSL_DISPATCH ctr_##bits##_functions[] = { \
	{OSSL_FUNC_CIPHER_NEWCTX, (void (*) (void)) new_ctx_##bits}, \
	{OSSL_FUNC_CIPHER_FREECTX, (void (*) (void)) free_ctx}, \
	{OSSL_FUNC_CIPHER_DUPCTX, (void (*) (void)) dup_ctx}, \
	{OSSL_FUNC_CIPHER_ENCRYPT_INIT, (void (*) (void)) init_ctx}, \
	{OSSL_FUNC_CIPHER_DECRYPT_INIT, (void (*) (void)) init_ctx}, \
	{OSSL_FUNC_CIPHER_UPDATE, (void (*) (void)) update}, \
	{OSSL_FUNC_CIPHER_FINAL, (void (*) (void)) final}, \
	{OSSL_FUNC_CIPHER_CIPHER, (void (*) (void)) update}, \
	{OSSL_FUNC_CIPHER_GET_PARAMS, (void (*) (void)) get_params_##bits}, \
	{OSSL_FUNC_CIPHER_GETTABLE_PARAMS, (void (*) (void)) gettable_params}, \
	{OSSL_FUNC_CIPHER_GET_CTX_PARAMS, (void (*) (void)) get_ctx_params}, \
	{OSSL_FUNC_CIPHER_SET_CTX_PARAMS, (void (*) (void)) set_ctx_params}, \
	{OSSL_FUNC_CIPHER_GETTABLE_CTX_PARAMS, (void (*) (void)) gettable_ctx_params}, \
	{OSSL_FUNC_CIPHER_SETTABLE_CTX_PARAMS, (void (*) (void)) settable_ctx_params}, \
	{0, NULL} \
}

CTR_FUNCTIONS(128);
CTR_FUNCTIONS(192);
CTR_FUNCTIONS(256);

static const OSSL_ALGORITHM ctr_algorithms[] = {
	{"AES-128-CTR", "provider=" PROVIDER_NAME, ctr_128_functions, NULL},
	{"AES-192-CTR", "provider=" PROVIDER_NAME, ctr_192_functions, NULL},
	{"AES-256-CTR", "provider=" PROVIDER_NAME, ctr_256_functions, NULL},
	{NULL, NULL, NULL, NULL}
};

static const OSSL_ALGORITHM *
query_operation(void *provctx, int operation_id, int *no_cache)
{
	*no_cache = 0;
	return operation_id == OSSL_OP_CIPHER ? ctr_algorithms : NULL;
}

static const OSSL_DISPATCH provider_functions[] = {
	{OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*) (void)) query_operation},
	{0, NULL}
};

static int
provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
			  const OSSL_DISPATCH **out, void **provctx)
{
	*out = provider_functions;
	*provctx = (void *) handle;
	return 1;
}

/*
 * One pass of the check: libssh2's way in (the legacy EVP_aes_*_ctr() object,
 * fetched implicitly, EVP_Cipher in pieces) must land in this provider and
 * give what OpenSSL's AES-CTR gives in one call, both ways.
 */
static bool
check_one(int k, OSSL_PROVIDER *prov, const unsigned char *iv)
{
	static const EVP_CIPHER *(*const legacy[]) (void) = {
		EVP_aes_128_ctr, EVP_aes_192_ctr, EVP_aes_256_ctr
	};
	static const int pieces[] = {16, 16, 1, 15, 4096, 7, 16, 4000, 33, 8192};
	int			len = 3 * KEYSTREAM_CHUNK + 77;
	unsigned char key[32];
	unsigned char *plain = palloc(len);
	unsigned char *expect = palloc(len);
	unsigned char *got = palloc(len);
	EVP_CIPHER_CTX *ref = EVP_CIPHER_CTX_new();
	EVP_CIPHER_CTX *ours = EVP_CIPHER_CTX_new();
	bool		ok = false;
	int			n;

	if (ref == NULL || ours == NULL ||
		RAND_bytes(key, sizeof(key)) != 1 || RAND_bytes(plain, len) != 1 ||
		!EVP_EncryptInit_ex2(ref, openssl_ctr[k], key, iv, NULL) ||
		!EVP_EncryptUpdate(ref, expect, &n, plain, len) || n != len)
		goto done;

	for (int enc = 1; enc >= 0; enc--)
	{
		const unsigned char *in = enc ? plain : expect;
		unsigned char *out = got;
		int			off = 0;

		if (!EVP_CipherInit(ours, legacy[k](), key, iv, enc) ||
			EVP_CIPHER_get0_provider(EVP_CIPHER_CTX_get0_cipher(ours)) != prov)
			goto done;
		for (int i = 0; off < len; i++)
		{
			int			piece = Min(pieces[i % lengthof(pieces)], len - off);

			if (EVP_Cipher(ours, out + off, in + off, piece) != piece)
				goto done;
			off += piece;
		}
		if (memcmp(got, enc ? expect : plain, len) != 0)
			goto done;
	}
	ok = true;

done:
	EVP_CIPHER_CTX_free(ref);
	EVP_CIPHER_CTX_free(ours);
	pfree(plain);
	pfree(expect);
	pfree(got);
	return ok;
}

static bool
provider_matches_openssl(OSSL_PROVIDER *prov)
{
	unsigned char iv[CTR_IV_LEN];

	for (int k = 0; k < lengthof(ctr_names); k++)
	{
		/* A random counter, then one whose low 32 bits are about to wrap. */
		if (RAND_bytes(iv, sizeof(iv)) != 1 || !check_one(k, prov, iv))
			return false;
		memset(iv + 12, 0xff, 4);
		iv[15] = 0xf0;
		if (!check_one(k, prov, iv))
			return false;
	}
	return true;
}

/*
 * At exit, before OpenSSL's own cleanup: with our reference still held, that
 * cleanup would leave the provider's internals behind, unreachable.
 */
static void
unload_provider(int code, Datum arg)
{
	if (keystream_provider != NULL)
		(void) OSSL_PROVIDER_unload(keystream_provider);
	keystream_provider = NULL;
}

bool
tunnel_keystream_install(void)
{
	OSSL_PROVIDER *prov = NULL;
	const char *why = NULL;

	/* Only for 1.10 (see the file header), whatever library is loaded. */
	if (libssh2_version(0x010b00) != NULL)
		return false;
	/* A FIPS configuration keeps its validated implementations. */
	if (EVP_default_properties_is_fips_enabled(NULL))
		return false;

	for (int k = 0; k < lengthof(ctr_names); k++)
	{
		openssl_ctr[k] = EVP_CIPHER_fetch(NULL, ctr_names[k], NULL);
		if (openssl_ctr[k] == NULL)
			why = "OpenSSL has no AES-CTR";
	}
	if (why == NULL &&
		(!OSSL_PROVIDER_add_builtin(NULL, PROVIDER_NAME, provider_init) ||
		 (prov = OSSL_PROVIDER_load(NULL, PROVIDER_NAME)) == NULL))
		why = "the provider could not be loaded";
	if (why == NULL &&
		!EVP_set_default_properties(NULL, "?provider=" PROVIDER_NAME))
		why = "the provider could not be preferred";
	if (why == NULL && !provider_matches_openssl(prov))
	{
		(void) EVP_set_default_properties(NULL, "");
		why = "its output differs from OpenSSL's AES-CTR";
	}
	ERR_clear_error();

	if (why == NULL)
	{
		keystream_provider = prov;
		on_proc_exit(unload_provider, (Datum) 0);
		elog(DEBUG1, "tunnel_ssh: AES-CTR keystream computed in bulk for libssh2 %s",
			 libssh2_version(0));
		return true;
	}
	if (prov != NULL)
		(void) OSSL_PROVIDER_unload(prov);
	for (int k = 0; k < lengthof(ctr_names); k++)
	{
		EVP_CIPHER_free(openssl_ctr[k]);
		openssl_ctr[k] = NULL;
	}
	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("tunnel_ssh: AES-CTR is computed one block at a time"),
			 errdetail("The bulk keystream is not used: %s.", why)));
	return false;
}
