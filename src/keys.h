/*-------------------------------------------------------------------------
 *
 * keys.h
 *	  SSH key pairs for tunnels: generation with OpenSSL, the OpenSSH
 *	  authorized_keys line, and SHA256 fingerprints as ssh-keygen prints them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_KEYS_H
#define TUNNEL_KEYS_H

typedef enum TunnelKeyType
{
	TUNNEL_KEY_ED25519,
	TUNNEL_KEY_ECDSA,			/* NIST P-256 */
	TUNNEL_KEY_RSA				/* 3072 bits */
} TunnelKeyType;

typedef struct TunnelKey
{
	char	   *private_pem;	/* PEM that libssh2 1.10 loads from memory */
	char	   *public_line;	/* "ssh-ed25519 AAAA... comment" */
	char	   *fingerprint;	/* "SHA256:..." of the public key blob */
} TunnelKey;

/* Parse "ed25519" / "ecdsa" / "rsa"; false for anything else. */
extern bool keys_type_from_name(const char *name, TunnelKeyType *type);
extern const char *keys_type_name(TunnelKeyType type);

/*
 * Generate a fresh key pair.  All strings are palloc'd in the current memory
 * context; the caller wipes private_pem with keys_wipe() once it is stored.
 * Raises ERROR if OpenSSL fails.
 */
extern void keys_generate(TunnelKeyType type, const char *comment,
						  TunnelKey *key);

/*
 * Derive the public key line and fingerprint from a stored private key.
 * Returns false (and sets nothing) if the text is not a key we can read.
 */
extern bool keys_public_from_private(const char *private_pem,
									 const char *comment,
									 char **public_line, char **fingerprint);

/* "SHA256:" + unpadded base64 of a SHA-256 digest (32 bytes), palloc'd. */
extern char *keys_fingerprint_from_digest(const unsigned char *digest);

/* Overwrite a NUL-terminated secret in place (then pfree it if you like). */
extern void keys_wipe(char *secret);

#endif							/* TUNNEL_KEYS_H */
