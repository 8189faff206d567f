/*-------------------------------------------------------------------------
 *
 * tunnel_limits.h
 *	  Sizes shared by every module of tunnel_ssh.
 *
 * Constants only, and no .c file: any module may include it without
 * making a circle.  (Not "limits.h", which would shadow the C library's.)
 * The settings are in settings.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_LIMITS_H
#define TUNNEL_LIMITS_H

/* Tunnel names are identifiers: at most NAMEDATALEN - 1 bytes. */
#define TUNNEL_NAME_MAXLEN	63
/* A DNS name is at most 253 bytes; an IPv6 literal is shorter. */
#define TUNNEL_HOST_MAXLEN	253
/* "SHA256:" followed by 43 characters of unpadded base64. */
#define TUNNEL_FINGERPRINT_LEN 50
#define TUNNEL_ERROR_MAXLEN 512

#endif							/* TUNNEL_LIMITS_H */
