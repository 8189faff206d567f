/*-------------------------------------------------------------------------
 *
 * clients.c
 *	  Each client connection's record, audit lines and counts; and
 *	  tunnel_connections().
 *
 * The worker is the only writer of the shared table.  It keeps the free
 * rows on a stack of its own, so taking and giving back a row costs no
 * search.  A row's text and times are written under its spinlock when the
 * connection arrives and when its channel opens; its state when that
 * changes; its byte counts, atomics, when a pump moved bytes.  Readers copy
 * a row under its spinlock and never wait for the worker.
 *
 * Finding the process of a TCP client means a walk of /proc (peer.c): the
 * reader does it, for every TCP row at once, when tunnel_connections() is
 * called.  The worker does it only for the audit line, when asked to log.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "port/pg_bswap.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/timestamp.h"

#include "clients.h"
#include "peer.h"
#include "settings.h"
#include "tunnel_limits.h"

typedef struct ClientRow
{
	slock_t		mutex;			/* guards the fields up to the counters */
	bool		in_use;
	TunnelClientState state;
	bool		tcp;
	int			pid;			/* 0: not known (yet) */
	int			local_port;
	int			remote_port;
	int			lane;			/* -1 until its channel opened */
	int64		open_us;		/* how long the open took; -1 until opened */
	TimestampTz accepted_at;
	char		tunnel[TUNNEL_NAME_MAXLEN + 1];
	char		remote_host[TUNNEL_HOST_MAXLEN + 1];
	char		bastion[TUNNEL_HOST_MAXLEN + 9];	/* "host:port", or "" */
	struct sockaddr_storage client;	/* TCP: the client's end */
	struct sockaddr_storage server; /* TCP: the worker's end */

	pg_atomic_uint64 bytes_in;
	pg_atomic_uint64 bytes_out;
} ClientRow;

typedef struct ClientTable
{
	int			nrows;
	ClientRow	rows[FLEXIBLE_ARRAY_MEMBER];
} ClientTable;

static ClientTable *table = NULL;

/* The worker's: the free rows. */
static int *free_rows = NULL;
static int	nfree = 0;

struct TunnelClient
{
	ClientRow  *row;			/* NULL: the table was full */
	TunnelStats *stats;			/* the forward's */
	char	   *tunnel;
	const char *remote_host;	/* the channel's */
	int			remote_port;
	int			local_port;
	int			pid;
	bool		tcp;
	char		host[NI_MAXHOST];	/* TCP: the client's address */
	int			port;
	TimestampTz accepted_at;
	bool		opened;
	bool		failure_counted;
	TunnelClientState state;
	TunnelClientCloser closer;
	uint64		bytes_in;
	uint64		bytes_out;
};

static const char *const state_names[] = {
	[TUNNEL_CLIENT_WAITING] = "waiting",
	[TUNNEL_CLIENT_OPEN] = "open",
	[TUNNEL_CLIENT_HALF_CLOSED] = "half-closed",
	[TUNNEL_CLIENT_CLOSING] = "closing",
};

static const char *const closer_names[] = {
	[TUNNEL_CLOSED_BY_NONE] = "tunnel",
	[TUNNEL_CLOSED_BY_CLIENT] = "client",
	[TUNNEL_CLOSED_BY_TARGET] = "target",
	[TUNNEL_CLOSED_BY_BASTION] = "bastion",
	[TUNNEL_CLOSED_BY_TUNNEL] = "tunnel",
};

Size
tunnel_clients_shmem_size(void)
{
	return add_size(offsetof(ClientTable, rows),
					mul_size(tunnel_max_tracked_connections, sizeof(ClientRow)));
}

void
tunnel_clients_shmem_init(void)
{
	bool		found;

	table = ShmemInitStruct("tunnel_ssh connections",
							tunnel_clients_shmem_size(), &found);
	if (found)
		return;
	table->nrows = tunnel_max_tracked_connections;
	for (int i = 0; i < table->nrows; i++)
	{
		ClientRow  *row = &table->rows[i];

		memset(row, 0, offsetof(ClientRow, bytes_in));
		SpinLockInit(&row->mutex);
		pg_atomic_init_u64(&row->bytes_in, 0);
		pg_atomic_init_u64(&row->bytes_out, 0);
	}
}

void
tunnel_clients_reset(void)
{
	if (table == NULL)
		return;
	if (free_rows == NULL)
		free_rows = MemoryContextAlloc(TopMemoryContext,
									   Max(table->nrows, 1) * sizeof(int));
	nfree = 0;
	for (int i = table->nrows - 1; i >= 0; i--)
	{
		ClientRow  *row = &table->rows[i];

		SpinLockAcquire(&row->mutex);
		row->in_use = false;
		SpinLockRelease(&row->mutex);
		free_rows[nfree++] = i;
	}
}

/* "[::1]:22" or "10.0.0.5:22" */
static void
format_host_port(char *buf, size_t len, const char *host, int port)
{
	snprintf(buf, len, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

/*
 * What every audit line names: the target, the client's pid and where it
 * connected from.  A TCP client's pid is "unknown": finding it is a walk of
 * /proc that would stall every tunnel of the worker (13 ms per connection
 * with 500 processes); its host and port name it, and tunnel_connections()
 * finds its pid.
 */
typedef struct AuditNames
{
	char		target[TUNNEL_HOST_MAXLEN + 16];
	char		pid[16];
	char		host[NI_MAXHOST + 16];	/* "host=[local]", "host=A port=N" */
} AuditNames;

static void
audit_names(TunnelClient *c, AuditNames *n)
{
	format_host_port(n->target, sizeof(n->target), c->remote_host, c->remote_port);
	if (c->pid == 0)
		strlcpy(n->pid, "unknown", sizeof(n->pid));
	else
		snprintf(n->pid, sizeof(n->pid), "%d", c->pid);
	if (c->tcp)
		snprintf(n->host, sizeof(n->host), "host=%s port=%d", c->host, c->port);
	else
		strlcpy(n->host, "host=[local]", sizeof(n->host));
}

static void
log_received(TunnelClient *c)
{
	AuditNames	n;

	audit_names(c, &n);
	ereport(LOG,
			(errmsg("tunnel connection received: tunnel=%s local_port=%d target=%s client_pid=%s %s",
					c->tunnel, c->local_port, n.target, n.pid, n.host)));
}

TunnelClient *
tunnel_client_begin(int sock, TunnelStatusSlot *slot, TunnelForwardSlot *fs,
					const char *remote_host, int remote_port)
{
	TunnelClient *c = palloc0(sizeof(TunnelClient));
	struct sockaddr_storage client;
	struct sockaddr_storage server;
	socklen_t	len = sizeof(client);
	socklen_t	slen = sizeof(server);

	c->tunnel = pstrdup(tunnel_status_name(slot) ? tunnel_status_name(slot) : "");
	c->remote_host = remote_host;
	c->remote_port = remote_port;
	c->local_port = tunnel_status_forward_local_port(fs);
	c->accepted_at = GetCurrentTimestamp();
	c->state = TUNNEL_CLIENT_WAITING;
	c->stats = tunnel_status_forward_stats(fs);
	tunnel_stats_pin_again(c->stats);
	tunnel_stats_count_connection(c->stats);

	memset(&client, 0, sizeof(client));
	memset(&server, 0, sizeof(server));
	strlcpy(c->host, "127.0.0.1", sizeof(c->host));
	if (getpeername(sock, (struct sockaddr *) &client, &len) == 0 &&
		(client.ss_family == AF_INET || client.ss_family == AF_INET6))
	{
		char		port[NI_MAXSERV];

		c->tcp = true;
		(void) getsockname(sock, (struct sockaddr *) &server, &slen);
		if (getnameinfo((struct sockaddr *) &client, len, c->host,
						sizeof(c->host), port, sizeof(port),
						NI_NUMERICHOST | NI_NUMERICSERV) == 0)
			c->port = atoi(port);
		else
			strlcpy(c->host, "127.0.0.1", sizeof(c->host));
	}
	else
		c->pid = tunnel_peer_unix_pid(sock);

	if (nfree > 0)
	{
		ClientRow  *row = &table->rows[free_rows[--nfree]];

		SpinLockAcquire(&row->mutex);
		row->in_use = true;
		row->state = TUNNEL_CLIENT_WAITING;
		row->tcp = c->tcp;
		row->pid = c->pid;
		row->local_port = c->local_port;
		row->remote_port = remote_port;
		row->lane = -1;
		row->open_us = -1;
		row->accepted_at = c->accepted_at;
		strlcpy(row->tunnel, c->tunnel, sizeof(row->tunnel));
		strlcpy(row->remote_host, remote_host, sizeof(row->remote_host));
		row->bastion[0] = '\0';
		row->client = client;
		row->server = server;
		SpinLockRelease(&row->mutex);
		pg_atomic_write_u64(&row->bytes_in, 0);
		pg_atomic_write_u64(&row->bytes_out, 0);
		c->row = row;
	}

	if (tunnel_log_connections)
		log_received(c);
	return c;
}

static void
put_uint32(StringInfo buf, uint32 v)
{
	uint32		n = pg_hton32(v);

	appendBinaryStringInfo(buf, (const char *) &n, 4);
}

static void
put_string(StringInfo buf, const char *str)
{
	put_uint32(buf, (uint32) strlen(str));
	appendBinaryStringInfo(buf, str, strlen(str));
}

/*
 * The direct-tcpip request (RFC 4254 7.2) names the client as originator,
 * which the bastion logs: a TCP client by its address and port, one on the
 * Unix socket as 127.0.0.1 port 0.
 */
char *
tunnel_client_open_message(TunnelClient *c, unsigned int *len)
{
	StringInfoData buf;

	initStringInfo(&buf);
	put_string(&buf, c->remote_host);
	put_uint32(&buf, (uint32) c->remote_port);
	put_string(&buf, c->host);
	put_uint32(&buf, (uint32) c->port);
	*len = buf.len;
	return buf.data;
}

void
tunnel_client_opened(TunnelClient *c, const char *bastion_host,
					 int bastion_port, int lane, int64 open_us)
{
	char		bastion[TUNNEL_HOST_MAXLEN + 9];

	c->opened = true;
	format_host_port(bastion, sizeof(bastion), bastion_host, bastion_port);
	if (c->row)
	{
		SpinLockAcquire(&c->row->mutex);
		strlcpy(c->row->bastion, bastion, sizeof(c->row->bastion));
		c->row->lane = lane;
		c->row->open_us = open_us;
		SpinLockRelease(&c->row->mutex);
	}
	if (tunnel_log_connections)
	{
		AuditNames	n;

		audit_names(c, &n);
		ereport(LOG,
				(errmsg("tunnel channel opened: tunnel=%s target=%s client_pid=%s %s bastion=%s lane=%d open_time=%.3f ms",
						c->tunnel, n.target, n.pid, n.host,
						bastion, lane, (double) open_us / 1000.0)));
	}
}

void
tunnel_client_moved(TunnelClient *c, int lane)
{
	if (!c->opened || c->row == NULL)
		return;
	SpinLockAcquire(&c->row->mutex);
	c->row->lane = lane;
	SpinLockRelease(&c->row->mutex);
}

TunnelOpenFailure
tunnel_client_open_failure_of(const char *ssh_message)
{
	if (ssh_message && strstr(ssh_message, "administratively prohibited"))
		return TUNNEL_OPEN_PROHIBITED;
	if (ssh_message && strstr(ssh_message, "connect failed"))
		return TUNNEL_OPEN_CONNECT_FAILED;
	return TUNNEL_OPEN_OTHER;
}

void
tunnel_client_not_opened(TunnelClient *c, TunnelOpenFailure why,
						 const char *detail)
{
	if (c->opened || c->failure_counted)
		return;
	c->failure_counted = true;
	tunnel_stats_count_open_failure(c->stats, why);
	if (tunnel_log_connections)
	{
		AuditNames	n;

		audit_names(c, &n);
		ereport(LOG,
				(errmsg("tunnel channel not opened: tunnel=%s target=%s client_pid=%s %s reason=%s",
						c->tunnel, n.target, n.pid, n.host,
						tunnel_open_failure_name(why)),
				 detail && detail[0] ?
				 errdetail_internal("%c%s.", pg_toupper((unsigned char) detail[0]),
									detail + 1) : 0));
	}
}

void
tunnel_client_set_state(TunnelClient *c, TunnelClientState state)
{
	if (c->state == state)
		return;
	c->state = state;
	if (c->row)
	{
		SpinLockAcquire(&c->row->mutex);
		c->row->state = state;
		SpinLockRelease(&c->row->mutex);
	}
}

void
tunnel_client_closed_by(TunnelClient *c, TunnelClientCloser who)
{
	if (c->closer == TUNNEL_CLOSED_BY_NONE)
		c->closer = who;
}

void
tunnel_client_count_bytes(TunnelClient *c, uint64 bytes_in, uint64 bytes_out)
{
	c->bytes_in += bytes_in;
	c->bytes_out += bytes_out;
	tunnel_stats_count_bytes(c->stats, bytes_in, bytes_out);
	if (c->row)
	{
		pg_atomic_write_u64(&c->row->bytes_in, c->bytes_in);
		pg_atomic_write_u64(&c->row->bytes_out, c->bytes_out);
	}
}

void
tunnel_client_end(TunnelClient *c)
{
	/* A client that did not leave by itself before its open lost it. */
	if (!c->opened && c->closer != TUNNEL_CLOSED_BY_CLIENT)
		tunnel_client_not_opened(c, TUNNEL_OPEN_NO_SESSION,
								 "the tunnel had no SSH session to open the channel on");
	if (tunnel_log_connections)
	{
		long		secs;
		int			usecs;
		AuditNames	n;

		TimestampDifference(c->accepted_at, GetCurrentTimestamp(), &secs, &usecs);
		audit_names(c, &n);
		ereport(LOG,
				(errmsg("tunnel disconnection: session time: %ld:%02d:%02d.%03d tunnel=%s target=%s client_pid=%s %s bytes_in=" UINT64_FORMAT " bytes_out=" UINT64_FORMAT " closed_by=%s",
						secs / 3600, (int) (secs % 3600) / 60, (int) (secs % 60),
						usecs / 1000, c->tunnel, n.target, n.pid, n.host,
						c->bytes_in, c->bytes_out, closer_names[c->closer])));
	}
	if (c->row)
	{
		SpinLockAcquire(&c->row->mutex);
		c->row->in_use = false;
		SpinLockRelease(&c->row->mutex);
		free_rows[nfree++] = c->row - table->rows;
	}
	tunnel_stats_unpin(c->stats);
	pfree(c->tunnel);
	pfree(c);
}

/* ---------- SQL ---------- */

static Datum
inet_datum(const struct sockaddr_storage *ss, bool *isnull)
{
	char		host[NI_MAXHOST];

	*isnull = getnameinfo((const struct sockaddr *) ss, sizeof(*ss), host,
						  sizeof(host), NULL, 0, NI_NUMERICHOST) != 0;
	return *isnull ? (Datum) 0 :
		DirectFunctionCall1(inet_in, CStringGetDatum(host));
}

static int
port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *) ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *) ss)->sin6_port);
	return -1;
}

PG_FUNCTION_INFO_V1(tunnel_connections);

/*
 * tunnel_connections(): one row per client connection the worker holds.
 * The rows are copied first, then the processes of the TCP clients found
 * with one walk of /proc for all.
 */
Datum
tunnel_connections(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ClientRow  *rows;
	TunnelPeerQuery *queries;
	int		   *query_of;
	int			nrows = 0;
	int			nqueries = 0;

	InitMaterializedSRF(fcinfo, 0);
	if (table == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tunnel_ssh is not loaded"),
				 errhint("Add tunnel_ssh to shared_preload_libraries and restart the server.")));

	rows = palloc(Max(table->nrows, 1) * sizeof(ClientRow));
	query_of = palloc(Max(table->nrows, 1) * sizeof(int));
	queries = palloc(Max(table->nrows, 1) * sizeof(TunnelPeerQuery));
	for (int i = 0; i < table->nrows; i++)
	{
		ClientRow  *row = &table->rows[i];
		ClientRow  *copy = &rows[nrows];

		if (!row->in_use)
			continue;
		SpinLockAcquire(&row->mutex);
		memcpy(copy, row, offsetof(ClientRow, bytes_in));
		SpinLockRelease(&row->mutex);
		if (!copy->in_use)
			continue;
		pg_atomic_init_u64(&copy->bytes_in, pg_atomic_read_u64(&row->bytes_in));
		pg_atomic_init_u64(&copy->bytes_out, pg_atomic_read_u64(&row->bytes_out));
		query_of[nrows] = -1;
		if (copy->tcp && copy->pid == 0)
		{
			queries[nqueries].client = copy->client;
			queries[nqueries].server = copy->server;
			query_of[nrows] = nqueries++;
		}
		nrows++;
	}
	tunnel_peer_find_pids(queries, nqueries);

	for (int i = 0; i < nrows; i++)
	{
		ClientRow  *row = &rows[i];
		Datum		values[14];
		bool		nulls[14] = {0};
		int			pid = query_of[i] >= 0 ? queries[query_of[i]].pid : row->pid;

		values[0] = CStringGetTextDatum(row->tunnel);
		values[1] = Int32GetDatum(row->local_port);
		nulls[1] = row->local_port == 0;
		values[2] = CStringGetTextDatum(row->remote_host);
		values[3] = Int32GetDatum(row->remote_port);
		values[4] = Int32GetDatum(pid);
		nulls[4] = pid == 0;
		if (row->tcp)
		{
			values[5] = inet_datum(&row->client, &nulls[5]);
			values[6] = Int32GetDatum(port_of(&row->client));
		}
		else
		{
			nulls[5] = true;
			values[6] = Int32GetDatum(-1);
		}
		values[7] = CStringGetTextDatum(row->bastion);
		nulls[7] = row->bastion[0] == '\0';
		values[8] = Int32GetDatum(row->lane);
		nulls[8] = row->lane < 0;
		values[9] = CStringGetTextDatum(state_names[row->state]);
		values[10] = TimestampTzGetDatum(row->accepted_at);
		values[11] = Float8GetDatum((double) row->open_us / 1000.0);
		nulls[11] = row->open_us < 0;
		values[12] = Int64GetDatum((int64) pg_atomic_read_u64(&row->bytes_in));
		values[13] = Int64GetDatum((int64) pg_atomic_read_u64(&row->bytes_out));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
