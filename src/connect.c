/*-------------------------------------------------------------------------
 *
 * connect.c
 *	  The connect machine (connect.h): name lookup, TCP connect, SSH
 *	  handshake, host key check and authentication, stepped without ever
 *	  blocking, for the worker's sessions and tunnel_test alike.
 *
 * Neither owner may block: the worker serves every tunnel from one loop,
 * and tunnel_test must stop at a cancel or statement_timeout.  So names are
 * looked up in glibc's resolver thread (getaddrinfo_a), connects are
 * non-blocking (both in dial.c), and every libssh2 call may answer EAGAIN,
 * after which the same call is made again at the next step.
 *
 * Each failure is worded once, here; an owner adds what only it knows (the
 * worker its backoff, tunnel_test its advice).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "storage/latch.h"
#include "utils/memutils.h"

#include "connect.h"
#include "dial.h"
#include "hostkeys.h"
#include "keys.h"
#include "proxy.h"

/* ---------- the machine ---------- */

static bool check_keys(TunnelConnect *c);
static void fail(TunnelConnect *c, TunnelConnectFailure failure,
				 const char *fmt,...) pg_attribute_printf(3, 4);

static void
fail(TunnelConnect *c, TunnelConnectFailure failure, const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vsnprintf(c->message, sizeof(c->message), fmt, args);
	va_end(args);
	c->failed_at = c->step;
	c->failure = failure;
	c->step = CONNECT_FAILED;
}

static void
close_socket(TunnelConnect *c)
{
	if (c->sock == PGINVALID_SOCKET)
		return;
	if (c->socket_hook)
		c->socket_hook(c->owner, c->sock, false);
	close(c->sock);
	c->sock = PGINVALID_SOCKET;
}

static void
own_socket(TunnelConnect *c, pgsocket sock, bool tcp)
{
	c->sock = sock;
	c->tcp = tcp;
	if (c->socket_hook)
		c->socket_hook(c->owner, sock, true);
}

static void
forget_addresses(TunnelConnect *c)
{
	tunnel_dial_resolve_free(c->gai);
	c->gai = NULL;
	if (c->addrs)
		freeaddrinfo(c->addrs);
	c->addrs = NULL;
	c->next_addr = NULL;
}

void
tunnel_connect_init(TunnelConnect *c)
{
	memset(c, 0, sizeof(TunnelConnect));
	c->parent = CurrentMemoryContext;
	c->sock = PGINVALID_SOCKET;
	c->step = CONNECT_FAILED;
	c->accepted = -1;
}

/* Wipe and free the machine's copies of what to reach. */
static void
forget_strings(TunnelConnect *c)
{
	int			i;

	for (i = 0; i < TUNNEL_CONNECT_MAX_KEYS; i++)
	{
		keys_wipe(c->secrets[i]);
		c->secrets[i] = NULL;
	}
	keys_wipe(c->proxy_secret);
	c->proxy_secret = NULL;
	if (c->proxy_url)
		tunnel_proxy_wipe(c->proxy_url);
	c->proxy_url = NULL;
	if (c->cxt)
		MemoryContextDelete(c->cxt);
	c->cxt = NULL;
}

static const char *
copy_string(MemoryContext cxt, const char *str)
{
	return str ? MemoryContextStrdup(cxt, str) : NULL;
}

/*
 * Copy what the owner set into memory of the machine's own, so that the
 * attempt outlives the definition it was started from.  The previous copies
 * go only once the new ones are made: the owner may have left a field
 * pointing at them.
 */
static void
own_strings(TunnelConnect *c)
{
	MemoryContext cxt = AllocSetContextCreate(c->parent, "tunnel connect",
											  ALLOCSET_SMALL_SIZES);
	char	   *secrets[TUNNEL_CONNECT_MAX_KEYS] = {0};
	char	   *proxy;
	int			i;

	c->tunnel = copy_string(cxt, c->tunnel);
	c->host = copy_string(cxt, c->host);
	c->user = copy_string(cxt, c->user);
	c->via = copy_string(cxt, c->via);
	c->key_type = copy_string(cxt, c->key_type);
	c->host_keys = copy_string(cxt, c->host_keys);
	c->host_key_algorithms = copy_string(cxt, c->host_key_algorithms);
	proxy = (char *) copy_string(cxt, c->proxy);
	for (i = 0; i < c->nkeys; i++)
	{
		secrets[i] = (char *) copy_string(cxt, c->keys[i].private_key);
		c->keys[i].private_key = secrets[i];
		c->keys[i].fingerprint = copy_string(cxt, c->keys[i].fingerprint);
		c->keys[i].certificate = copy_string(cxt, c->keys[i].certificate);
	}
	forget_strings(c);
	c->cxt = cxt;
	c->proxy = c->proxy_secret = proxy;
	memcpy(c->secrets, secrets, sizeof(secrets));
}

/* A new attempt: what the last one learned is forgotten. */
static void
reset_progress(TunnelConnect *c)
{
	Assert(c->sock == PGINVALID_SOCKET && c->ssh == NULL &&
		   c->gai == NULL && c->addrs == NULL);
	c->tcp_errno = 0;
	c->tcp = false;
	c->key = 0;
	c->cert_used = false;
	c->address[0] = '\0';
	c->handshaken = false;
	memset(&c->methods, 0, sizeof(c->methods));
	c->host_key_shown[0] = '\0';
	c->host_key_seen[0] = '\0';
	c->host_key_algorithm[0] = '\0';
	c->host_key_type = "";
	c->host_key_trusted = false;
	c->next_family = false;
	c->accepted = -1;
	c->proxy_hs = NULL;
	c->proxy_name[0] = '\0';
	c->proxy_target[0] = '\0';
	c->failure = CONNECT_OK;
	c->failed_at = CONNECT_RESOLVE;
	c->message[0] = '\0';
	c->banner[0] = '\0';
}

/* The socket is connected: the SSH handshake comes next. */
static void
begin_ssh(TunnelConnect *c)
{
	char		text[TUNNEL_ERROR_MAXLEN];

	c->step = CONNECT_HANDSHAKE;
	c->ssh = libssh2_session_init_ex(NULL, NULL, NULL, c->owner);
	if (c->ssh == NULL)
	{
		fail(c, CONNECT_FAILURE_OTHER, "could not create an SSH session");
		return;
	}
	libssh2_session_set_blocking(c->ssh, 0);
	/* The same preferences on every path, so that all negotiate alike. */
	if (!tunnel_methods_apply(c->ssh,
							  hostkeys_preference(c->host_keys,
												  c->host_key_algorithms,
												  c->host_key_try),
							  text, sizeof(text)))
		fail(c, CONNECT_FAILURE_INVALID, "%s", text);
}

/*
 * With a proxy, the lookup under way is the proxy's once the proxy's target
 * is known: at once for socks5h:// and http:// (the proxy resolves the
 * bastion's name), after the bastion's own lookup for socks5://.
 */
static bool
looking_up_proxy(TunnelConnect *c)
{
	return c->proxy_url != NULL && c->proxy_target[0] != '\0';
}

static void
resolve_failed(TunnelConnect *c, int rc)
{
	if (looking_up_proxy(c))
		fail(c, CONNECT_FAILURE_RESOLVE, "could not resolve proxy \"%s\": %s",
			 c->proxy_url->host, gai_strerror(rc));
	else
		fail(c, CONNECT_FAILURE_RESOLVE, "could not resolve \"%s\": %s",
			 c->host, gai_strerror(rc));
}

static void lookup(TunnelConnect *c);

/*
 * c->addrs holds the answer.  For socks5:// they were the bastion's: one
 * address is what the proxy will be asked for, and the proxy's own name is
 * looked up next.  Otherwise TCP connects to them.
 */
static void
resolved(TunnelConnect *c)
{
	if (c->proxy_url && !looking_up_proxy(c))
	{
		if (!tunnel_dial_proxy_address(c->addrs, c->proxy_target,
									  sizeof(c->proxy_target)))
			strlcpy(c->proxy_target, c->host, sizeof(c->proxy_target));
		forget_addresses(c);
		lookup(c);
		return;
	}
	c->next_addr = c->addrs;
	c->step = CONNECT_TCP;
}

/* Look up the bastion's name, or the proxy's: at once if literal. */
static void
lookup(TunnelConnect *c)
{
	bool		proxy = looking_up_proxy(c);
	int			rc;

	c->step = CONNECT_RESOLVE;
	c->gai = tunnel_dial_resolve_start(proxy ? c->proxy_url->host : c->host,
						   proxy ? c->proxy_url->port : c->port,
						   &c->addrs, &rc);
	if (c->addrs)
		resolved(c);
	else if (c->gai == NULL)
		resolve_failed(c, rc);
}

/*
 * Parse the proxy URL of the first hop.  A URL the API refused cannot be
 * stored, but a catalog edited by hand can hold anything: the message
 * quotes no part of it (it may hold a password).
 */
static bool
parse_proxy(TunnelConnect *c)
{
	const char *reason;

	c->proxy_url = MemoryContextAllocZero(c->cxt, sizeof(TunnelProxyUrl));
	if (!tunnel_proxy_parse(c->proxy, c->proxy_url, &reason))
	{
		fail(c, CONNECT_FAILURE_INVALID, "the proxy of tunnel \"%s\" is invalid: %s",
			 c->tunnel ? c->tunnel : "", reason);
		return false;
	}
	tunnel_proxy_name(c->proxy_url, c->proxy_name, sizeof(c->proxy_name));
	if (c->proxy_url->kind != PROXY_SOCKS5)
		strlcpy(c->proxy_target, c->host, sizeof(c->proxy_target));
	return true;
}

void
tunnel_connect_begin(TunnelConnect *c)
{
	reset_progress(c);
	own_strings(c);
	if (!check_keys(c))
		return;
	c->step = CONNECT_RESOLVE;
	if (c->proxy && !parse_proxy(c))
		return;
	lookup(c);
}

void
tunnel_connect_begin_on(TunnelConnect *c, pgsocket sock)
{
	reset_progress(c);
	own_strings(c);
	own_socket(c, sock, false);
	if (!check_keys(c))
		return;
	begin_ssh(c);
}

static void
step_resolve(TunnelConnect *c)
{
	int			rc = tunnel_dial_resolve_poll(&c->gai, &c->addrs);

	if (rc == EAI_INPROGRESS)
		return;
	if (rc != 0)
		resolve_failed(c, rc);
	else
		resolved(c);
}

/* Connected to the proxy: its handshake makes it a way to the bastion. */
static void
begin_proxy(TunnelConnect *c)
{
	MemoryContext old = MemoryContextSwitchTo(c->cxt);

	c->step = CONNECT_PROXY;
	c->proxy_hs = tunnel_proxy_start(c->proxy_url, c->proxy_target, c->port);
	MemoryContextSwitchTo(old);
}

static void
end_proxy(TunnelConnect *c)
{
	tunnel_proxy_free(c->proxy_hs);
	c->proxy_hs = NULL;
}

/*
 * Send the proxy's request, read its reply (no further: the SSH banner
 * follows), until it connects us or refuses.
 */
static void
step_proxy(TunnelConnect *c)
{
	char		buf[512];

	for (;;)
	{
		int			len;
		const char *out = tunnel_proxy_pending(c->proxy_hs, &len);
		ssize_t		n;
		TunnelProxyResult r;

		if (len > 0)
			n = send(c->sock, out, len, MSG_NOSIGNAL);
		else
			n = recv(c->sock, buf,
					 Min(tunnel_proxy_wanted(c->proxy_hs), sizeof(buf)), 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0)
		{
			fail(c, CONNECT_FAILURE_PROXY,
				 "proxy %s closed the connection during its handshake%s%s",
				 c->proxy_name, n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
			return;
		}
		if (len > 0)
		{
			tunnel_proxy_sent(c->proxy_hs, (int) n);
			continue;
		}
		r = tunnel_proxy_received(c->proxy_hs, buf, (int) n);
		explicit_bzero(buf, sizeof(buf));
		if (r == PROXY_FAILED)
			fail(c, CONNECT_FAILURE_PROXY, "%s",
				 tunnel_proxy_message(c->proxy_hs));
		if (r == PROXY_FAILED)
			return;
		if (r == PROXY_DONE)
		{
			end_proxy(c);
			begin_ssh(c);
			return;
		}
	}
}

/* The connect under way, else the next address, else the failure. */
static void
step_tcp(TunnelConnect *c)
{
	if (c->sock != PGINVALID_SOCKET)
	{
		int			err = tunnel_dial_tcp_result(c->sock);

		if (err == EINPROGRESS)
			return;
		if (err == 0 && c->proxy_url)
			begin_proxy(c);
		else if (err == 0)
			begin_ssh(c);
		if (err == 0)
			return;
		c->tcp_errno = err;
		close_socket(c);
	}
	{
		pgsocket	fd = tunnel_dial_tcp_next(&c->next_addr, c->host,
											  c->address, sizeof(c->address),
											  &c->tcp_errno);

		if (fd != PGINVALID_SOCKET)
		{
			own_socket(c, fd, true);
			return;
		}
	}
	if (c->proxy_url)
		fail(c, CONNECT_FAILURE_TCP, "could not connect to proxy %s: %s",
			 c->proxy_name, strerror(c->tcp_errno));
	else
		fail(c, CONNECT_FAILURE_TCP, "could not connect to %s port %d: %s",
			 c->host, c->port, strerror(c->tcp_errno));
}

/*
 * A bastion that closes the connection before its SSH banner refuses us:
 * OpenSSH 9.8 and later do so for a while after failed logins from our
 * address (PerSourcePenalties), writing one line ("Not allowed at this
 * time") that libssh2 keeps where the banner would be.
 */
static void
handshake_failed(TunnelConnect *c, int rc)
{
	const char *said = libssh2_session_banner_get(c->ssh);
	bool		refused = (said == NULL || strncmp(said, "SSH-", 4) != 0) &&
		(rc == LIBSSH2_ERROR_SOCKET_RECV ||
		 rc == LIBSSH2_ERROR_SOCKET_DISCONNECT ||
		 rc == LIBSSH2_ERROR_SOCKET_SEND);

	if (!refused)
		fail(c, CONNECT_FAILURE_HANDSHAKE,
			 "SSH handshake with %s port %d failed: %s",
			 c->host, c->port, tunnel_ssh_error_text(c->ssh));

	/*
	 * Through a jump tunnel, no banner means the jump host's channel closed:
	 * most often its key's line does not permit this bastion (permitopen).
	 */
	else if (!c->tcp)
		fail(c, CONNECT_FAILURE_JUMP,
			 "jump tunnel \"%s\" could not reach %s port %d: the connection closed before an SSH banner; if its authorized_keys line does not permit %s:%d, replace it with tunnel_public_key('%s')",
			 c->via ? c->via : "", c->host, c->port, c->host, c->port,
			 c->via ? c->via : "");
	else
	{
		if (said)
			strlcpy(c->banner, said, sizeof(c->banner));
		fail(c, CONNECT_FAILURE_REFUSED,
			 "SSH handshake with %s port %d failed: the bastion refused the connection (OpenSSH 9.8+ refuses an address for a while after failed logins: see PerSourcePenalties)",
			 c->host, c->port);
	}
}

/* libssh2 before 1.11 signs RSA authentication with ssh-rsa (SHA-1) only. */
static bool
rsa_needs_ssh_rsa(const char *key_type)
{
	return LIBSSH2_VERSION_NUM < 0x010b00 && key_type != NULL &&
		strcmp(key_type, "rsa") == 0;
}

static void
check_host_key(TunnelConnect *c)
{
	const char *digest = libssh2_hostkey_hash(c->ssh, LIBSSH2_HOSTKEY_HASH_SHA256);
	const char *algorithm = libssh2_session_methods(c->ssh, LIBSSH2_METHOD_HOSTKEY);
	const char *expected = c->host_keys;
	char	   *seen;

	if (digest == NULL)
	{
		fail(c, CONNECT_FAILURE_OTHER, "bastion sent no host key");
		return;
	}
	seen = keys_fingerprint_from_digest((const unsigned char *) digest);
	c->host_key_type = hostkeys_received_type(c->ssh);
	strlcpy(c->host_key_seen, seen, sizeof(c->host_key_seen));
	snprintf(c->host_key_shown, sizeof(c->host_key_shown), "%s%s%s",
			 c->host_key_type, *c->host_key_type ? " " : "", seen);
	strlcpy(c->host_key_algorithm, algorithm ? algorithm : "",
			sizeof(c->host_key_algorithm));
	pfree(seen);

	if (expected != NULL && !hostkeys_match(expected, c->host_key_seen))
	{
		/* A bare pin may be another of the bastion's keys: ask for the next. */
		bool		bare = !hostkeys_typed(expected) &&
			c->host_key_algorithms == NULL;

		c->next_family = bare;
		fail(c, CONNECT_FAILURE_HOST_KEY,
			 "host key of %s port %d does not match: expected %s, bastion presented %s%s%s%s%s",
			 c->host, c->port, hostkeys_display(expected), c->host_key_shown,
			 bare ? "; the pin names no algorithm, so the next attempt asks for the bastion's " : "",
			 bare ? hostkeys_family_name(c->host_key_try + 1) : "",
			 bare ? " key" : "",
			 hostkeys_rsa_note(expected, c->host_key_type));
		return;
	}
	if (expected == NULL && !c->trust_first_use)
	{
		fail(c, CONNECT_FAILURE_HOST_KEY_UNKNOWN,
			 "bastion host key not known yet");
		return;
	}
	c->host_key_trusted = expected == NULL;
	c->key = 0;
	c->step = CONNECT_AUTH;
}

static void
step_handshake(TunnelConnect *c)
{
	int			rc = libssh2_session_handshake(c->ssh, c->sock);

	if (rc == LIBSSH2_ERROR_EAGAIN)
		return;
	if (rc != 0)
	{
		handshake_failed(c, rc);
		return;
	}
	c->handshaken = true;
	tunnel_methods_negotiated(c->ssh, &c->methods);
	check_host_key(c);
}

/*
 * Why key cannot log in now, or NULL: a certificate that does not parse or
 * is not valid at this moment (palloc'd in the current context).
 */
static char *
certificate_unusable(const TunnelConnect *c, const TunnelConnectKey *key,
					 TunnelCert *cert)
{
	const char *error;
	char		when[64];

	if (!cert_parse(key->certificate, cert, &error))
		return psprintf("the certificate of key %s does not parse: %s",
						key->fingerprint ? key->fingerprint : "", error);
	switch (cert_validity(cert, (uint64) time(NULL)))
	{
		case CERT_EXPIRED:
			cert_format_time(cert->valid_before, when, sizeof(when));
			return psprintf("certificate \"%s\" of key %s expired at %s: renew it and call tunnel_certificate_set('%s', ...)",
							cert->key_id, key->fingerprint, when, c->tunnel);
		case CERT_NOT_YET_VALID:
			cert_format_time(cert->valid_after, when, sizeof(when));
			return psprintf("certificate \"%s\" of key %s is not valid before %s",
							cert->key_id, key->fingerprint, when);
		default:
			return NULL;
	}
}

bool
tunnel_connect_keys_usable(const TunnelConnect *c, char *why, size_t size)
{
	TunnelCert	cert;
	char	   *reason = NULL;
	int			i;

	for (i = 0; i < c->nkeys; i++)
	{
		if (c->keys[i].private_key == NULL || c->keys[i].certificate == NULL)
			return true;
		reason = certificate_unusable(c, &c->keys[i], &cert);
		if (reason == NULL)
			return true;
	}
	if (reason != NULL)
	{
		strlcpy(why, reason, size);
		pfree(reason);
	}
	return reason == NULL;
}

/*
 * Before any connection: keys that would all be refused are not offered at
 * all, for sshd penalises a client that connects and leaves unauthenticated
 * (PerSourcePenalties noauth) as one that fails to log in.
 */
static bool
check_keys(TunnelConnect *c)
{
	char		why[TUNNEL_ERROR_MAXLEN];

	if (tunnel_connect_keys_usable(c, why, sizeof(why)))
		return true;
	c->step = CONNECT_AUTH;
	fail(c, CONNECT_FAILURE_KEY_REFUSED, "%s", why);
	return false;
}

/*
 * A key with a certificate logs in with the certificate's blob and a
 * signature of our own (cert.c): libssh2 1.10's frommemory path cannot take
 * a certificate, and this one path serves 1.10 and 1.11 alike.  Returns
 * libssh2's rc; a certificate that is not valid now is not offered (the
 * bastion would refuse it, and sshd penalises refusals): *invalid then
 * names why, and the result is LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED.
 */
static int
auth_with_certificate(TunnelConnect *c, const TunnelConnectKey *key,
					  const char **invalid)
{
	TunnelCert	cert;
	MemoryContext old = MemoryContextSwitchTo(c->cxt);
	char	   *reason = certificate_unusable(c, key, &cert);
	int			rc;

	MemoryContextSwitchTo(old);
	if (reason != NULL)
	{
		*invalid = reason;
		return LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED;
	}
	c->signer.private_pem = key->private_key;
	rc = libssh2_userauth_publickey(c->ssh, c->user, cert.blob, cert.blob_len,
									cert_sign, (void **) &c->signer);
	if (rc == 0)
	{
		c->cert_used = true;
		strlcpy(c->cert_key_id, cert.key_id, sizeof(c->cert_key_id));
		c->cert_valid_after = cert.valid_after;
		c->cert_valid_before = cert.valid_before;
	}
	return rc;
}

/*
 * The keys in order (a rotation's new key before the key it replaces); any
 * failure of one but the last moves on to the next, on the same connection.
 */
static void
step_auth(TunnelConnect *c)
{
	const TunnelConnectKey *key;
	const char *invalid = NULL;
	int			rc;

	for (;;)
	{
		key = &c->keys[c->key];
		invalid = NULL;
		if (key->private_key == NULL)
			rc = LIBSSH2_ERROR_FILE;
		else if (key->certificate != NULL)
			rc = auth_with_certificate(c, key, &invalid);
		else
			rc = libssh2_userauth_publickey_frommemory(c->ssh, c->user,
													   strlen(c->user),
													   NULL, 0,
													   key->private_key,
													   strlen(key->private_key),
													   NULL);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;
		if (rc == 0)
		{
			c->accepted = c->key;
			c->step = CONNECT_DONE;
			return;
		}
		if (c->key + 1 >= c->nkeys)
			break;
		c->key++;
	}
	if (rc == LIBSSH2_ERROR_FILE)
		fail(c, CONNECT_FAILURE_KEY_UNREADABLE,
			 "the stored private key cannot be read; rotate it with tunnel_rotate_key('%s')",
			 c->tunnel);
	else if (invalid != NULL)
		fail(c, CONNECT_FAILURE_KEY_REFUSED, "%s", invalid);
	else if (key->certificate != NULL &&
			 (rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED ||
			  rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED))
		fail(c, CONNECT_FAILURE_KEY_REFUSED,
			 "bastion %s refused the certificate of key %s for user \"%s\": check that its sshd trusts the certificate's CA (TrustedUserCAKeys) and accepts one of its principals for \"%s\" (AuthorizedPrincipalsFile, or the user name)",
			 c->host, key->fingerprint ? key->fingerprint : "", c->user, c->user);
	else if (rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED ||
			 rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED)
		fail(c, CONNECT_FAILURE_KEY_REFUSED,
			 "bastion %s refused key %s for user \"%s\": add the line from tunnel_public_key('%s') to ~%s/.ssh/authorized_keys on %s%s",
			 c->host, key->fingerprint ? key->fingerprint : "", c->user,
			 c->tunnel, c->user, c->host,
			 rsa_needs_ssh_rsa(c->key_type) ?
			 "; RSA keys also need \"PubkeyAcceptedAlgorithms +ssh-rsa\" in the bastion's sshd_config" : "");
	else
		fail(c, CONNECT_FAILURE_OTHER, "authentication on %s port %d failed: %s",
			 c->host, c->port, tunnel_ssh_error_text(c->ssh));
}

void
tunnel_connect_step(TunnelConnect *c)
{
	for (;;)
	{
		TunnelConnectStep before = c->step;

		switch (c->step)
		{
			case CONNECT_RESOLVE:
				step_resolve(c);
				break;
			case CONNECT_TCP:
				step_tcp(c);
				break;
			case CONNECT_PROXY:
				step_proxy(c);
				break;
			case CONNECT_HANDSHAKE:
				step_handshake(c);
				break;
			case CONNECT_AUTH:
				step_auth(c);
				break;
			case CONNECT_DONE:
			case CONNECT_FAILED:
				return;
		}
		if (c->step == before)
			return;
	}
}

uint32
tunnel_connect_events(TunnelConnect *c)
{
	switch (c->step)
	{
		case CONNECT_TCP:
			return WL_SOCKET_WRITEABLE;
		case CONNECT_PROXY:
			{
				int			len;

				(void) tunnel_proxy_pending(c->proxy_hs, &len);
				return len > 0 ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE;
			}
		case CONNECT_HANDSHAKE:
		case CONNECT_AUTH:
			if (libssh2_session_block_directions(c->ssh) &
				LIBSSH2_SESSION_BLOCK_OUTBOUND)
				return WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE;
			return WL_SOCKET_READABLE;
		default:
			return 0;
	}
}

void
tunnel_connect_timed_out(TunnelConnect *c, int seconds)
{
	switch (c->step)
	{
		case CONNECT_RESOLVE:
			fail(c, CONNECT_FAILURE_TIMEOUT,
				 "resolving \"%s\" timed out after %d s", c->host, seconds);
			break;
		case CONNECT_TCP:
			if (c->proxy_url)
				fail(c, CONNECT_FAILURE_TIMEOUT,
					 "connecting to proxy %s timed out after %d s",
					 c->proxy_name, seconds);
			else
				fail(c, CONNECT_FAILURE_TIMEOUT,
					 "connecting to %s port %d timed out after %d s",
					 c->host, c->port, seconds);
			break;
		case CONNECT_PROXY:
			fail(c, CONNECT_FAILURE_TIMEOUT,
				 "proxy %s did not connect to %s port %d within %d s",
				 c->proxy_name, c->host, c->port, seconds);
			break;
		case CONNECT_HANDSHAKE:
			fail(c, CONNECT_FAILURE_TIMEOUT,
				 "SSH handshake with %s port %d timed out after %d s",
				 c->host, c->port, seconds);
			break;
		case CONNECT_AUTH:
			fail(c, CONNECT_FAILURE_TIMEOUT,
				 "authentication on %s port %d timed out after %d s",
				 c->host, c->port, seconds);
			break;
		case CONNECT_DONE:
		case CONNECT_FAILED:
			break;
	}
}

void
tunnel_connect_detach(TunnelConnect *c)
{
	Assert(c->step == CONNECT_DONE);
	c->sock = PGINVALID_SOCKET;
	c->ssh = NULL;
	forget_addresses(c);
	end_proxy(c);
}

void
tunnel_connect_close(TunnelConnect *c)
{
	forget_addresses(c);
	if (c->ssh)
	{
		/* Don't let libssh2's clean-up wait on a bastion that may never answer. */
		if (c->sock != PGINVALID_SOCKET)
			(void) shutdown(c->sock, SHUT_RDWR);
		libssh2_session_set_blocking(c->ssh, 1);
		(void) libssh2_session_free(c->ssh);
		c->ssh = NULL;
	}
	close_socket(c);
	end_proxy(c);
	forget_strings(c);
	/* What the owner sets anew before the next begin. */
	c->tunnel = c->host = c->user = c->via = c->key_type = c->proxy = NULL;
	c->host_keys = c->host_key_algorithms = NULL;
	memset(c->keys, 0, sizeof(c->keys));
	c->nkeys = 0;
}

/* ---------- words ---------- */

/*
 * libssh2's own words ("_libssh2_transport_read() bailed out!") would mean
 * nothing to a DBA where the socket failed.
 */
const char *
tunnel_ssh_error_text(LIBSSH2_SESSION *ssh)
{
	char	   *msg = NULL;
	int			rc;

	if (ssh == NULL)
		return "unknown error";
	rc = libssh2_session_last_error(ssh, &msg, NULL, 0);
	switch (rc)
	{
		case LIBSSH2_ERROR_SOCKET_RECV:
		case LIBSSH2_ERROR_SOCKET_DISCONNECT:
			return "the bastion closed the connection";
		case LIBSSH2_ERROR_SOCKET_SEND:
			return "could not send to the bastion (connection reset)";
		default:
			return msg ? msg : "unknown error";
	}
}

/*
 * Say why the bastion did not open a channel in the words of its cause
 * (RFC 4254 reason codes, as libssh2 words them).
 */
void
tunnel_open_error_text(char *buf, size_t len, const char *tunnel,
					   const char *host, int port, const char *ssh_message)
{
	const char *open = strchr(host, ':') ? "[" : "";
	const char *close = *open ? "]" : "";

	if (ssh_message && strstr(ssh_message, "connect failed"))
		snprintf(buf, len,
				 "nothing listens on %s%s%s:%d as seen from the bastion (connection refused or no route)",
				 open, host, close, port);
	else if (ssh_message && strstr(ssh_message, "administratively prohibited"))
		snprintf(buf, len,
				 "the authorized_keys line on the bastion does not permit %s%s%s:%d: replace it with tunnel_public_key('%s') (or AllowTcpForwarding or PermitOpen in its sshd_config forbid it)",
				 open, host, close, port, tunnel ? tunnel : "");
	else
		snprintf(buf, len, "bastion could not open a connection to %s%s%s:%d: %s",
				 open, host, close, port, ssh_message ? ssh_message : "unknown error");
}
