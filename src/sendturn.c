/*-------------------------------------------------------------------------
 *
 * sendturn.c
 *	  Whose turn it is to send on one libssh2 session (see sendturn.h).
 *
 * Two rules, both from libssh2 1.10 and 1.11:
 *
 * - A stalled send belongs to the call that started it.  Some of those
 *   packets live on that call's stack (channel EOF), so the call is made
 *   again, by the same party, before anyone else sends.  The party asks
 *   tunnel_turn_owned_op which call that is and makes no other first: a
 *   different call would finish the packet as its own and book it wrongly.
 *
 * - One channel open at a time: libssh2 tracks one open in flight per
 *   session.  The open slot is held from the first attempt until the
 *   bastion answers, which can take as long as the bastion's own connect to
 *   the target; lanes.c gives waiting clients other sessions meanwhile.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "sendturn.h"

void
tunnel_turn_init(TunnelSendTurn *t)
{
	t->owner = NULL;
	t->op = TURN_OP_NONE;
	t->opener = NULL;
}

bool
tunnel_turn_may_send(const TunnelSendTurn *t, const void *who)
{
	return t->owner == NULL || t->owner == who;
}

TurnOp
tunnel_turn_owned_op(const TunnelSendTurn *t, const void *who)
{
	return t->owner == who ? t->op : TURN_OP_NONE;
}

bool
tunnel_turn_sent(TunnelSendTurn *t, const void *who, TurnOp op,
				 bool stalled)
{
	if (stalled)
	{
		if (t->owner == NULL)
		{
			t->owner = who;
			t->op = op;
		}
		return false;
	}
	if (t->owner != who || t->op != op)
		return false;
	t->owner = NULL;
	t->op = TURN_OP_NONE;
	return true;
}

bool
tunnel_turn_claim_open(TunnelSendTurn *t, const void *who)
{
	if (t->opener == NULL)
		t->opener = who;
	return t->opener == who;
}

bool
tunnel_turn_release_open(TunnelSendTurn *t, const void *who)
{
	if (t->opener != who)
		return false;
	t->opener = NULL;
	return true;
}

void
tunnel_turn_forget(TunnelSendTurn *t, const void *who)
{
	if (t->owner == who)
	{
		t->owner = NULL;
		t->op = TURN_OP_NONE;
	}
	if (t->opener == who)
		t->opener = NULL;
}
