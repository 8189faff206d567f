/*-------------------------------------------------------------------------
 *
 * methods.c
 *	  The SSH algorithms offered to a bastion, in order of preference, and
 *	  the tunnel_ssh.ciphers setting that changes the cipher list.
 *
 * The worker's sessions and tunnel_test both call tunnel_methods_apply, so
 * that both negotiate alike.  The orders follow OpenSSH's client: AEAD
 * ciphers first where both ends have them (libssh2 1.11: AES-GCM and
 * chacha20-poly1305; 1.10 has neither and gets AES-CTR), encrypt-then-MAC
 * MACs first, and host keys ssh-ed25519, ECDSA, then RSA with SHA-2, so
 * that the host key recorded is the one "ssh" shows.  Names this libssh2
 * does not know are dropped by libssh2_session_method_pref itself; the
 * strict key exchange marker (Terrapin, libssh2 1.11.1) and ext-info-c
 * (which tells libssh2 1.11 that the server takes rsa-sha2 signatures) are
 * listed so that a key exchange preference does not lose them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fnmatch.h>

#include "lib/stringinfo.h"
#include "utils/varlena.h"

#include "methods.h"

const char *const tunnel_default_ciphers =
"aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
"chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";

static const char *const kex_pref =
"curve25519-sha256,curve25519-sha256@libssh.org,"
"ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,"
"diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,"
"diffie-hellman-group18-sha512,diffie-hellman-group14-sha256,"
"ext-info-c,kex-strict-c-v00@openssh.com";

static const char *const host_key_pref =
"ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,"
"rsa-sha2-512,rsa-sha2-256,ssh-rsa";

static const char *const mac_pref =
"hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,"
"hmac-sha2-256,hmac-sha2-512,hmac-sha1-etm@openssh.com,hmac-sha1";

/* Every cipher name libssh2 knows, and the release that brought it. */
typedef struct CipherName
{
	const char *name;
	long		since;			/* LIBSSH2_VERSION_NUM */
} CipherName;

static const CipherName cipher_names[] = {
	{"aes128-gcm@openssh.com", 0x010b00},
	{"aes256-gcm@openssh.com", 0x010b00},
	{"chacha20-poly1305@openssh.com", 0x010b01},
	{"aes128-ctr", 0},
	{"aes192-ctr", 0},
	{"aes256-ctr", 0},
	{"aes128-cbc", 0},
	{"aes192-cbc", 0},
	{"aes256-cbc", 0},
	{"rijndael-cbc@lysator.liu.se", 0},
	{"3des-cbc", 0},
	{"blowfish-cbc", 0},
	{"cast128-cbc", 0},
	{"arcfour", 0},
	{"arcfour128", 0},
};

/* The cipher list in effect (the check hook's result). */
static const char *effective_ciphers = NULL;

static const CipherName *
find_cipher(const char *name)
{
	for (int i = 0; i < lengthof(cipher_names); i++)
		if (strcmp(cipher_names[i].name, name) == 0)
			return &cipher_names[i];
	return NULL;
}

static bool
cipher_supported(const char *name)
{
	const CipherName *c = find_cipher(name);

	return c != NULL && c->since <= LIBSSH2_VERSION_NUM;
}

/* Append name to a comma-separated list unless it is already there. */
static void
append_unique(StringInfo list, const char *name, int len)
{
	const char *p = list->data;

	while (p && *p)
	{
		const char *end = strchr(p, ',');
		int			n = end ? (int) (end - p) : (int) strlen(p);

		if (n == len && strncmp(p, name, len) == 0)
			return;
		p = end ? end + 1 : NULL;
	}
	if (list->len > 0)
		appendStringInfoChar(list, ',');
	appendBinaryStringInfo(list, name, len);
}

static void
append_all(StringInfo list, const char *names)
{
	const char *p = names;

	while (p && *p)
	{
		const char *end = strchr(p, ',');

		append_unique(list, p, end ? (int) (end - p) : (int) strlen(p));
		p = end ? end + 1 : NULL;
	}
}

/* Does some pattern of the comma-separated list match name? */
static bool
matches_any(const List *patterns, const char *name)
{
	ListCell   *lc;

	foreach(lc, patterns)
		if (fnmatch((const char *) lfirst(lc), name, 0) == 0)
			return true;
	return false;
}

/*
 * tunnel_ssh.ciphers in OpenSSH's Ciphers syntax: a list replaces the
 * default, "+list" appends to it, "-list" removes from it (wildcards
 * allowed) and "^list" puts the list first.  Names libssh2 knows but this
 * build lacks (AES-GCM with libssh2 1.10) are accepted and skipped, so one
 * setting serves both versions; a list with none left is refused.
 */
bool
tunnel_methods_check_ciphers(char **newval, void **extra, GucSource source)
{
	char		mode = '\0';
	char	   *copy;
	List	   *names = NIL;
	ListCell   *lc;
	StringInfoData wanted;
	StringInfoData usable;
	char	   *result;

	copy = pstrdup(*newval);
	if (copy[0] == '+' || copy[0] == '-' || copy[0] == '^')
		mode = *copy++;
	if (!SplitIdentifierString(copy, ',', &names) || names == NIL)
	{
		GUC_check_errdetail("The value must be a comma-separated list of cipher names.");
		GUC_check_errhint("Write it as OpenSSH's Ciphers option: a list, or \"+\", \"-\" or \"^\" followed by a list.");
		return false;
	}
	foreach(lc, names)
	{
		const char *name = lfirst(lc);

		if (mode == '-' && strpbrk(name, "*?") != NULL)
			continue;
		if (find_cipher(name) == NULL)
		{
			GUC_check_errdetail("Unknown cipher \"%s\".", name);
			GUC_check_errhint("Known ciphers: aes128-gcm@openssh.com, aes256-gcm@openssh.com, chacha20-poly1305@openssh.com (libssh2 1.11 and later), aes128-ctr, aes192-ctr, aes256-ctr, aes128-cbc, aes192-cbc, aes256-cbc.");
			return false;
		}
	}

	initStringInfo(&wanted);
	switch (mode)
	{
		case '+':
			append_all(&wanted, tunnel_default_ciphers);
			/* FALLTHROUGH */
		case '\0':
			foreach(lc, names)
				append_unique(&wanted, lfirst(lc), strlen(lfirst(lc)));
			break;
		case '^':
			foreach(lc, names)
				append_unique(&wanted, lfirst(lc), strlen(lfirst(lc)));
			append_all(&wanted, tunnel_default_ciphers);
			break;
		case '-':
			{
				List	   *defaults = NIL;
				char	   *d = pstrdup(tunnel_default_ciphers);

				(void) SplitIdentifierString(d, ',', &defaults);
				foreach(lc, defaults)
					if (!matches_any(names, lfirst(lc)))
						append_unique(&wanted, lfirst(lc), strlen(lfirst(lc)));
				break;
			}
	}

	/* What this libssh2 can do, in the order wanted. */
	initStringInfo(&usable);
	{
		List	   *list = NIL;

		(void) SplitIdentifierString(wanted.data, ',', &list);
		foreach(lc, list)
			if (cipher_supported(lfirst(lc)))
				append_unique(&usable, lfirst(lc), strlen(lfirst(lc)));
	}
	if (usable.len == 0)
	{
		GUC_check_errdetail("libssh2 %s supports none of the ciphers this value selects.",
							LIBSSH2_VERSION);
#if LIBSSH2_VERSION_NUM < 0x010b00
		GUC_check_errhint("libssh2 1.10 has aes128-ctr, aes192-ctr and aes256-ctr but no AES-GCM or chacha20-poly1305.");
#endif
		return false;
	}

	/* GUC frees extra itself: with guc_free since PostgreSQL 16. */
#if PG_VERSION_NUM >= 160000
	result = guc_malloc(LOG, usable.len + 1);
#else
	result = malloc(usable.len + 1);
#endif
	if (result == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		GUC_check_errmsg("out of memory");
		return false;
	}
	memcpy(result, usable.data, usable.len + 1);
	*extra = result;
	return true;
}

void
tunnel_methods_assign_ciphers(const char *newval, void *extra)
{
	effective_ciphers = (const char *) extra;
}

bool
tunnel_methods_apply(LIBSSH2_SESSION *ssh, const char *host_key_algorithms,
					 char *err, size_t errlen)
{
	StringInfoData host_keys;
	const char *ciphers = effective_ciphers ? effective_ciphers :
		"aes128-ctr,aes192-ctr,aes256-ctr";

	initStringInfo(&host_keys);
	if (host_key_algorithms)
		append_all(&host_keys, host_key_algorithms);
	append_all(&host_keys, host_key_pref);

	(void) libssh2_session_method_pref(ssh, LIBSSH2_METHOD_KEX, kex_pref);
	(void) libssh2_session_method_pref(ssh, LIBSSH2_METHOD_HOSTKEY,
									   host_keys.data);
	(void) libssh2_session_method_pref(ssh, LIBSSH2_METHOD_MAC_CS, mac_pref);
	(void) libssh2_session_method_pref(ssh, LIBSSH2_METHOD_MAC_SC, mac_pref);
	pfree(host_keys.data);
	if (libssh2_session_method_pref(ssh, LIBSSH2_METHOD_CRYPT_CS, ciphers) != 0 ||
		libssh2_session_method_pref(ssh, LIBSSH2_METHOD_CRYPT_SC, ciphers) != 0)
	{
		snprintf(err, errlen,
				 "libssh2 supports none of the ciphers in tunnel_ssh.ciphers (%s)",
				 ciphers);
		return false;
	}
	return true;
}

static void
copy_method(LIBSSH2_SESSION *ssh, int type, char *out)
{
	const char *name = libssh2_session_methods(ssh, type);

	/* libssh2 1.11 names the MAC of an AEAD cipher "INTEGRATED-...". */
	if (name == NULL)
		name = "";
	else if (strncmp(name, "INTEGRATED", 10) == 0)
		name = "<implicit>";
	strlcpy(out, name, TUNNEL_METHOD_MAXLEN);
}

void
tunnel_methods_negotiated(LIBSSH2_SESSION *ssh, TunnelMethods *out)
{
	copy_method(ssh, LIBSSH2_METHOD_KEX, out->kex);
	copy_method(ssh, LIBSSH2_METHOD_HOSTKEY, out->host_key);
	copy_method(ssh, LIBSSH2_METHOD_CRYPT_CS, out->cipher);
	copy_method(ssh, LIBSSH2_METHOD_MAC_CS, out->mac);
}
