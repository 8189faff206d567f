/* tunnel_ssh--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION tunnel_ssh UPDATE TO '1.1'" to load this file. \quit

-- Jump hosts: a tunnel may reach its bastion through another tunnel's
-- session, as ssh -J does.  tunnel_drop refuses to break a chain.
ALTER TABLE tunnel_ssh.tunnel ADD COLUMN via text
	REFERENCES tunnel_ssh.tunnel (name) ON UPDATE CASCADE;

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
