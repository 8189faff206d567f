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
 * The waits, and the pumps between the hops of a jump chain, are
 * probechain.c's; the postgres step's conversation with the server is
 * pgprobe.c's.  This file reads the definition, runs the steps in order and
 * makes one row of each.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <libssh2.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "connect.h"
#include "hostkeys.h"
#include "keys.h"
#include "methods.h"
#include "pgprobe.h"
#include "probechain.h"
#include "api.h"
#include "settings.h"
#include "tunnel_limits.h"
#include "validate.h"

#define PROBE_TIMED_OUT		(-1000)		/* not a libssh2 error code */
#define DETAIL_MAXLEN		1024

typedef struct ProbeTarget
{
	char	   *host;
	int			port;
} ProbeTarget;

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

	TunnelProbeHop hop;			/* the connection, its waits (probechain.h) */
	LIBSSH2_CHANNEL *channel;

	Probe	   *outer;			/* the jump tunnel's probe, with via */
	int			hops;			/* jump tunnels behind this one */
	const char *step_prefix;	/* "jump b1: " on a jump tunnel's steps */

	ReturnSetInfo *rsinfo;
	TimestampTz step_start;
	char		detail[DETAIL_MAXLEN];
};

/* ---------- results ---------- */

static void
begin_step(Probe *p)
{
	p->step_start = GetCurrentTimestamp();
	p->hop.deadline = TimestampTzPlusMilliseconds(p->step_start,
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

/* Repeat a libssh2 call that returns an int until it stops asking to wait. */
#define SSH_CALL(p, rc, call) \
	do { \
		while (((rc) = (call)) == LIBSSH2_ERROR_EAGAIN) \
			if (!tunnel_probechain_wait_ssh(&(p)->hop)) \
				{ (rc) = PROBE_TIMED_OUT; break; } \
	} while (0)

/* Why p's bastion refused a direct-tcpip channel to host:port, in p->detail. */
static void
open_error_text(Probe *p, const char *host, int port)
{
	char	   *msg = NULL;

	(void) libssh2_session_last_error(p->hop.connect.ssh, &msg, NULL, 0);
	tunnel_open_error_text(p->detail, sizeof(p->detail), p->name, host, port,
						   msg);
}

/* ---------- reading the definition ---------- */

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
		tunnel_bastion_host_keys(p->name, p->bastions, p->nbastions,
								 p->bastion_keys, p->bastion_algorithms);
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
	TunnelConnect *c = &p->hop.connect;

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
	TunnelConnect *c = &p->hop.connect;

	for (;;)
	{
		tunnel_connect_step(c);
		if (c->step == CONNECT_FAILED)
			return false;
		if (c->step > until)
			return true;
		if (!tunnel_probechain_wait(&p->hop, tunnel_connect_events(c)))
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
	TunnelConnect *c = &p->hop.connect;

	if (c->step == CONNECT_FAILED)
		return c->failed_at > which;
	return drive(p, which) || c->failed_at > which;
}

/* The machine's words for its failure, then advice only tunnel_test gives. */
static void
failure_detail(Probe *p, const char *advice)
{
	snprintf(p->detail, sizeof(p->detail), "%s%s%s", p->hop.connect.message,
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
	if (tunnel_connect_keys_usable(&p->hop.connect, why, sizeof(why)))
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
	TunnelConnect *c = &p->hop.connect;
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
	TunnelConnect *c = &p->hop.connect;

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
	TunnelConnect *c = &p->hop.connect;

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

	/* The waits below are the jump session's: give them this deadline. */
	o->hop.deadline = p->hop.deadline;
	for (;;)
	{
		channel = libssh2_channel_direct_tcpip_ex(o->hop.connect.ssh,
												  p->ssh_host, p->ssh_port,
												  "127.0.0.1", 0);
		rc = channel ? 0 : libssh2_session_last_errno(o->hop.connect.ssh);
		if (rc != LIBSSH2_ERROR_EAGAIN)
			break;
		if (!tunnel_probechain_wait_ssh(&o->hop))
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
	tunnel_probechain_hop_over(&p->hop, channel);
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
	TunnelConnect *c = &p->hop.connect;

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
	TunnelConnect *c = &p->hop.connect;
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
	TunnelConnect *c = &p->hop.connect;
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
	TunnelConnect *c = &p->hop.connect;
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
		p->channel = libssh2_channel_direct_tcpip_ex(p->hop.connect.ssh,
													 t->host, t->port,
													 "127.0.0.1", 0);
		rc = p->channel ? 0 : libssh2_session_last_errno(p->hop.connect.ssh);
		if (rc != LIBSSH2_ERROR_EAGAIN)
			break;
		if (!tunnel_probechain_wait_ssh(&p->hop))
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

/* The postgres step's words and its polite end are pgprobe.c's. */
static bool
step_postgres(Probe *p, ProbeTarget *t)
{
	bool		ok;

	begin_step(p);
	ok = tunnel_pgprobe(&p->hop, p->channel, t->host, t->port,
						 p->detail, sizeof(p->detail));
	close_channel(p);
	return end_step(p, "postgres_probe", ok);
}

/* ---------- the function ---------- */

static void
release(Probe *p)
{
	/* This session first: it runs over its jump tunnel's channel. */
	tunnel_probechain_hop_close(&p->hop);
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
	if (p->hops + 1 >= TUNNEL_PROBECHAIN_MAX_HOPS)
	{
		snprintf(p->detail, sizeof(p->detail),
				 "the chain of jump tunnels is longer than %d hops, or loops through \"%s\"",
				 TUNNEL_PROBECHAIN_MAX_HOPS, p->via);
		return end_step(p, "jump", false);
	}
	o = palloc0(sizeof(Probe));
	o->name = p->via;
	tunnel_connect_init(&o->hop.connect);
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
	p->hop.outer = &o->hop;
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
	tunnel_probechain_hop_close(&p->hop);
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
	tunnel_connect_init(&probe.hop.connect);
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
