/*-------------------------------------------------------------------------
 *
 * api_test.c
 *	  tunnel_test(name): walk the path of a tunnel step by step from the
 *	  calling backend and say, at the first step that fails, what to fix.
 *
 * It runs apart from the worker so that it answers even when the worker is
 * stuck or the tunnel is disabled, but it reaches the bastion with the
 * worker's own connect machine (connect.h): the same preferences, the same
 * host key decision, the same keys in the same order, and the same words
 * for a failure, to which it adds only its advice.  Every wait has a limit
 * (tunnel_ssh.connect_timeout per step) and ends in CHECK_FOR_INTERRUPTS, so
 * statement_timeout and a cancel stop it at any step; the sockets and the
 * libssh2 sessions (one per hop with via) are released on every way out.
 * Key material is only handed to libssh2 and wiped afterwards.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <libssh2.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "connect.h"
#include "hostkeys.h"
#include "keys.h"
#include "methods.h"
#include "api.h"
#include "tunnel_ssh.h"
#include "validate.h"

#define PROBE_TIMED_OUT		(-1000)		/* not a libssh2 error code */
#define DETAIL_MAXLEN		1024

typedef struct ProbeTarget
{
	char	   *host;
	int			port;
} ProbeTarget;

/*
 * A jump: the session of a tunnel with via runs over one end of a
 * socketpair, and the probe moves bytes between the other end and a
 * direct-tcpip channel of the jump tunnel's session, as the worker does.
 */
typedef struct HopPump
{
	LIBSSH2_CHANNEL *channel;	/* on the jump tunnel's session */
	pgsocket	sock;			/* our end of the socketpair */
	char		up[16384];		/* from this session to the channel */
	size_t		up_len;
	size_t		up_off;
	char		down[16384];	/* from the channel to this session */
	size_t		down_len;
	size_t		down_off;
	bool		broken;
} HopPump;

/* Longer chains are refused; a loop could only be written by hand. */
#define MAX_HOPS			8

typedef struct Probe Probe;

struct Probe
{
	/* the definition, read in the caller's snapshot */
	char	   *name;
	char	   *ssh_host;
	int			ssh_port;
	char	   *ssh_user;
	char	   *key_type;
	char	   *public_key;
	char	   *key_fingerprint;
	char	   *private_key;	/* secret */
	char	   *next_public_key;
	char	   *next_key_fingerprint;
	char	   *next_private_key;	/* secret */
	char	   *host_key;		/* recorded or pinned, or NULL */
	char	   *host_key_algorithms;	/* to prefer (version 1.2), or NULL */
	char	   *via;
	char	   *certificate;	/* of the key (1.4), or NULL */
	char	   *next_certificate;	/* of the pending key (1.4), or NULL */
	char	   *proxy;			/* secret: the first hop's proxy URL, or NULL */
	List	   *targets;		/* of ProbeTarget */

	/* ssh_host as a list: the bastions, and what each must present */
	int			nbastions;
	ValidatedBastion bastions[VALIDATE_MAX_BASTIONS];
	bool		host_key_pinned;
	char	   *bastion_keys[VALIDATE_MAX_BASTIONS];	/* recorded, but the first's */
	char	   *bastion_algorithms[VALIDATE_MAX_BASTIONS];

	TunnelConnect connect;		/* holds the socket and libssh2's session */
	LIBSSH2_CHANNEL *channel;

	Probe	   *outer;			/* the jump tunnel's probe, with via */
	HopPump    *pump;			/* with via */
	int			hops;			/* jump tunnels behind this one */
	const char *step_prefix;	/* "jump b1: " on a jump tunnel's steps */

	ReturnSetInfo *rsinfo;
	TimestampTz step_start;
	TimestampTz deadline;
	char		detail[DETAIL_MAXLEN];
};

/* ---------- results ---------- */

static void
begin_step(Probe *p)
{
	p->step_start = GetCurrentTimestamp();
	p->deadline = TimestampTzPlusMilliseconds(p->step_start,
											  tunnel_connect_timeout * 1000L);
	p->detail[0] = '\0';
}

/* Emit the step's row; returns ok so callers can stop at a failure. */
static bool
end_step(Probe *p, const char *step, bool ok)
{
	Datum		values[4];
	bool		nulls[4] = {0};
	long		secs;
	int			usecs;

	TimestampDifference(p->step_start, GetCurrentTimestamp(), &secs, &usecs);
	values[0] = CStringGetTextDatum(p->step_prefix ?
									psprintf("%s%s", p->step_prefix, step) :
									step);
	values[1] = BoolGetDatum(ok);
	values[2] = CStringGetTextDatum(p->detail);
	values[3] = Float8GetDatum(secs * 1000.0 + usecs / 1000.0);
	tuplestore_putvalues(p->rsinfo->setResult, p->rsinfo->setDesc, values, nulls);
	return ok;
}

/* ---------- waiting with a limit ---------- */

/*
 * Sleep until the socket is ready for `events`, the latch is set or a short
 * while passes; false once the step's deadline is reached.  A cancel or
 * statement_timeout raises its error here.
 */
static bool chain_wait(Probe *p, int events, long ms);

static bool
probe_wait(Probe *p, int events)
{
	long		ms = (long) ((p->deadline - GetCurrentTimestamp()) / 1000);
	pgsocket	sock = p->connect.sock;

	if (ms <= 0)
		return false;
	if (p->outer && sock != PGINVALID_SOCKET)
		return chain_wait(p, events, ms);
	if (sock == PGINVALID_SOCKET)
		events = 0;
	/* Without a descriptor (a name being looked up), look again soon. */
	(void) WaitLatchOrSocket(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH |
							 events, sock, Min(ms, events ? 1000 : 10),
							 PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return true;
}

static bool
probe_wait_ssh(Probe *p)
{
	int			dirs = libssh2_session_block_directions(p->connect.ssh);
	int			events = 0;

	if (dirs & LIBSSH2_SESSION_BLOCK_INBOUND)
		events |= WL_SOCKET_READABLE;
	if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		events |= WL_SOCKET_WRITEABLE;
	return probe_wait(p, events ? events : WL_SOCKET_READABLE);
}

/* ---------- jumps ---------- */

/*
 * Move what is ready between this session's socketpair and its channel on
 * the jump tunnel's session, jump tunnels first.  No read on the channel
 * while a write to it is unfinished: libssh2 lets only the call that began
 * a packet finish it.
 */
static void
pump(Probe *p)
{
	HopPump    *h = p->pump;

	if (p->outer->outer)
		pump(p->outer);
	for (int round = 0; round < 16 && !h->broken; round++)
	{
		bool		moved = false;
		ssize_t		n;

		if (h->up_off == h->up_len)
		{
			n = read(h->sock, h->up, sizeof(h->up));
			if (n > 0)
			{
				h->up_len = n;
				h->up_off = 0;
			}
			else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
				h->broken = true;
		}
		if (h->up_off < h->up_len)
		{
			n = libssh2_channel_write(h->channel, h->up + h->up_off,
									  h->up_len - h->up_off);
			if (n > 0)
			{
				h->up_off += n;
				moved = true;
			}
			else if (n != LIBSSH2_ERROR_EAGAIN)
				h->broken = true;
		}
		if (h->down_off == h->down_len && h->up_off == h->up_len)
		{
			n = libssh2_channel_read(h->channel, h->down, sizeof(h->down));
			if (n > 0)
			{
				h->down_len = n;
				h->down_off = 0;
			}
			else if ((n == 0 && libssh2_channel_eof(h->channel)) ||
					 (n < 0 && n != LIBSSH2_ERROR_EAGAIN))
				h->broken = true;
		}
		if (h->down_off < h->down_len)
		{
			n = write(h->sock, h->down + h->down_off,
					  h->down_len - h->down_off);
			if (n > 0)
			{
				h->down_off += n;
				moved = true;
			}
			else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
				h->broken = true;
		}
		if (!moved)
			break;
	}
	/* This session then sees the end of its socket and fails at once. */
	if (h->broken)
		(void) shutdown(h->sock, SHUT_RDWR);
}

static short
ssh_poll_events(LIBSSH2_SESSION *ssh)
{
	int			dirs = ssh ? libssh2_session_block_directions(ssh) : 0;
	short		events = POLLIN;

	if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		events |= POLLOUT;
	return events;
}

/*
 * probe_wait for a tunnel with via: pump, then sleep on every socket of the
 * chain.  poll() rather than the latch because there are several sockets;
 * the signals behind a cancel or statement_timeout interrupt it, and the
 * sleeps are short.
 */
static bool
chain_wait(Probe *p, int events, long ms)
{
	struct pollfd fds[2 * MAX_HOPS + 2];
	int			n = 0;

	pump(p);
	fds[n].fd = p->connect.sock;
	fds[n++].events = ((events & WL_SOCKET_READABLE) ? POLLIN : 0) |
		((events & WL_SOCKET_WRITEABLE) ? POLLOUT : 0);
	for (Probe *q = p; q->outer; q = q->outer)
	{
		HopPump    *h = q->pump;

		if (!h->broken)
		{
			fds[n].fd = h->sock;
			fds[n++].events = (h->up_off == h->up_len ? POLLIN : 0) |
				(h->down_off < h->down_len ? POLLOUT : 0);
		}
		fds[n].fd = q->outer->connect.sock;
		fds[n++].events = ssh_poll_events(q->outer->connect.ssh);
	}
	(void) poll(fds, n, Min(ms, 100));
	CHECK_FOR_INTERRUPTS();
	if (!PostmasterIsAlive())
		proc_exit(1);
	return true;
}

/* Repeat a libssh2 call that returns an int until it stops asking to wait. */
#define SSH_CALL(p, rc, call) \
	do { \
		while (((rc) = (call)) == LIBSSH2_ERROR_EAGAIN) \
			if (!probe_wait_ssh(p)) { (rc) = PROBE_TIMED_OUT; break; } \
	} while (0)

static const char *
ssh_message(Probe *p)
{
	return tunnel_ssh_error_text(p->connect.ssh);
}

/* Why p's bastion refused a direct-tcpip channel to host:port, in p->detail. */
static void
open_error_text(Probe *p, const char *host, int port)
{
	char	   *msg = NULL;

	(void) libssh2_session_last_error(p->connect.ssh, &msg, NULL, 0);
	tunnel_open_error_text(p->detail, sizeof(p->detail), p->name, host, port,
						   msg);
}

/* ---------- reading the definition ---------- */

/* The host keys recorded for the bastions but the first (1.4).  Needs SPI. */
static void
read_bastion_keys(Probe *p)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(p->name)};

	tunnel_spi_check(SPI_execute("SELECT pg_catalog.to_regclass('tunnel_ssh.bastion_host_key') IS NOT NULL",
								 true, 1));
	if (strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") != 0)
		return;
	tunnel_spi_check(SPI_execute_with_args("SELECT host, port, host_key_fingerprint, host_key_algorithm "
										   "FROM tunnel_ssh.bastion_host_key WHERE tunnel = $1",
										   1, argtypes, values, NULL, true, 0));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *host = SPI_getvalue(tuple, desc, 1);
		int			port = atoi(SPI_getvalue(tuple, desc, 2));

		for (int i = 1; i < p->nbastions; i++)
			if (p->bastions[i].port == port && strcmp(p->bastions[i].host, host) == 0)
			{
				p->bastion_keys[i] = tunnel_spi_value(tuple, desc, 3, false);
				p->bastion_algorithms[i] = tunnel_spi_value(tuple, desc, 4, false);
			}
	}
}

/* False if there is no such tunnel and missing_ok. */
static bool
read_definition(Probe *p, bool missing_ok)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(p->name)};
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;

	SPI_connect();
	tunnel_spi_check(SPI_execute_with_args("SELECT t.ssh_host, t.ssh_port, t.ssh_user, t.public_key, "
						  "       t.key_fingerprint, s.private_key, t.next_public_key, "
						  "       t.next_key_fingerprint, s.next_private_key, "
						  "       t.host_key_fingerprint, t.via, "
						  "       " TUNNEL_HOST_KEY_ALGORITHMS_SQL ", t.key_type, "
						  "       " TUNNEL_V14_COLUMN_SQL("certificate") ", "
						  "       " TUNNEL_V14_COLUMN_SQL("next_certificate") ", "
						  "       t.host_key_pinned "
						  "FROM tunnel_ssh.tunnel t "
						  "     LEFT JOIN tunnel_ssh.secret s ON s.tunnel = t.name "
						  "WHERE t.name = $1",
						  1, argtypes, values, NULL, true, 1));
	if (SPI_processed == 0 && missing_ok)
	{
		SPI_finish();
		return false;
	}
	if (SPI_processed == 0)
		tunnel_not_found(p->name);
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	p->ssh_host = tunnel_spi_value(tuple, desc, 1, false);
	p->ssh_port = DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull));
	p->ssh_user = tunnel_spi_value(tuple, desc, 3, false);
	p->public_key = tunnel_spi_value(tuple, desc, 4, false);
	p->key_fingerprint = tunnel_spi_value(tuple, desc, 5, false);
	p->private_key = tunnel_spi_value(tuple, desc, 6, true);
	p->next_public_key = tunnel_spi_value(tuple, desc, 7, false);
	p->next_key_fingerprint = tunnel_spi_value(tuple, desc, 8, false);
	p->next_private_key = tunnel_spi_value(tuple, desc, 9, true);
	p->host_key = tunnel_spi_value(tuple, desc, 10, false);
	p->via = tunnel_spi_value(tuple, desc, 11, false);
	p->host_key_algorithms = tunnel_spi_value(tuple, desc, 12, false);
	p->key_type = tunnel_spi_value(tuple, desc, 13, false);
	p->certificate = tunnel_spi_value(tuple, desc, 14, false);
	p->next_certificate = tunnel_spi_value(tuple, desc, 15, false);
	p->host_key_pinned = DatumGetBool(SPI_getbinval(tuple, desc, 16, &isnull));
	/* Several bastions (1.4): each is walked, the first stands for the rest. */
	{
		const char *reason;

		if (validate_bastions(p->ssh_host, p->ssh_port, p->bastions,
							  &p->nbastions, &reason))
		{
			p->ssh_host = p->bastions[0].host;
			p->ssh_port = p->bastions[0].port;
		}
		else
			p->nbastions = 0;
	}
	if (p->nbastions > 1)
		read_bastion_keys(p);
	/* The proxy came with 1.4, kept beside the private key. */
	if (catalog_has_column("proxy"))
	{
		tunnel_spi_check(SPI_execute_with_args("SELECT proxy FROM tunnel_ssh.secret WHERE tunnel = $1",
											   1, argtypes, values, NULL, true, 1));
		if (SPI_processed > 0)
			p->proxy = tunnel_spi_value(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, true);
	}
	/* What the DBA is told to paste: the lines tunnel_public_key returns. */
	p->public_key = tunnel_authorized_line(p->name, true, false);
	if (p->next_public_key)
		p->next_public_key = tunnel_authorized_line(p->name, true, true);

	/*
	 * A row edited by hand may lack what tunnel_create and tunnel_rotate_key
	 * always write together; the worker calls such a tunnel invalid.
	 */
	if (p->private_key == NULL || p->public_key == NULL ||
		p->key_fingerprint == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("tunnel \"%s\" has no usable key pair in the catalog",
						p->name),
				 errhint("Recreate the tunnel, or start a new key with tunnel_rotate_key().")));
	if (p->next_private_key != NULL &&
		(p->next_public_key == NULL || p->next_key_fingerprint == NULL))
	{
		ereport(NOTICE,
				(errmsg("the pending key rotation of tunnel \"%s\" is incomplete and is not tried",
						p->name),
				 errhint("Cancel it with tunnel_rotate_cancel(), or start another with tunnel_rotate_key().")));
		keys_wipe(p->next_private_key);
		p->next_private_key = NULL;
	}

	tunnel_spi_check(SPI_execute_with_args("SELECT remote_host, remote_port FROM tunnel_ssh.forward "
						  "WHERE tunnel = $1 ORDER BY local_port",
						  1, argtypes, values, NULL, true, 0));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(CurTransactionContext);
		ProbeTarget *t = palloc(sizeof(ProbeTarget));

		t->host = pstrdup(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
		t->port = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
											  SPI_tuptable->tupdesc, 2, &isnull));
		p->targets = lappend(p->targets, t);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return true;
}

/* ---------- the steps ---------- */

/* What the connect machine is to reach, and with which keys, in order. */
static void
prepare_connect(Probe *p)
{
	TunnelConnect *c = &p->connect;

	c->tunnel = p->name;
	c->host = p->ssh_host;
	c->port = p->ssh_port;
	c->user = p->ssh_user;
	c->via = p->via;
	c->proxy = p->via ? NULL : p->proxy;
	c->key_type = p->key_type;
	c->host_keys = p->host_key;
	c->host_key_algorithms = p->host_key_algorithms;
	c->trust_first_use = true;
	c->nkeys = 0;
	/* As the worker: the rotation's new key first, the current one after. */
	if (p->next_private_key)
	{
		c->keys[c->nkeys].private_key = p->next_private_key;
		c->keys[c->nkeys].certificate = p->next_certificate;
		c->keys[c->nkeys++].fingerprint = p->next_key_fingerprint;
	}
	c->keys[c->nkeys].private_key = p->private_key;
	c->keys[c->nkeys].certificate = p->certificate;
	c->keys[c->nkeys++].fingerprint = p->key_fingerprint;
}

/*
 * Step the connect machine until it is past `until` or has failed; a wait
 * beyond the step's deadline fails it, naming the step.
 */
static bool
drive(Probe *p, TunnelConnectStep until)
{
	TunnelConnect *c = &p->connect;

	for (;;)
	{
		tunnel_connect_step(c);
		if (c->step == CONNECT_FAILED)
			return false;
		if (c->step > until)
			return true;
		if (!probe_wait(p, tunnel_connect_events(c)))
		{
			tunnel_connect_timed_out(c, tunnel_connect_timeout);
			return false;
		}
	}
}

/*
 * Drive the machine through step `which`: true if it got past it (a failure
 * of a later step is that step's to report).
 */
static bool
through(Probe *p, TunnelConnectStep which)
{
	TunnelConnect *c = &p->connect;

	if (c->step == CONNECT_FAILED)
		return c->failed_at > which;
	return drive(p, which) || c->failed_at > which;
}

/* The machine's words for its failure, then advice only tunnel_test gives. */
static void
failure_detail(Probe *p, const char *advice)
{
	snprintf(p->detail, sizeof(p->detail), "%s%s%s", p->connect.message,
			 advice ? "; " : "", advice ? advice : "");
}

/*
 * Keys that would all be refused (expired or not yet valid certificates) are
 * not tried: the authenticate row says why, and no connection is made, for
 * sshd penalises one that leaves unauthenticated as a refused login.
 */
static bool
step_keys(Probe *p)
{
	char		why[TUNNEL_ERROR_MAXLEN];

	prepare_connect(p);
	if (tunnel_connect_keys_usable(&p->connect, why, sizeof(why)))
		return true;
	begin_step(p);
	snprintf(p->detail, sizeof(p->detail),
			 "%s; not offered, and the bastion not contacted: sshd would refuse it and penalise the address",
			 why);
	return end_step(p, "authenticate", false);
}

static bool
step_resolve(Probe *p)
{
	TunnelConnect *c = &p->connect;
	StringInfoData seen;

	begin_step(p);
	prepare_connect(p);
	tunnel_connect_begin(c);
	if (!through(p, CONNECT_RESOLVE))
	{
		failure_detail(p, c->failure == CONNECT_FAILURE_TIMEOUT ?
					   "check the DNS servers of this host, or use the bastion's IP address" :
					   "check the ssh_host of the tunnel (tunnel_alter) or use the bastion's IP address");
		return end_step(p, "resolve", false);
	}

	initStringInfo(&seen);
	for (struct addrinfo *ai = c->addrs; ai; ai = ai->ai_next)
	{
		char		host[NI_MAXHOST];

		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), NULL, 0,
						NI_NUMERICHOST) == 0)
			appendStringInfo(&seen, "%s%s", seen.len ? ", " : "", host);
	}
	if (c->proxy_url == NULL)
		snprintf(p->detail, sizeof(p->detail), "%s is %s", p->ssh_host, seen.data);
	else if (strcmp(c->proxy_target, p->ssh_host) == 0)
		snprintf(p->detail, sizeof(p->detail),
				 "proxy %s is %s; the proxy resolves %s",
				 c->proxy_url->host, seen.data, p->ssh_host);
	else
		snprintf(p->detail, sizeof(p->detail), "%s is %s; proxy %s is %s",
				 p->ssh_host, c->proxy_target, c->proxy_url->host, seen.data);
	return end_step(p, "resolve", true);
}

static const char *
tcp_advice(TunnelConnect *c)
{
	if (c->failure == CONNECT_FAILURE_TIMEOUT)
		return "a firewall or security group may drop traffic from this server to the bastion";
	if (c->tcp_errno == ECONNREFUSED && c->proxy_url)
		return "nothing listens there: check that the proxy runs, and the tunnel's proxy URL (tunnel_alter)";
	if (c->tcp_errno == ECONNREFUSED)
		return "nothing listens there: check that sshd runs on the bastion and the tunnel's ssh_port";
	return NULL;
}

static bool
step_connect(Probe *p)
{
	TunnelConnect *c = &p->connect;

	begin_step(p);
	if (!through(p, CONNECT_TCP))
	{
		failure_detail(p, tcp_advice(c));
		return end_step(p, "tcp_connect", false);
	}
	if (c->proxy_url)
		snprintf(p->detail, sizeof(p->detail), "connected to proxy %s (%s)",
				 c->proxy_name, c->address);
	else
		snprintf(p->detail, sizeof(p->detail), "connected to %s port %d",
				 c->address, p->ssh_port);
	return end_step(p, "tcp_connect", true);
}

/* The proxy's handshake: a row of its own, only for a tunnel with one. */
static bool
step_proxy(Probe *p)
{
	TunnelConnect *c = &p->connect;

	if (c->proxy_url == NULL)
		return true;
	begin_step(p);
	if (!through(p, CONNECT_PROXY))
	{
		failure_detail(p, c->failure == CONNECT_FAILURE_TIMEOUT ?
					   "the proxy may not reach the bastion, or drop the traffic" : NULL);
		return end_step(p, "proxy", false);
	}
	snprintf(p->detail, sizeof(p->detail), "proxy %s connected to %s port %d",
			 c->proxy_name, c->proxy_target, p->ssh_port);
	return end_step(p, "proxy", true);
}

/*
 * With via, the jump tunnel's session connects to this bastion (it resolves
 * the name, as ssh -J does), and this session runs over a socketpair handed
 * to the connect machine.  False, with p->detail, if the jump host could not.
 */
static bool
open_jump(Probe *p)
{
	Probe	   *o = p->outer;
	LIBSSH2_CHANNEL *channel;
	int			rc;
	int			sv[2];

	/* The waits below are the jump session's: give them this deadline. */
	o->deadline = p->deadline;
	for (;;)
	{
		channel = libssh2_channel_direct_tcpip_ex(o->connect.ssh, p->ssh_host,
												  p->ssh_port, "127.0.0.1", 0);
		rc = channel ? 0 : libssh2_session_last_errno(o->connect.ssh);
		if (rc != LIBSSH2_ERROR_EAGAIN)
			break;
		if (!probe_wait_ssh(o))
		{
			rc = PROBE_TIMED_OUT;
			break;
		}
	}
	if (rc == PROBE_TIMED_OUT)
	{
		snprintf(p->detail, sizeof(p->detail),
				 "jump host \"%s\" did not connect to %s port %d within %d s: a firewall between the two bastions may drop the traffic",
				 o->name, p->ssh_host, p->ssh_port, tunnel_connect_timeout);
		return false;
	}
	if (rc != 0)
	{
		open_error_text(o, p->ssh_host, p->ssh_port);
		strlcpy(p->detail, o->detail, sizeof(p->detail));
		return false;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create a socket pair: %m")));
	/* An earlier connection's channel is left to the jump session's end. */
	if (p->pump)
	{
		(void) shutdown(p->pump->sock, SHUT_RDWR);
		close(p->pump->sock);
	}
	else
		p->pump = palloc0(sizeof(HopPump));
	memset(p->pump, 0, sizeof(HopPump));
	p->pump->channel = channel;
	p->pump->sock = sv[1];
	tunnel_connect_begin_on(&p->connect, sv[0]);
	return true;
}

static bool
step_jump_connect(Probe *p)
{
	begin_step(p);
	prepare_connect(p);
	if (!open_jump(p))
		return end_step(p, "tcp_connect", false);
	snprintf(p->detail, sizeof(p->detail),
			 "jump host \"%s\" (%s) connected to %s port %d",
			 p->outer->name, p->outer->ssh_host, p->ssh_host, p->ssh_port);
	return end_step(p, "tcp_connect", true);
}

/* A new connection for the next host key family: TCP or jump, no row. */
static bool
reconnect(Probe *p)
{
	TunnelConnect *c = &p->connect;

	tunnel_connect_close(c);
	prepare_connect(p);
	if (p->outer)
		return open_jump(p);
	tunnel_connect_begin(c);
	if (through(p, c->proxy_url ? CONNECT_PROXY : CONNECT_TCP))
		return true;
	failure_detail(p, tcp_advice(c));
	return false;
}

static const char *
handshake_advice(TunnelConnect *c)
{
	switch (c->failure)
	{
		case CONNECT_FAILURE_TIMEOUT:
			return "something listens there but does not speak SSH";
		case CONNECT_FAILURE_HANDSHAKE:
			return "is it an SSH server?";
		case CONNECT_FAILURE_HOST_KEY:
			return "compare them with ssh-keygen -l of the bastion's host keys before changing host_key_fingerprint";
		default:
			return NULL;
	}
}

/*
 * The handshake and the host key.  A pin without algorithm may be any of
 * the bastion's keys: the worker asks for the next family after a mismatch,
 * so this asks for each in turn too, on a new connection each (sshd counts
 * a connection that ends before authentication no more than a human's).
 */
static bool
step_handshake(Probe *p)
{
	TunnelConnect *c = &p->connect;
	StringInfoData others;

	begin_step(p);
	initStringInfo(&others);
	for (int try = 0;; try++)
	{
		if (through(p, CONNECT_HANDSHAKE))
			break;
		/* A key presented again: the bastion has none of the family asked. */
		if (c->failure != CONNECT_FAILURE_HOST_KEY || !c->next_family ||
			try + 1 >= HOSTKEYS_FAMILIES ||
			strstr(others.data, c->host_key_shown) != NULL)
		{
			failure_detail(p, handshake_advice(c));
			if (others.len > 0)
			{
				strlcat(p->detail, "; its other host keys do not match either: ",
						sizeof(p->detail));
				strlcat(p->detail, others.data, sizeof(p->detail));
			}
			return end_step(p, "ssh_handshake", false);
		}
		appendStringInfo(&others, "%s%s", others.len ? ", " : "",
						 c->host_key_shown);
		c->host_key_try = try + 1;
		if (!reconnect(p))
			return end_step(p, "ssh_handshake", false);
	}
	if (c->host_key_trusted)
		snprintf(p->detail, sizeof(p->detail),
				 "host key %s; none recorded yet: the worker will trust it on first use",
				 c->host_key_shown);
	else if (others.len > 0)
		snprintf(p->detail, sizeof(p->detail),
				 "host key %s matches; the pin names no algorithm and the bastion presents %s first: the worker asks for the next family after that mismatch, then remembers this key's algorithm",
				 c->host_key_shown, others.data);
	else
		snprintf(p->detail, sizeof(p->detail), "host key %s matches",
				 c->host_key_shown);
	return end_step(p, "ssh_handshake", true);
}

/* Logged in with a certificate: say which, and until when. */
static void
note_certificate(Probe *p)
{
	TunnelConnect *c = &p->connect;
	char		until[64];
	char		note[256];

	if (!c->cert_used)
		return;
	cert_format_time(c->cert_valid_before, until, sizeof(until));
	snprintf(note, sizeof(note), "; with certificate \"%s\" valid until %s",
			 c->cert_key_id, until);
	strlcat(p->detail, note, sizeof(p->detail));
}

static bool
step_auth(Probe *p)
{
	TunnelConnect *c = &p->connect;
	bool		with_next = p->next_private_key != NULL;

	begin_step(p);
	if (!through(p, CONNECT_AUTH))
	{
		failure_detail(p, NULL);
		/* A certificate's remedy is the CA's, not an authorized_keys line. */
		if (c->failure == CONNECT_FAILURE_KEY_REFUSED &&
			c->keys[c->key].certificate == NULL)
		{
			strlcat(p->detail, "; the line: ", sizeof(p->detail));
			strlcat(p->detail, p->public_key, sizeof(p->detail));
		}
		return end_step(p, "authenticate", false);
	}
	if (with_next && c->accepted == 0)
	{
		snprintf(p->detail, sizeof(p->detail),
				 "user \"%s\" authenticated with the new key %s of the pending rotation",
				 p->ssh_user, p->next_key_fingerprint);
		note_certificate(p);
		return end_step(p, "authenticate", true);
	}
	snprintf(p->detail, sizeof(p->detail),
			 "user \"%s\" authenticated with key %s%s%s%s",
			 p->ssh_user, p->key_fingerprint,
			 with_next ? "; the new key of the pending rotation is not authorized yet: add this line to ~" : "",
			 with_next ? p->ssh_user : "",
			 with_next ? "/.ssh/authorized_keys: " : "");
	if (with_next)
		strlcat(p->detail, p->next_public_key, sizeof(p->detail));
	note_certificate(p);
	return end_step(p, "authenticate", true);
}

static void
close_channel(Probe *p)
{
	int			rc;

	if (p->channel == NULL)
		return;
	SSH_CALL(p, rc, libssh2_channel_free(p->channel));
	p->channel = NULL;
}

static bool
step_channel(Probe *p, ProbeTarget *t)
{
	int			rc;

	begin_step(p);
	for (;;)
	{
		p->channel = libssh2_channel_direct_tcpip_ex(p->connect.ssh, t->host,
													 t->port, "127.0.0.1", 0);
		rc = p->channel ? 0 : libssh2_session_last_errno(p->connect.ssh);
		if (rc != LIBSSH2_ERROR_EAGAIN)
			break;
		if (!probe_wait_ssh(p))
		{
			rc = PROBE_TIMED_OUT;
			break;
		}
	}
	if (rc == 0)
	{
		snprintf(p->detail, sizeof(p->detail),
				 "the bastion connected to %s:%d", t->host, t->port);
		return end_step(p, "open_channel", true);
	}
	if (rc == PROBE_TIMED_OUT)
		snprintf(p->detail, sizeof(p->detail),
				 "the bastion did not connect to %s:%d within %d s: a firewall between the bastion and the database may drop the traffic",
				 t->host, t->port, tunnel_connect_timeout);
	else
		open_error_text(p, t->host, t->port);
	return end_step(p, "open_channel", false);
}

/*
 * An SSLRequest is the one message every PostgreSQL server answers with a
 * single byte, S or N, without a password: proof of who is on the other end.
 */
static bool
step_postgres(Probe *p, ProbeTarget *t)
{
	static const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
	char		answer = 0;
	ssize_t		n;
	size_t		sent = 0;

	begin_step(p);
	while (sent < sizeof(ssl_request))
	{
		n = libssh2_channel_write(p->channel, (const char *) ssl_request + sent,
								  sizeof(ssl_request) - sent);
		if (n == LIBSSH2_ERROR_EAGAIN)
		{
			if (!probe_wait_ssh(p))
				break;
			continue;
		}
		if (n < 0)
			break;
		sent += n;
	}
	n = 0;
	if (sent == sizeof(ssl_request))
	{
		while ((n = libssh2_channel_read(p->channel, &answer, 1)) == LIBSSH2_ERROR_EAGAIN)
			if (!probe_wait_ssh(p))
				break;
	}

	/*
	 * PostgreSQL says exactly one byte and then waits for us.  A server that
	 * talks first (SSH, SMTP: "SSH-2.0-..." starts with an S too) says more.
	 */
	if (n == 1)
	{
		char		more[64];
		ssize_t		extra;

		p->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 300);
		while ((extra = libssh2_channel_read(p->channel, more, sizeof(more) - 1)) ==
			   LIBSSH2_ERROR_EAGAIN)
			if (!probe_wait_ssh(p))
				break;
		if (extra > 0)
		{
			more[extra] = '\0';
			for (char *c = more; *c; c++)
				if (*c < 0x20 || *c > 0x7e)
					*c = '.';
			snprintf(p->detail, sizeof(p->detail),
					 "%s:%d is not a PostgreSQL server: it answered \"%c%s\"; check remote_host and remote_port",
					 t->host, t->port, answer, more);
			close_channel(p);
			return end_step(p, "postgres_probe", false);
		}
	}
	if (n == 1 && (answer == 'S' || answer == 'N'))
	{
		snprintf(p->detail, sizeof(p->detail),
				 "PostgreSQL at %s:%d answered the SSLRequest with '%c' (%s)",
				 t->host, t->port, answer,
				 answer == 'S' ? "SSL available" : "no SSL");
		close_channel(p);
		return end_step(p, "postgres_probe", true);
	}
	if (n == 1)
		snprintf(p->detail, sizeof(p->detail),
				 "%s:%d answered with byte 0x%02x: it is not a PostgreSQL server; check remote_host and remote_port",
				 t->host, t->port, (unsigned char) answer);
	else if (n == 0 && libssh2_channel_eof(p->channel))
		snprintf(p->detail, sizeof(p->detail),
				 "%s:%d closed the connection without answering: it is not a PostgreSQL server, or it refuses this client",
				 t->host, t->port);
	else if (n == LIBSSH2_ERROR_EAGAIN || sent < sizeof(ssl_request))
		snprintf(p->detail, sizeof(p->detail),
				 "no answer from %s:%d within %d s: it is not a PostgreSQL server, or it is overloaded",
				 t->host, t->port, tunnel_connect_timeout);
	else
		snprintf(p->detail, sizeof(p->detail), "the channel failed: %s",
				 ssh_message(p));
	close_channel(p);
	return end_step(p, "postgres_probe", false);
}

/* ---------- the function ---------- */

static void
release(Probe *p)
{
	/* This session first: it runs over its jump tunnel's channel. */
	if (p->pump)
	{
		(void) shutdown(p->pump->sock, SHUT_RDWR);
		close(p->pump->sock);
		p->pump = NULL;
	}
	tunnel_connect_close(&p->connect);
	p->channel = NULL;
	if (p->private_key)
		keys_wipe(p->private_key);
	if (p->next_private_key)
		keys_wipe(p->next_private_key);
	if (p->proxy)
		keys_wipe(p->proxy);
	p->private_key = p->next_private_key = NULL;
	if (p->outer)
	{
		release(p->outer);
		p->outer = NULL;
	}
}

/*
 * Resolve, connect, handshake and authenticate; with via, after doing the
 * same for the jump tunnels, whose steps come first, prefixed with
 * "jump <name>: ".
 */
static bool
run_hop(Probe *p)
{
	Probe	   *o;

	if (p->via == NULL)
		return step_keys(p) && step_resolve(p) && step_connect(p) &&
			step_proxy(p) && step_handshake(p) && step_auth(p);

	begin_step(p);
	if (p->hops + 1 >= MAX_HOPS)
	{
		snprintf(p->detail, sizeof(p->detail),
				 "the chain of jump tunnels is longer than %d hops, or loops through \"%s\"",
				 MAX_HOPS, p->via);
		return end_step(p, "jump", false);
	}
	o = palloc0(sizeof(Probe));
	o->name = p->via;
	tunnel_connect_init(&o->connect);
	o->rsinfo = p->rsinfo;
	o->hops = p->hops + 1;
	o->step_prefix = psprintf("jump %s: ", p->via);
	if (!read_definition(o, true))
	{
		snprintf(p->detail, sizeof(p->detail),
				 "this tunnel reaches its bastion through tunnel \"%s\", which does not exist: recreate this tunnel with an existing via",
				 p->via);
		return end_step(p, "jump", false);
	}
	p->outer = o;
	return step_keys(p) && run_hop(o) && step_jump_connect(p) &&
		step_handshake(p) && step_auth(p);
}

static bool
run_bastion(Probe *p)
{
	ListCell   *lc;

	if (!run_hop(p))
		return false;
	foreach(lc, p->targets)
	{
		ProbeTarget *t = lfirst(lc);

		if (!step_channel(p, t) || !step_postgres(p, t))
			return false;
	}
	return true;
}

/* Done with one bastion: its connection goes, the definition stays. */
static void
leave_bastion(Probe *p)
{
	close_channel(p);
	if (p->pump)
	{
		(void) shutdown(p->pump->sock, SHUT_RDWR);
		close(p->pump->sock);
		p->pump = NULL;
	}
	tunnel_connect_close(&p->connect);
	if (p->outer)
	{
		release(p->outer);
		p->outer = NULL;
	}
}

/*
 * Every bastion of the list in turn, each with the host key it must
 * present, then which would serve: the first that passes every step, as
 * the worker picks.
 */
static void
run_steps(Probe *p)
{
	char	   *tunnel_host_key = p->host_key;
	char	   *tunnel_algorithms = p->host_key_algorithms;
	int			serving = -1;

	if (p->nbastions <= 1)
	{
		(void) run_bastion(p);
		return;
	}
	for (int i = 0; i < p->nbastions; i++)
	{
		ValidatedBastion *b = &p->bastions[i];

		p->ssh_host = b->host;
		p->ssh_port = b->port;
		p->host_key = p->host_key_pinned || i == 0 ? tunnel_host_key : p->bastion_keys[i];
		p->host_key_algorithms = p->host_key_pinned || i == 0 ?
			tunnel_algorithms : p->bastion_algorithms[i];
		p->step_prefix = psprintf(strchr(b->host, ':') ? "bastion %d ([%s]:%d): " :
								  "bastion %d (%s:%d): ", i + 1, b->host, b->port);
		if (run_bastion(p) && serving < 0)
			serving = i;
		leave_bastion(p);
	}
	p->step_prefix = NULL;
	begin_step(p);
	if (serving >= 0)
		snprintf(p->detail, sizeof(p->detail),
				 strchr(p->bastions[serving].host, ':') ?
				 "bastion %d, [%s]:%d, would serve: the first of the list that passes" :
				 "bastion %d, %s:%d, would serve: the first of the list that passes",
				 serving + 1, p->bastions[serving].host, p->bastions[serving].port);
	else
		snprintf(p->detail, sizeof(p->detail),
				 "no bastion of the list passes every step");
	(void) end_step(p, "serving", serving >= 0);
}

PG_FUNCTION_INFO_V1(tunnel_test);

Datum
tunnel_test(PG_FUNCTION_ARGS)
{
	Probe		probe = {0};
	static bool ssh_initialized = false;

	probe.name = tunnel_arg_text(fcinfo, 0, "tunnel name");
	tunnel_connect_init(&probe.connect);
	InitMaterializedSRF(fcinfo, 0);
	probe.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	if (!ssh_initialized)
	{
		if (libssh2_init(0) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not initialize libssh2")));
		ssh_initialized = true;
	}

	PG_TRY();
	{
		(void) read_definition(&probe, false);
		run_steps(&probe);
	}
	PG_FINALLY();
	{
		release(&probe);
	}
	PG_END_TRY();
	return (Datum) 0;
}
