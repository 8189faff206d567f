/* tunnel_ssh--1.3--1.4.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION tunnel_ssh UPDATE TO '1.4'" to load this file. \quit

-- An outbound proxy for the first hop (socks5://, socks5h:// or http://).
-- The URL, credentials and all, is kept in tunnel_ssh.secret beside the
-- private key, which no grant exposes; tunnel_ssh.tunnel and the tunnels
-- view (pg_monitor) keep it without credentials.
ALTER TABLE tunnel_ssh.tunnel ADD COLUMN proxy text;
ALTER TABLE tunnel_ssh.secret ADD COLUMN proxy text;

CREATE OR REPLACE VIEW tunnel_ssh.tunnels AS
	SELECT t.name, t.ssh_host, t.ssh_port, t.ssh_user,
		   f.remote_host, f.remote_port, f.local_port,
		   t.key_type, t.public_key, t.key_fingerprint,
		   t.host_key_fingerprint, t.host_key_pinned, t.enabled, t.created_at,
		   t.via,
		   t.next_public_key, t.next_key_fingerprint, t.rotation_started,
		   t.proxy
	FROM tunnel_ssh.tunnel t
		 LEFT JOIN tunnel_ssh.forward f ON f.tunnel = t.name;

DROP FUNCTION @extschema@.tunnel_create(text, text, text, int, int, text, int, text, text, text, boolean);
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
	via text DEFAULT NULL,
	restricted boolean DEFAULT true,
	proxy text DEFAULT NULL)
RETURNS text
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_create';
REVOKE ALL ON FUNCTION @extschema@.tunnel_create(text, text, text, int, int, text, int, text, text, text, boolean, text) FROM PUBLIC;

-- proxy => NULL keeps the proxy, as every argument of tunnel_alter; '' removes it.
DROP FUNCTION @extschema@.tunnel_alter(text, text, int, text, text, int, int, text);
CREATE FUNCTION @extschema@.tunnel_alter(
	name text,
	ssh_host text DEFAULT NULL,
	ssh_port int DEFAULT NULL,
	ssh_user text DEFAULT NULL,
	remote_host text DEFAULT NULL,
	remote_port int DEFAULT NULL,
	local_port int DEFAULT NULL,
	host_key_fingerprint text DEFAULT NULL,
	proxy text DEFAULT NULL)
RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_alter';
REVOKE ALL ON FUNCTION @extschema@.tunnel_alter(text, text, int, text, text, int, int, text, text) FROM PUBLIC;
