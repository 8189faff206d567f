/*-------------------------------------------------------------------------
 *
 * pgprobe.c
 *	  tunnel_test's postgres step: an SSLRequest through the channel, which
 *	  only a PostgreSQL server answers with one byte, and, when the server
 *	  offered SSL, the end a polite client gives it.
 *
 * A client that asks for SSL and is told 'S' owes the server a TLS
 * handshake: a server that meets the end of the connection instead logs
 * "could not accept SSL connection: EOF detected", once per tunnel_test.
 * So the probe completes the handshake (it checks no certificate: nothing
 * is sent over it) and ends it with close_notify.  The server, reading the
 * startup packet, then meets a clean end and logs nothing, as for a client
 * that changed its mind before sending one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "utils/timestamp.h"

#include "pgprobe.h"
#include "settings.h"

/* Write all of what TLS has for the server; false if the channel failed. */
static bool
send_pending(TunnelProbeHop *hop, LIBSSH2_CHANNEL *channel, BIO *out)
{
	char		buf[4096];
	int			len;

	while ((len = BIO_read(out, buf, sizeof(buf))) > 0)
	{
		int			sent = 0;

		while (sent < len)
		{
			ssize_t		n = libssh2_channel_write(channel, buf + sent,
												  len - sent);

			if (n == LIBSSH2_ERROR_EAGAIN)
			{
				if (!tunnel_probechain_wait_ssh(hop))
					return false;
				continue;
			}
			if (n < 0)
				return false;
			sent += n;
		}
	}
	return true;
}

/*
 * Read what the server sent into `in`; false at the channel's end, on
 * error or at hop's deadline.  With in NULL, read and drop.
 */
static bool
receive(TunnelProbeHop *hop, LIBSSH2_CHANNEL *channel, BIO *in)
{
	char		buf[4096];
	ssize_t		n;

	while ((n = libssh2_channel_read(channel, buf, sizeof(buf))) ==
		   LIBSSH2_ERROR_EAGAIN)
		if (!tunnel_probechain_wait_ssh(hop))
			return false;
	if (n <= 0)
		return false;
	if (in)
		(void) BIO_write(in, buf, (int) n);
	return true;
}

/*
 * The server answered 'S': shake hands, say close_notify, send EOF and let
 * the server end the connection first, so that neither side meets a reset.
 * Best effort: the step's answer is already known, and nothing here changes
 * it.  A cancel raised in a wait frees OpenSSL's objects on its way out.
 */
static void
tls_goodbye(TunnelProbeHop *hop, LIBSSH2_CHANNEL *channel)
{
	SSL_CTX    *ctx;
	SSL		   *volatile ssl = NULL;
	BIO		   *in;
	BIO		   *out;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		return;
	PG_TRY();
	{
		ssl = SSL_new(ctx);
		in = BIO_new(BIO_s_mem());
		out = BIO_new(BIO_s_mem());
		if (ssl && in && out)
		{
			int			rc;

			SSL_set_bio(ssl, in, out);	/* ssl owns them now */
			in = out = NULL;
			SSL_set_connect_state(ssl);
			hop->deadline =
				TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											tunnel_connect_timeout * 1000L);
			while ((rc = SSL_do_handshake(ssl)) != 1 &&
				   SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ &&
				   send_pending(hop, channel, SSL_get_wbio(ssl)) &&
				   receive(hop, channel, SSL_get_rbio(ssl)))
				;
			if (rc == 1 && send_pending(hop, channel, SSL_get_wbio(ssl)))
			{
				(void) SSL_shutdown(ssl);
				if (send_pending(hop, channel, SSL_get_wbio(ssl)))
				{
					int			eof;

					while ((eof = libssh2_channel_send_eof(channel)) ==
						   LIBSSH2_ERROR_EAGAIN)
						if (!tunnel_probechain_wait_ssh(hop))
							break;
					/* The server's own close_notify, then its end. */
					hop->deadline =
						TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
					while (eof == 0 && receive(hop, channel, NULL))
						;
				}
			}
		}
		BIO_free(in);
		BIO_free(out);
	}
	PG_FINALLY();
	{
		SSL_free(ssl);
		SSL_CTX_free(ctx);
		ERR_clear_error();
	}
	PG_END_TRY();
}

/*
 * An SSLRequest is the one message every PostgreSQL server answers with a
 * single byte, S or N, without a password: proof of who is on the other end.
 */
bool
tunnel_pgprobe(TunnelProbeHop *hop, LIBSSH2_CHANNEL *channel,
				const char *host, int port, char *detail, size_t detail_len)
{
	static const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
	char		answer = 0;
	ssize_t		n;
	size_t		sent = 0;

	while (sent < sizeof(ssl_request))
	{
		n = libssh2_channel_write(channel, (const char *) ssl_request + sent,
								  sizeof(ssl_request) - sent);
		if (n == LIBSSH2_ERROR_EAGAIN)
		{
			if (!tunnel_probechain_wait_ssh(hop))
				break;
			continue;
		}
		if (n < 0)
			break;
		sent += n;
	}
	n = 0;
	if (sent == sizeof(ssl_request))
	{
		while ((n = libssh2_channel_read(channel, &answer, 1)) == LIBSSH2_ERROR_EAGAIN)
			if (!tunnel_probechain_wait_ssh(hop))
				break;
	}

	/*
	 * PostgreSQL says exactly one byte and then waits for us.  A server that
	 * talks first (SSH, SMTP: "SSH-2.0-..." starts with an S too) says more.
	 */
	if (n == 1)
	{
		char		more[64];
		ssize_t		extra;

		hop->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 300);
		while ((extra = libssh2_channel_read(channel, more, sizeof(more) - 1)) ==
			   LIBSSH2_ERROR_EAGAIN)
			if (!tunnel_probechain_wait_ssh(hop))
				break;
		if (extra > 0)
		{
			more[extra] = '\0';
			for (char *c = more; *c; c++)
				if (*c < 0x20 || *c > 0x7e)
					*c = '.';
			snprintf(detail, detail_len,
					 "%s:%d is not a PostgreSQL server: it answered \"%c%s\"; check remote_host and remote_port",
					 host, port, answer, more);
			return false;
		}
	}
	if (n == 1 && (answer == 'S' || answer == 'N'))
	{
		snprintf(detail, detail_len,
				 "PostgreSQL at %s:%d answered the SSLRequest with '%c' (%s)",
				 host, port, answer,
				 answer == 'S' ? "SSL available" : "no SSL");
		if (answer == 'S')
			tls_goodbye(hop, channel);
		return true;
	}
	if (n == 1)
		snprintf(detail, detail_len,
				 "%s:%d answered with byte 0x%02x: it is not a PostgreSQL server; check remote_host and remote_port",
				 host, port, (unsigned char) answer);
	else if (n == 0 && libssh2_channel_eof(channel))
		snprintf(detail, detail_len,
				 "%s:%d closed the connection without answering: it is not a PostgreSQL server, or it refuses this client",
				 host, port);
	else if (n == LIBSSH2_ERROR_EAGAIN || sent < sizeof(ssl_request))
		snprintf(detail, detail_len,
				 "no answer from %s:%d within %d s: it is not a PostgreSQL server, or it is overloaded",
				 host, port, tunnel_connect_timeout);
	else
		snprintf(detail, detail_len, "the channel failed: %s",
				 tunnel_ssh_error_text(hop->connect.ssh));
	return false;
}

