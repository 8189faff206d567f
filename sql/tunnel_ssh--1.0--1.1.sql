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
