/*-------------------------------------------------------------------------
 *
 * cert.h
 *	  OpenSSH user certificates (PROTOCOL.certkeys): parse a certificate
 *	  line, tell whose key it certifies and until when, and sign a user
 *	  authentication with the key it certifies.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_CERT_H
#define TUNNEL_CERT_H

#include <libssh2.h>

#define TUNNEL_CERT_USER 1		/* SSH2_CERT_TYPE_USER */
#define TUNNEL_CERT_HOST 2

typedef struct TunnelCert
{
	char	   *type;			/* "ssh-ed25519-cert-v01@openssh.com" */
	unsigned char *blob;		/* the certificate as sent to the bastion */
	size_t		blob_len;
	char	   *key_fingerprint;	/* "SHA256:..." of the key certified */
	char	   *ca_fingerprint; /* "SHA256:..." of the signature key */
	char	   *ca_type;		/* "ssh-ed25519" */
	uint64		serial;
	uint32		cert_type;		/* TUNNEL_CERT_USER or _HOST */
	char	   *key_id;
	int			nprincipals;
	char	  **principals;
	uint64		valid_after;	/* seconds since 1970; 0: always */
	uint64		valid_before;	/* seconds since 1970; UINT64_MAX: forever */
} TunnelCert;

/*
 * Parse an OpenSSH certificate line ("TYPE BASE64 [comment]") into *cert,
 * palloc'd.  False, with *error set to a sentence saying what is wrong, if
 * it is not one.
 */
extern bool cert_parse(const char *line, TunnelCert *cert, const char **error);

/* How a certificate stands at now (seconds since 1970). */
typedef enum TunnelCertValidity
{
	CERT_VALID,
	CERT_EXPIRING,				/* a tenth of its life or less left */
	CERT_EXPIRED,
	CERT_NOT_YET_VALID
} TunnelCertValidity;

extern TunnelCertValidity cert_validity(const TunnelCert *cert, uint64 now);

/* "2026-12-06 01:02:03 UTC" (or "forever"), in buf. */
extern void cert_format_time(uint64 t, char *buf, size_t len);

/*
 * Can this libssh2 log in with a certificate of this type?  If not,
 * *reason says why (libssh2 1.10 sends Ed25519 and RSA certificates'
 * signatures under the certificate's name, which OpenSSH refuses).
 */
extern bool cert_libssh2_can(const char *type, const char **reason);

/*
 * What libssh2_userauth_publickey needs to sign with a private key (PEM):
 * the abstract its sign callback reads.
 */
typedef struct TunnelCertSigner
{
	const char *private_pem;	/* secret, the owner's */
} TunnelCertSigner;

/* libssh2's sign callback: signs data with signer->private_pem. */
extern int	cert_sign(LIBSSH2_SESSION *session, unsigned char **sig,
					  size_t *sig_len, const unsigned char *data,
					  size_t data_len, void **abstract);

#endif							/* TUNNEL_CERT_H */
