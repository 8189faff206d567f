/*-------------------------------------------------------------------------
 *
 * watch.h
 *	  The worker's WaitEventSet: sockets to watch, with callbacks.
 *
 * PostgreSQL's WaitEventSet can change what a socket waits for, but it can
 * neither remove a socket nor watch one for nothing.  Modules therefore only
 * state what each socket wants (watch_set_events); watch.c reconciles that
 * with the kernel right before waiting, with ModifyWaitEvent where it can;
 * the set is rebuilt only when it is full of the slots of closed sockets,
 * or a socket that wants nothing has hung up.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_WATCH_H
#define TUNNEL_WATCH_H

#include "lib/ilist.h"
#include "storage/latch.h"

typedef void (*WatchCallback) (void *arg, uint32 occurred);

typedef struct Watch
{
	dlist_node	node;			/* in the list of live watches */
	pgsocket	fd;
	uint32		wanted;			/* WL_SOCKET_READABLE/WRITEABLE, or 0 */
	uint32		registered;		/* what the current set waits for */
	int			pos;			/* position in the current set, or -1 */
	bool		hung_up;		/* reported an event while it wanted none */
	WatchCallback callback;
	void	   *arg;
} Watch;

/* Start watching fd; wanted may be 0. */
extern void watch_add(Watch *w, pgsocket fd, uint32 wanted,
					  WatchCallback callback, void *arg);
/* Change what fd waits for (cheap; applied before the next wait). */
extern void watch_set_events(Watch *w, uint32 wanted);
/* Stop watching; the caller closes the socket right after. */
extern void watch_remove(Watch *w);

/*
 * Wait for the latch, postmaster death or any watched socket, at most
 * timeout_ms (-1: no limit), and run the callbacks of sockets that became
 * ready.  The caller checks its latch-driven flags itself.
 */
extern void watch_wait(long timeout_ms, uint32 wait_event_info);

#endif							/* TUNNEL_WATCH_H */
