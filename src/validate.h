/*-------------------------------------------------------------------------
 *
 * validate.h
 *	  Checks of the untrusted text a tunnel definition is made of.
 *
 * Pure functions: no allocation, no ereport, no backend state, so the SQL
 * functions, the worker (for values stored in the catalog by other means),
 * GUC check hooks and the fuzz targets all share one definition of "valid".
 * On failure each returns false and points *reason at a static sentence
 * fit for errdetail.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_VALIDATE_H
#define TUNNEL_VALIDATE_H

#include <stdbool.h>

/* 1-63 bytes of [A-Za-z0-9_-]. */
extern bool validate_tunnel_name(const char *name, const char **reason);

/* A DNS hostname (RFC 1123 labels, at most 253 bytes) or an IPv4/IPv6 literal. */
extern bool validate_host(const char *host, const char **reason);

/*
 * A tunnel's bastions as ssh_host holds them: one or more (at most
 * VALIDATE_MAX_BASTIONS), separated by commas, each "host", "host:port",
 * an IPv6 literal alone, or "[v6addr]" / "[v6addr]:port"; default_port
 * serves those without a port.  On success fills out[0..*n-1] in order.
 */
#define VALIDATE_MAX_BASTIONS 8
typedef struct ValidatedBastion
{
	char		host[254];
	int			port;
} ValidatedBastion;
extern bool validate_bastions(const char *text, int default_port,
							  ValidatedBastion *out, int *n,
							  const char **reason);

/* An SSH user name: 1-32 bytes, no control characters, whitespace, '@' or ':'. */
extern bool validate_user(const char *user, const char **reason);

/* 1..65535 */
extern bool validate_port(long port, const char **reason);

/* "SHA256:" followed by exactly 43 unpadded base64 characters. */
extern bool validate_fingerprint(const char *text, const char **reason);

/*
 * Host key pins as a DBA pastes them: one or more (at most
 * VALIDATE_MAX_PINS), separated by commas or newlines, each a fingerprint
 * alone ("SHA256:..."), with its algorithm ("ssh-ed25519 SHA256:...", as
 * ssh -v shows it) or as ssh-keygen -l prints it ("256 SHA256:... comment
 * (ED25519)").  On success writes the canonical form to out: the pins
 * joined by ", ", each "SHA256:..." or "<key type> SHA256:..." where the
 * key type is ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa.
 * VALIDATE_PINS_MAXLEN is enough for any accepted value.
 */
#define VALIDATE_MAX_PINS 8
#define VALIDATE_PINS_MAXLEN (VALIDATE_MAX_PINS * 76)
extern bool validate_host_key_pins(const char *text, char *out, int outlen,
								   const char **reason);

/* "LOW-HIGH" with 1024 <= LOW <= HIGH <= 65535. */
extern bool validate_port_range(const char *text, int *low, int *high,
								const char **reason);

#endif							/* TUNNEL_VALIDATE_H */
