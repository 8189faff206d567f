/* tunnel_ssh--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION tunnel_ssh" to load this file. \quit

-- Refuses a database other than tunnel_ssh.database, warns when not preloaded.
CREATE FUNCTION @extschema@.tunnel_check_setup() RETURNS void
	LANGUAGE C AS 'MODULE_PATHNAME', 'tunnel_check_setup';
SELECT @extschema@.tunnel_check_setup();
DROP FUNCTION @extschema@.tunnel_check_setup();

CREATE SCHEMA tunnel_ssh;

/*
 * A tunnel is one bastion, one account and one key; each forward is a
 * target behind it with a local port on this host.
 */
CREATE TABLE tunnel_ssh.tunnel (
	name text PRIMARY KEY,
	ssh_host text NOT NULL,
	ssh_port int NOT NULL CHECK (ssh_port BETWEEN 1 AND 65535),
	ssh_user text NOT NULL,
	key_type text NOT NULL,
	public_key text NOT NULL,
	key_fingerprint text NOT NULL,
	host_key_fingerprint text,
	host_key_pinned boolean NOT NULL DEFAULT false,
	enabled boolean NOT NULL DEFAULT true,
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tunnel_ssh.forward (
	local_port int PRIMARY KEY CHECK (local_port BETWEEN 1 AND 65535),
	tunnel text NOT NULL REFERENCES tunnel_ssh.tunnel (name)
		ON UPDATE CASCADE ON DELETE CASCADE,
	remote_host text NOT NULL,
	remote_port int NOT NULL CHECK (remote_port BETWEEN 1 AND 65535)
);
CREATE INDEX ON tunnel_ssh.forward (tunnel);

-- Private keys apart, so no grant on the tables above can ever expose one.
CREATE TABLE tunnel_ssh.secret (
	tunnel text PRIMARY KEY REFERENCES tunnel_ssh.tunnel (name)
		ON UPDATE CASCADE ON DELETE CASCADE,
	private_key text NOT NULL
);

REVOKE ALL ON ALL TABLES IN SCHEMA tunnel_ssh FROM PUBLIC;

-- pg_dump keeps the definitions and keys, so a restore needs no re-pasting.
SELECT pg_catalog.pg_extension_config_dump('tunnel_ssh.tunnel', '');
SELECT pg_catalog.pg_extension_config_dump('tunnel_ssh.forward', '');
SELECT pg_catalog.pg_extension_config_dump('tunnel_ssh.secret', '');

-- The worker learns of every committed change through this trigger.
CREATE FUNCTION tunnel_ssh.catalog_changed() RETURNS trigger
	LANGUAGE C AS 'MODULE_PATHNAME', 'tunnel_catalog_changed';
CREATE TRIGGER catalog_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tunnel_ssh.tunnel
	FOR EACH STATEMENT EXECUTE FUNCTION tunnel_ssh.catalog_changed();
CREATE TRIGGER catalog_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tunnel_ssh.forward
	FOR EACH STATEMENT EXECUTE FUNCTION tunnel_ssh.catalog_changed();
CREATE TRIGGER catalog_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tunnel_ssh.secret
	FOR EACH STATEMENT EXECUTE FUNCTION tunnel_ssh.catalog_changed();

-- API

CREATE FUNCTION @extschema@.tunnel_create(
	name text,
	ssh_host text,
	remote_host text,
	remote_port int DEFAULT 5432,
	ssh_port int DEFAULT 22,
	ssh_user text DEFAULT 'tunnel',
	local_port int DEFAULT NULL,
	key_type text DEFAULT 'ed25519',
	host_key_fingerprint text DEFAULT NULL)
RETURNS text
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_create';

CREATE FUNCTION @extschema@.tunnel_public_key(name text) RETURNS text
	LANGUAGE C CALLED ON NULL INPUT STABLE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_public_key';

CREATE FUNCTION @extschema@.tunnel_drop(name text) RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_drop';

CREATE VIEW tunnel_ssh.tunnels AS
	SELECT t.name, t.ssh_host, t.ssh_port, t.ssh_user,
		   f.remote_host, f.remote_port, f.local_port,
		   t.key_type, t.public_key, t.key_fingerprint,
		   t.host_key_fingerprint, t.host_key_pinned, t.enabled, t.created_at
	FROM tunnel_ssh.tunnel t
		 LEFT JOIN tunnel_ssh.forward f ON f.tunnel = t.name;

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
	OUT bytes_out bigint)
RETURNS SETOF record
	LANGUAGE C STRICT VOLATILE
	AS 'MODULE_PATHNAME', 'tunnel_status';

CREATE VIEW tunnel_ssh.status AS SELECT * FROM @extschema@.tunnel_status();

-- Only superusers, and roles the DBA grants EXECUTE to, manage tunnels.
REVOKE ALL ON FUNCTION @extschema@.tunnel_create(text, text, text, int, int, text, int, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_public_key(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_drop(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_status() FROM PUBLIC;
-- Read-only monitoring: GRANT pg_monitor TO some_role.
GRANT USAGE ON SCHEMA tunnel_ssh TO pg_monitor;
GRANT EXECUTE ON FUNCTION @extschema@.tunnel_status() TO pg_monitor;
GRANT SELECT ON tunnel_ssh.status, tunnel_ssh.tunnels TO pg_monitor;
