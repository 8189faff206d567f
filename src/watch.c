/*-------------------------------------------------------------------------
 *
 * watch.c
 *	  The worker's WaitEventSet: registration, lazy reconciliation, dispatch.
 *
 * Sockets come and go with every client connection, and back-pressure
 * makes a socket want nothing, thousands of times a second during a COPY.
 * Neither rebuilds the set (a new epoll descriptor and one epoll_ctl per
 * socket):
 *
 * - A socket that leaves is closed right after, which takes it out of epoll;
 *   its slot stays in the set, marked dead, until the set is full of them
 *   and is rebuilt, once per that many closed sockets.
 * - A socket that wants nothing stays registered for hang-up only
 *   (WL_SOCKET_CLOSED), which a healthy connection never reports.  Only if
 *   it does is the set rebuilt without it, so that it cannot make the wait
 *   spin.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/memutils.h"

#include "watch.h"

#define WATCH_MAX_EVENTS 64

static dlist_head watches = DLIST_STATIC_INIT(watches);
static int	nwatches = 0;
static WaitEventSet *set = NULL;
static int	set_capacity = 0;
static int	set_used = 0;
static bool set_stale = true;	/* must be rebuilt before the next wait */
static MemoryContext set_context = NULL;
static Watch **slot_owner = NULL;	/* by position; NULL: a dead slot */

void
watch_add(Watch *w, pgsocket fd, uint32 wanted, WatchCallback callback,
		  void *arg)
{
	w->fd = fd;
	w->wanted = wanted;
	w->registered = 0;
	w->pos = -1;
	w->hung_up = false;
	w->callback = callback;
	w->arg = arg;
	dlist_push_tail(&watches, &w->node);
	nwatches++;
}

void
watch_set_events(Watch *w, uint32 wanted)
{
	w->wanted = wanted;
}

void
watch_remove(Watch *w)
{
	/* Closing the socket takes it out of epoll; its slot just dies. */
	if (w->pos >= 0 && !set_stale)
		slot_owner[w->pos] = NULL;
	dlist_delete(&w->node);
	nwatches--;
	w->pos = -1;
}

static void
rebuild(void)
{
	dlist_iter	iter;

	if (set_context == NULL)
		set_context = AllocSetContextCreate(TopMemoryContext,
											"tunnel_ssh wait set",
											ALLOCSET_SMALL_SIZES);
	if (set != NULL)
		FreeWaitEventSet(set);
	MemoryContextReset(set_context);

	/* Room to grow, so that new clients rarely force a rebuild. */
	set_capacity = 2 + nwatches * 2 + 16;
#if PG_VERSION_NUM >= 170000
	/* The set lives as long as the worker: no resource owner. */
	{
		MemoryContext old = MemoryContextSwitchTo(set_context);

		set = CreateWaitEventSet(NULL, set_capacity);
		MemoryContextSwitchTo(old);
	}
#else
	set = CreateWaitEventSet(set_context, set_capacity);
#endif
	slot_owner = MemoryContextAllocZero(set_context,
										set_capacity * sizeof(Watch *));
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	set_used = 2;

	dlist_foreach(iter, &watches)
	{
		Watch	   *w = dlist_container(Watch, node, iter.cur);

		w->registered = w->wanted;
		w->pos = -1;
		w->hung_up = false;
		if (w->wanted != 0)
		{
			w->pos = AddWaitEventToSet(set, w->wanted, w->fd, NULL, w);
			slot_owner[w->pos] = w;
			set_used++;
		}
	}
	set_stale = false;
}

/*
 * Bring the set in line with what every watch wants; returns false if only
 * a rebuild can do that.
 */
static bool
reconcile(void)
{
	dlist_iter	iter;

	dlist_foreach(iter, &watches)
	{
		Watch	   *w = dlist_container(Watch, node, iter.cur);

		if (w->wanted == w->registered)
		{
			if (w->wanted == 0 && w->hung_up && w->pos >= 0)
				return false;	/* must leave the set */
			continue;
		}
		if (w->wanted == 0 && w->pos >= 0)
		{
#ifdef WL_SOCKET_CLOSED
			/* Parked: registered for hang-up only. */
			ModifyWaitEvent(set, w->pos, WL_SOCKET_CLOSED, NULL);
#else
			return false;
#endif
		}
		else if (w->pos >= 0)
			ModifyWaitEvent(set, w->pos, w->wanted, NULL);
		else if (w->wanted != 0)
		{
			if (set_used >= set_capacity)
				return false;
			w->pos = AddWaitEventToSet(set, w->wanted, w->fd, NULL, w);
			slot_owner[w->pos] = w;
			set_used++;
		}
		w->registered = w->wanted;
	}
	return true;
}

void
watch_wait(long timeout_ms, uint32 wait_event_info)
{
	WaitEvent	events[WATCH_MAX_EVENTS];
	int			n;

	if (set_stale || !reconcile())
		rebuild();

	n = WaitEventSetWait(set, timeout_ms, events, WATCH_MAX_EVENTS,
						 wait_event_info);
	for (int i = 0; i < n; i++)
	{
		/*
		 * A callback may have removed (and freed) a watch that appears later
		 * in this batch: its slot is dead by then.
		 */
		Watch	   *w = events[i].pos >= 2 ? slot_owner[events[i].pos] : NULL;

		if (w == NULL)
			continue;
		if (w->registered == 0)
		{
			w->hung_up = true;	/* a parked socket: rebuild without it */
			continue;
		}
		w->callback(w->arg, events[i].events);
	}
}
