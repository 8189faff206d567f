/*-------------------------------------------------------------------------
 *
 * keepalive.c
 *	  A connection's liveness: its keepalive channel, the probes on it, and
 *	  the verdict when the bastion stays silent.
 *
 * libssh2's own keepalive replies are queued and never freed, and a channel
 * open is no keepalive (its answer may take minutes): each connection keeps
 * one "session" channel, and an "env" request on it, answered at once by
 * sshd, is the probe (see conn.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "channel.h"
#include "conn.h"
#include "connect.h"
#include "sendturn.h"
#include "settings.h"
#include "tunnel_limits.h"

/*
 * Pull whatever the bastion sent into libssh2's queues, through the keepalive
 * channel or any channel that can still receive; with none, opening the
 * keepalive channel does the reading (when the bastion sent something:
 * open_keepalive).
 */
void
tunnel_keepalive_drain(TunnelConn *s, bool open_keepalive)
{
	dlist_iter	iter;
	int			rc;

	if (s->keepalive_phase == KEEPALIVE_IDLE || s->keepalive_phase == KEEPALIVE_ASKING)
	{
		rc = libssh2_channel_wait_eof(s->keepalive);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;
		if (rc != 0)
		{
			tunnel_conn_fail(s, tunnel_ssh_error_text(s->ssh));
			return;
		}
		/* The bastion closed it: free it, open another when due. */
		s->keepalive_phase = KEEPALIVE_CLOSING;
	}
	dlist_foreach(iter, &s->channels)
	{
		LIBSSH2_CHANNEL *ch = channel_ssh_channel(channel_from_node(iter.cur));

		if (ch == NULL)
			continue;
		rc = libssh2_channel_wait_eof(ch);
		if (rc == 0)
			continue;			/* that one just reached EOF; try another */
		if (rc != LIBSSH2_ERROR_EAGAIN)
			tunnel_conn_fail(s, tunnel_ssh_error_text(s->ssh));
		return;
	}
	if (open_keepalive && s->keepalive_phase == KEEPALIVE_NONE &&
		tunnel_turn_opener(&s->turn) == NULL)
		s->keepalive_phase = KEEPALIVE_OPENING;
}

/* The keepalive's calls report to the session's turn, as channels' do. */
static void
keepalive_sent(TunnelConn *s, TurnOp op, int rc)
{
	/* Channels that held back for it get their turn. */
	if (tunnel_turn_sent(&s->turn, s, op, tunnel_ssh_send_stalled(s->ssh, rc)))
		tunnel_conn_mark_dirty(s);
}

/*
 * The keepalive: open its channel (once per session, or again after sshd
 * refused or closed it), ask on it when the bastion has been silent, free
 * it when the bastion closed it.
 */
void
tunnel_keepalive_step(TunnelConn *s)
{
	int			rc;

	if (s->keepalive_phase == KEEPALIVE_OPENING)
	{
		if (!tunnel_turn_claim_open(&s->turn, s) ||
			!tunnel_turn_may_send(&s->turn, s))
			return;
		s->keepalive = libssh2_channel_open_ex(s->ssh, "session", 7, 1024, 1024,
										   NULL, 0);
		rc = s->keepalive ? 0 : libssh2_session_last_errno(s->ssh);
		keepalive_sent(s, TURN_OP_OPEN, rc);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;
		if (tunnel_turn_release_open(&s->turn, s))
			s->ops->open_released(s->owner, s);
		/* A refusal is an answer too: the bastion is alive. */
		if (rc != 0 && rc != LIBSSH2_ERROR_CHANNEL_FAILURE)
		{
			tunnel_conn_fail(s, tunnel_ssh_error_text(s->ssh));
			return;
		}
		s->keepalive_phase = s->keepalive ? KEEPALIVE_IDLE : KEEPALIVE_NONE;
	}
	if (s->keepalive_phase == KEEPALIVE_ASKING)
	{
		if (!tunnel_turn_may_send(&s->turn, s))
			return;
		rc = libssh2_channel_setenv(s->keepalive, "TUNNEL_SSH_KEEPALIVE", "1");
		keepalive_sent(s, TURN_OP_REQUEST, rc);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;

		/*
		 * sshd refuses a variable AcceptEnv does not list: that answer is as
		 * good as any.  libssh2's own timeout (60 s) only ends this request.
		 */
		if (rc != 0 && rc != LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED &&
			rc != LIBSSH2_ERROR_TIMEOUT)
		{
			tunnel_conn_fail(s, tunnel_ssh_error_text(s->ssh));
			return;
		}
		s->keepalive_phase = KEEPALIVE_IDLE;
	}
	if (s->keepalive_phase == KEEPALIVE_CLOSING)
	{
		if (!tunnel_turn_may_send(&s->turn, s))
			return;
		rc = libssh2_channel_free(s->keepalive);
		keepalive_sent(s, TURN_OP_CLOSE, rc);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return;
		s->keepalive = NULL;
		s->keepalive_phase = KEEPALIVE_NONE;
	}
}

/*
 * Liveness of a ready connection.  A bastion silent for keepalive_interval is
 * probed, and probed again every interval while it stays silent; it is dead
 * once the first of those probes and the ones after it went unanswered for
 * interval x (count - 1), at least one interval (as OpenSSH's
 * ServerAliveCountMax counts unanswered probes).  With steady settings that
 * is interval x count of silence, as before; but what decides is the
 * probes, not the silence: a session idle under a long interval is not
 * dropped when a reload shortens it, it is probed first (and a longer
 * interval does not put off the end of one already probed in vain).
 */
long
tunnel_keepalive_tick(TunnelConn *s, TimestampTz now, char *dead, size_t size)
{
	long		interval_ms = tunnel_keepalive_interval * 1000L;
	long		patience_ms = interval_ms * Max(tunnel_keepalive_count - 1, 1);
	long		silent_ms = (long) ((now - s->last_recv) / 1000);
	long		probing_ms;

	dead[0] = '\0';

	/* Any byte since the first probe answers it. */
	if (s->probe_since != 0 && s->last_recv > s->probe_since)
	{
		s->probe_since = 0;
		s->probes = 0;
	}
	if (silent_ms < interval_ms)
		return interval_ms - silent_ms;

	if (s->probe_since != 0 &&
		now - s->probe_since >= (TimestampTz) patience_ms * 1000)
	{
		snprintf(dead, size,
				 "connection to bastion lost: no answer for %ld s, %d keepalive probe%s unanswered",
				 silent_ms / 1000, s->probes, s->probes == 1 ? "" : "s");
		return 0;
	}
	if (now - s->keepalive_started >= (TimestampTz) interval_ms * 1000)
	{
		/*
		 * A request still in flight (or a keepalive channel still opening or
		 * closing) is a probe too: the countdown starts all the same.
		 */
		if (s->probe_since == 0)
			s->probe_since = now;
		if (s->keepalive_phase == KEEPALIVE_IDLE ||
			s->keepalive_phase == KEEPALIVE_NONE)
		{
			s->keepalive_started = now;
			s->probes++;
			s->keepalive_phase = s->keepalive_phase == KEEPALIVE_IDLE ?
				KEEPALIVE_ASKING : KEEPALIVE_OPENING;
			tunnel_conn_mark_dirty(s);
		}
		else if (s->probes == 0)
			s->probes = 1;
	}
	/* Next: the probe that falls due, or the end of our patience. */
	probing_ms = s->probe_since ? (long) ((now - s->probe_since) / 1000) : 0;
	return Max(1, Min(1000, patience_ms - probing_ms));
}


bool
tunnel_keepalive_busy(TunnelConn *s)
{
	return s->keepalive_phase != KEEPALIVE_NONE &&
		s->keepalive_phase != KEEPALIVE_IDLE;
}
