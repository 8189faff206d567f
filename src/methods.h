/*-------------------------------------------------------------------------
 *
 * methods.h
 *	  The SSH algorithms tunnel_ssh offers a bastion, in order of
 *	  preference: one definition for the worker and tunnel_test alike.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_METHODS_H
#define TUNNEL_METHODS_H

#include <libssh2.h>

#include "utils/guc.h"

/* Longest text of one negotiated method that the status keeps. */
#define TUNNEL_METHOD_MAXLEN 48

/* The built-in value of tunnel_ssh.ciphers. */
extern const char *const tunnel_default_ciphers;

/* GUC check and assign hooks of tunnel_ssh.ciphers (OpenSSH syntax). */
extern bool tunnel_methods_check_ciphers(char **newval, void **extra,
										 GucSource source);
extern void tunnel_methods_assign_ciphers(const char *newval, void *extra);

/*
 * Set key exchange, host key, cipher and MAC preferences on a session not
 * yet handshaken.  host_key_algorithms, if not NULL, goes before the
 * default host key order (a tunnel whose host key was recorded with it).
 * Returns false, with a message in err, if libssh2 supports none of the
 * configured ciphers.
 */
extern bool tunnel_methods_apply(LIBSSH2_SESSION *ssh,
								 const char *host_key_algorithms,
								 char *err, size_t errlen);

/*
 * The methods a handshaken session negotiated: key exchange, host key,
 * cipher and MAC (client to server; "<implicit>" for an AEAD cipher).
 */
typedef struct TunnelMethods
{
	char		kex[TUNNEL_METHOD_MAXLEN];
	char		host_key[TUNNEL_METHOD_MAXLEN];
	char		cipher[TUNNEL_METHOD_MAXLEN];
	char		mac[TUNNEL_METHOD_MAXLEN];
} TunnelMethods;

extern void tunnel_methods_negotiated(LIBSSH2_SESSION *ssh,
									  TunnelMethods *out);

#endif							/* TUNNEL_METHODS_H */
