/*-------------------------------------------------------------------------
 *
 * keystream.h
 *	  AES-CTR for libssh2 1.10 computed a run of blocks at a time.
 *
 * libssh2 before 1.11 hands OpenSSL one 16-byte block per call, so AES-NI
 * runs one block at a time instead of eight in parallel and the worker spends
 * more CPU on the cipher than on everything else it does.  Counter mode lets
 * the keystream be computed ahead of the data: a small OpenSSL provider,
 * loaded in the worker only, serves AES-CTR from keystream that OpenSSL's own
 * AES-CTR computed in bulk.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_KEYSTREAM_H
#define TUNNEL_KEYSTREAM_H

/*
 * Make AES-CTR in this process come from the keystream provider, if the
 * libssh2 in use crypts block by block and the provider passes a check
 * against OpenSSL's AES-CTR; otherwise change nothing.  Call before the
 * first SSH session.  Returns whether the provider is in use.
 */
extern bool tunnel_keystream_install(void);

#endif							/* TUNNEL_KEYSTREAM_H */
