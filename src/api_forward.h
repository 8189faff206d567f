/*-------------------------------------------------------------------------
 *
 * api_forward.h
 *	  Forwards and foreign servers of a tunnel.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_API_FORWARD_H
#define TUNNEL_API_FORWARD_H

/*
 * Within SPI: refuse to drop a tunnel that foreign servers made by
 * tunnel_server_create() still use, or with cascade drop them.
 */
extern void tunnel_drop_servers(const char *tunnel, bool cascade);

#endif							/* TUNNEL_API_FORWARD_H */
