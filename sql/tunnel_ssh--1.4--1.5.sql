/* tunnel_ssh--1.4--1.5.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION tunnel_ssh UPDATE TO '1.5'" to load this file. \quit

-- Who uses a tunnel: one row per client connection the worker holds.
-- client_pid joins with pg_stat_activity.pid; client_addr is NULL and
-- client_port -1 for a client on the Unix socket, as in pg_stat_activity.
CREATE FUNCTION @extschema@.tunnel_connections(
	OUT tunnel text,
	OUT local_port int,
	OUT remote_host text,
	OUT remote_port int,
	OUT client_pid int,
	OUT client_addr inet,
	OUT client_port int,
	OUT bastion text,
	OUT lane int,
	OUT state text,
	OUT opened_at timestamptz,
	OUT open_ms float8,
	OUT bytes_in bigint,
	OUT bytes_out bigint)
RETURNS SETOF record
	LANGUAGE C STRICT VOLATILE
	AS 'MODULE_PATHNAME', 'tunnel_connections';
CREATE VIEW tunnel_ssh.connections AS
	SELECT * FROM @extschema@.tunnel_connections();

-- Cumulative counters, since the server started or tunnel_stat_reset().
-- A row with local_port NULL holds a tunnel's sessions (reconnects,
-- failovers, seconds connected); a row with a local_port one forward's
-- connections.  The two views below are what to read.
CREATE FUNCTION @extschema@.tunnel_stat(
	OUT tunnel text,
	OUT local_port int,
	OUT remote_host text,
	OUT remote_port int,
	OUT connections bigint,
	OUT open_failures_prohibited bigint,
	OUT open_failures_connect_failed bigint,
	OUT open_failures_timeout bigint,
	OUT open_failures_no_session bigint,
	OUT open_failures_other bigint,
	OUT reconnects bigint,
	OUT failovers bigint,
	OUT bytes_in bigint,
	OUT bytes_out bigint,
	OUT seconds_connected float8,
	OUT stats_reset timestamptz)
RETURNS SETOF record
	LANGUAGE C STRICT VOLATILE
	AS 'MODULE_PATHNAME', 'tunnel_stat';

CREATE VIEW tunnel_ssh.stat_tunnels AS
	SELECT tunnel,
		   sum(connections)::bigint AS connections,
		   sum(open_failures_prohibited)::bigint AS open_failures_prohibited,
		   sum(open_failures_connect_failed)::bigint AS open_failures_connect_failed,
		   sum(open_failures_timeout)::bigint AS open_failures_timeout,
		   sum(open_failures_no_session)::bigint AS open_failures_no_session,
		   sum(open_failures_other)::bigint AS open_failures_other,
		   sum(reconnects)::bigint AS reconnects,
		   sum(failovers)::bigint AS failovers,
		   sum(bytes_in)::bigint AS bytes_in,
		   sum(bytes_out)::bigint AS bytes_out,
		   sum(seconds_connected) AS seconds_connected,
		   max(stats_reset) AS stats_reset
	  FROM @extschema@.tunnel_stat()
	 GROUP BY tunnel;

CREATE VIEW tunnel_ssh.stat_forwards AS
	SELECT tunnel, local_port, remote_host, remote_port, connections,
		   open_failures_prohibited, open_failures_connect_failed,
		   open_failures_timeout, open_failures_no_session,
		   open_failures_other, bytes_in, bytes_out, stats_reset
	  FROM @extschema@.tunnel_stat()
	 WHERE local_port IS NOT NULL;

CREATE FUNCTION @extschema@.tunnel_stat_reset(tunnel text DEFAULT NULL)
RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	AS 'MODULE_PATHNAME', 'tunnel_stat_reset';

REVOKE ALL ON FUNCTION @extschema@.tunnel_connections() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_stat() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_stat_reset(text) FROM PUBLIC;
REVOKE ALL ON tunnel_ssh.connections, tunnel_ssh.stat_tunnels,
	tunnel_ssh.stat_forwards FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.tunnel_connections() TO pg_monitor;
GRANT EXECUTE ON FUNCTION @extschema@.tunnel_stat() TO pg_monitor;
GRANT SELECT ON tunnel_ssh.connections, tunnel_ssh.stat_tunnels,
	tunnel_ssh.stat_forwards TO pg_monitor;
