/*-------------------------------------------------------------------------
 *
 * hostkeys.c
 *	  Host key pins: the algorithms to negotiate and the match.
 *
 * host_key_fingerprint holds one or more pins in the canonical form of
 * validate_host_key_pins: "SHA256:..." or "<key type> SHA256:...".  A pin
 * that names its key type is negotiated directly (that type's algorithms go
 * first), so the bastion presents that key and no connection is spent on
 * another.  A pin without one is asked for in OpenSSH's order, or in the
 * order learned when it last matched; after a mismatch the next attempt
 * asks for the next family first, so a bare pin of the bastion's ECDSA or
 * RSA key is found within the retries the mismatch costs anyway, and the
 * worker then records its algorithm (catalog_learn_host_key_algorithm).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "hostkeys.h"
#include "validate.h"

static const char *const families[HOSTKEYS_FAMILIES][2] = {
	{"ssh-ed25519", "Ed25519"},
	{"ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521", "ECDSA"},
	{"rsa-sha2-512,rsa-sha2-256,ssh-rsa", "RSA"},
};

/* The canonical pins, or NULL if the text does not parse. */
static char *
canonical(const char *pins)
{
	char	   *out;
	const char *reason;

	if (pins == NULL)
		return NULL;
	out = palloc(VALIDATE_PINS_MAXLEN);
	if (!validate_host_key_pins(pins, out, VALIDATE_PINS_MAXLEN, &reason))
	{
		pfree(out);
		return NULL;
	}
	return out;
}

/*
 * Call fn for each pin of canonical text c: its type ("" if none) and
 * fingerprint.  Stops when fn returns true, and returns that.
 */
static bool
each_pin(char *c, bool (*fn) (const char *type, const char *fp, void *arg),
		 void *arg)
{
	char	   *save = NULL;

	for (char *pin = strtok_r(c, ",", &save); pin; pin = strtok_r(NULL, ",", &save))
	{
		char	   *fp;

		while (*pin == ' ')
			pin++;
		fp = strchr(pin, ' ');
		if (fp)
			*fp++ = '\0';
		if (fp ? fn(pin, fp, arg) : fn("", pin, arg))
			return true;
	}
	return false;
}

static bool
add_algorithms(const char *type, const char *fp, void *arg)
{
	StringInfo	list = (StringInfo) arg;

	if (*type == '\0')
		return false;
	if (list->len > 0)
		appendStringInfoChar(list, ',');
	if (strcmp(type, "ssh-rsa") == 0)
		appendStringInfoString(list, families[2][0]);
	else
		appendStringInfoString(list, type);
	return false;
}

static bool
is_typed(const char *type, const char *fp, void *arg)
{
	return *type != '\0';
}

static bool
same_fingerprint(const char *type, const char *fp, void *arg)
{
	return strcmp(fp, (const char *) arg) == 0;
}

bool
hostkeys_typed(const char *pins)
{
	char	   *c = canonical(pins);

	return c != NULL && each_pin(c, is_typed, NULL);
}

char *
hostkeys_preference(const char *pins, const char *learned, int try)
{
	StringInfoData list;
	char	   *c = canonical(pins);

	initStringInfo(&list);
	if (c)
		(void) each_pin(c, add_algorithms, &list);
	if (learned && *learned)
	{
		if (list.len > 0)
			appendStringInfoChar(&list, ',');
		appendStringInfoString(&list, learned);
	}
	if (list.len == 0 && try % HOSTKEYS_FAMILIES != 0)
		appendStringInfoString(&list, families[try % HOSTKEYS_FAMILIES][0]);
	if (list.len == 0)
	{
		pfree(list.data);
		return NULL;
	}
	return list.data;
}

bool
hostkeys_match(const char *pins, const char *fingerprint)
{
	char	   *c = canonical(pins);

	return c != NULL && each_pin(c, same_fingerprint, (void *) fingerprint);
}

const char *
hostkeys_display(const char *pins)
{
	char	   *c = canonical(pins);

	return c ? c : pins;
}

const char *
hostkeys_received_type(LIBSSH2_SESSION *ssh)
{
	size_t		len;
	int			type;

	if (libssh2_session_hostkey(ssh, &len, &type) == NULL)
		return "";
	switch (type)
	{
		case LIBSSH2_HOSTKEY_TYPE_RSA:
			return "ssh-rsa";
		case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
			return "ecdsa-sha2-nistp256";
		case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
			return "ecdsa-sha2-nistp384";
		case LIBSSH2_HOSTKEY_TYPE_ECDSA_521:
			return "ecdsa-sha2-nistp521";
		case LIBSSH2_HOSTKEY_TYPE_ED25519:
			return "ssh-ed25519";
		case LIBSSH2_HOSTKEY_TYPE_DSS:
			return "ssh-dss";
		default:
			return "";
	}
}

const char *
hostkeys_family_name(int try)
{
	return families[try % HOSTKEYS_FAMILIES][1];
}

#if LIBSSH2_VERSION_NUM < 0x010b00
static bool
is_rsa(const char *type, const char *fp, void *arg)
{
	return strcmp(type, "ssh-rsa") == 0;
}
#endif

const char *
hostkeys_rsa_note(const char *pins, const char *seen_type)
{
#if LIBSSH2_VERSION_NUM < 0x010b00
	char	   *c = canonical(pins);

	if (c != NULL && strcmp(seen_type, "ssh-rsa") != 0 &&
		each_pin(c, is_rsa, NULL))
		return "; libssh2 " LIBSSH2_VERSION " checks RSA host keys only with ssh-rsa (SHA-1) signatures, which OpenSSH 8.8 and later offer only with \"HostKeyAlgorithms +ssh-rsa\": pin another of the bastion's keys";
#endif
	return "";
}
