/*-------------------------------------------------------------------------
 *
 * hostkeys.h
 *	  Host key pins: which host key algorithms to ask a bastion for, and
 *	  whether the key it presented is one of those pinned.  Shared by the
 *	  worker's sessions and tunnel_test, so both decide alike.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_HOSTKEYS_H
#define TUNNEL_HOSTKEYS_H

#include <libssh2.h>

/* Families a pin without algorithm may be of, in OpenSSH's order. */
#define HOSTKEYS_FAMILIES 3

/*
 * The host key algorithms to offer before the default order, palloc'd:
 * those of the pins that name one, then learned (the algorithm recorded
 * with the host key, or a legacy order), then, when nothing names an
 * algorithm, family try % HOSTKEYS_FAMILIES (0 keeps OpenSSH's order).
 * NULL when there is nothing to put first.
 */
extern char *hostkeys_preference(const char *pins, const char *learned,
								 int try);

/* Does any pin name its algorithm? */
extern bool hostkeys_typed(const char *pins);

/* Is fingerprint one of the pins?  Pins that do not parse match nothing. */
extern bool hostkeys_match(const char *pins, const char *fingerprint);

/* The pins as text to show ("ssh-ed25519 SHA256:..., SHA256:..."). */
extern const char *hostkeys_display(const char *pins);

/* Key type of the host key a handshaken session received ("ssh-ed25519"). */
extern const char *hostkeys_received_type(LIBSSH2_SESSION *ssh);

/*
 * With libssh2 older than 1.11, which verifies RSA host keys only with
 * ssh-rsa (SHA-1) signatures: a sentence to add to a mismatch when an RSA
 * pin met another key type; "" otherwise.
 */
extern const char *hostkeys_rsa_note(const char *pins, const char *seen_type);

/* What a family is called in a message ("ECDSA"). */
extern const char *hostkeys_family_name(int try);

#endif							/* TUNNEL_HOSTKEYS_H */
