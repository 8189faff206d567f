/* tunnel_ssh--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION tunnel_ssh UPDATE TO '1.1'" to load this file. \quit

-- Jump hosts: a tunnel may reach its bastion through another tunnel's
-- session, as ssh -J does.  tunnel_create checks that via exists and
-- tunnel_drop refuses to break a chain.  No foreign key: a self-reference
-- makes pg_dump warn about circular constraints on every dump, and a dump
-- made with --inserts (rows in physical order, one statement each) could
-- not be restored.  A via that names no tunnel shows in tunnel_status().
ALTER TABLE tunnel_ssh.tunnel ADD COLUMN via text;

DROP FUNCTION @extschema@.tunnel_create(text, text, text, int, int, text, int, text, text);
CREATE FUNCTION @extschema@.tunnel_create(
	name text,
	ssh_host text,
	remote_host text,
	remote_port int DEFAULT 5432,
	ssh_port int DEFAULT 22,
	ssh_user text DEFAULT 'tunnel',
	local_port int DEFAULT NULL,
	key_type text DEFAULT 'ed25519',
	host_key_fingerprint text DEFAULT NULL,
	via text DEFAULT NULL)
RETURNS text
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_create';
REVOKE ALL ON FUNCTION @extschema@.tunnel_create(text, text, text, int, int, text, int, text, text, text) FROM PUBLIC;

CREATE OR REPLACE VIEW tunnel_ssh.tunnels AS
	SELECT t.name, t.ssh_host, t.ssh_port, t.ssh_user,
		   f.remote_host, f.remote_port, f.local_port,
		   t.key_type, t.public_key, t.key_fingerprint,
		   t.host_key_fingerprint, t.host_key_pinned, t.enabled, t.created_at,
		   t.via
	FROM tunnel_ssh.tunnel t
		 LEFT JOIN tunnel_ssh.forward f ON f.tunnel = t.name;

-- Several forwards per tunnel, added and dropped on a live session.
CREATE FUNCTION @extschema@.tunnel_forward_add(
	tunnel text,
	remote_host text,
	remote_port int DEFAULT 5432,
	local_port int DEFAULT NULL)
RETURNS int
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_forward_add';

CREATE FUNCTION @extschema@.tunnel_forward_drop(tunnel text, local_port int)
RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_forward_drop';

-- Foreign servers made by tunnel_server_create, which follow their forward's
-- local port wherever it moves.
CREATE TABLE tunnel_ssh.server (
	server text PRIMARY KEY,
	tunnel text NOT NULL REFERENCES tunnel_ssh.tunnel (name)
		ON UPDATE CASCADE ON DELETE CASCADE,
	local_port int NOT NULL REFERENCES tunnel_ssh.forward (local_port)
		ON UPDATE CASCADE ON DELETE CASCADE
);
REVOKE ALL ON tunnel_ssh.server FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tunnel_ssh.server', '');

CREATE FUNCTION tunnel_ssh.server_follow_port() RETURNS trigger
	LANGUAGE C AS 'MODULE_PATHNAME', 'tunnel_server_follow_port';
CREATE TRIGGER server_follow_port
	AFTER UPDATE OF local_port ON tunnel_ssh.server
	FOR EACH ROW EXECUTE FUNCTION tunnel_ssh.server_follow_port();

CREATE FUNCTION @extschema@.tunnel_server_create(
	server_name text,
	tunnel text,
	dbname text,
	local_port int DEFAULT NULL,
	fdw text DEFAULT 'postgres_fdw',
	options text[] DEFAULT '{}')
RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_server_create';

DROP FUNCTION @extschema@.tunnel_drop(text);
CREATE FUNCTION @extschema@.tunnel_drop(name text, cascade boolean DEFAULT false)
RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_drop';

REVOKE ALL ON FUNCTION @extschema@.tunnel_forward_add(text, text, int, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_forward_drop(text, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_server_create(text, text, text, int, text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_drop(text, boolean) FROM PUBLIC;

-- Day-2 operations.

-- Key rotation: the next key waits beside the current one until it has
-- authenticated once; then the worker makes it the current key.
ALTER TABLE tunnel_ssh.tunnel
	ADD COLUMN next_key_type text,
	ADD COLUMN next_public_key text,
	ADD COLUMN next_key_fingerprint text,
	ADD COLUMN rotation_started timestamptz;
ALTER TABLE tunnel_ssh.secret ADD COLUMN next_private_key text;

CREATE OR REPLACE VIEW tunnel_ssh.tunnels AS
	SELECT t.name, t.ssh_host, t.ssh_port, t.ssh_user,
		   f.remote_host, f.remote_port, f.local_port,
		   t.key_type, t.public_key, t.key_fingerprint,
		   t.host_key_fingerprint, t.host_key_pinned, t.enabled, t.created_at,
		   t.via,
		   t.next_public_key, t.next_key_fingerprint, t.rotation_started
	FROM tunnel_ssh.tunnel t
		 LEFT JOIN tunnel_ssh.forward f ON f.tunnel = t.name;

CREATE FUNCTION @extschema@.tunnel_alter(
	name text,
	ssh_host text DEFAULT NULL,
	ssh_port int DEFAULT NULL,
	ssh_user text DEFAULT NULL,
	remote_host text DEFAULT NULL,
	remote_port int DEFAULT NULL,
	local_port int DEFAULT NULL,
	host_key_fingerprint text DEFAULT NULL)
RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_alter';

CREATE FUNCTION @extschema@.tunnel_disable(name text) RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_disable';

CREATE FUNCTION @extschema@.tunnel_enable(name text) RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_enable';

CREATE FUNCTION @extschema@.tunnel_host_key_reset(name text) RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_host_key_reset';

CREATE FUNCTION @extschema@.tunnel_rotate_key(name text, key_type text DEFAULT NULL)
RETURNS text
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_rotate_key';

CREATE FUNCTION @extschema@.tunnel_rotate_cancel(name text) RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_rotate_cancel';

-- Runs in the calling backend, not the worker, so it works when the worker
-- is stuck; honours statement_timeout and cancel.
CREATE FUNCTION @extschema@.tunnel_test(
	name text,
	OUT step text,
	OUT ok boolean,
	OUT detail text,
	OUT elapsed_ms float8)
RETURNS SETOF record
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_test';

-- Status: which key is in use, the rotation, the chain; per forward too.
DROP VIEW tunnel_ssh.status;
DROP FUNCTION @extschema@.tunnel_status();
CREATE FUNCTION @extschema@.tunnel_status(
	OUT name text,
	OUT state text,
	OUT local_address text,
	OUT local_port int,
	OUT state_since timestamptz,
	OUT last_error text,
	OUT host_key_fingerprint text,
	OUT connect_attempts bigint,
	OUT active_connections int,
	OUT total_connections bigint,
	OUT bytes_in bigint,
	OUT bytes_out bigint,
	OUT key_fingerprint text,
	OUT rotation_pending boolean,
	OUT rotation_started timestamptz,
	OUT via text)
RETURNS SETOF record
	LANGUAGE C STRICT VOLATILE
	AS 'MODULE_PATHNAME', 'tunnel_status';
CREATE VIEW tunnel_ssh.status AS SELECT * FROM @extschema@.tunnel_status();

CREATE FUNCTION @extschema@.tunnel_forward_status(
	OUT tunnel text,
	OUT local_port int,
	OUT remote_host text,
	OUT remote_port int,
	OUT listening boolean,
	OUT active_connections int,
	OUT total_connections bigint,
	OUT bytes_in bigint,
	OUT bytes_out bigint,
	OUT last_error text,
	OUT last_error_at timestamptz)
RETURNS SETOF record
	LANGUAGE C STRICT VOLATILE
	AS 'MODULE_PATHNAME', 'tunnel_forward_status';
CREATE VIEW tunnel_ssh.forward_status AS
	SELECT * FROM @extschema@.tunnel_forward_status();

REVOKE ALL ON FUNCTION @extschema@.tunnel_alter(text, text, int, text, text, int, int, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_disable(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_enable(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_host_key_reset(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_rotate_key(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_rotate_cancel(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_test(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_forward_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.tunnel_status() TO pg_monitor;
GRANT EXECUTE ON FUNCTION @extschema@.tunnel_forward_status() TO pg_monitor;
GRANT SELECT ON tunnel_ssh.status, tunnel_ssh.forward_status TO pg_monitor;
