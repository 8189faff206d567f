/*-------------------------------------------------------------------------
 *
 * topology.h
 *	  Forwards and foreign servers of a tunnel.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_TOPOLOGY_H
#define TUNNEL_TOPOLOGY_H

/*
 * Within SPI: refuse to drop a tunnel that foreign servers made by
 * tunnel_server_create() still use, or with cascade drop them.
 */
extern void tunnel_drop_servers(const char *tunnel, bool cascade);

#endif							/* TUNNEL_TOPOLOGY_H */
