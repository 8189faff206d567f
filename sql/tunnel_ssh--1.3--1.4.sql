/* tunnel_ssh--1.3--1.4.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION tunnel_ssh UPDATE TO '1.4'" to load this file. \quit

-- OpenSSH user certificates (tunnel_certificate_set).  A certificate is
-- public: it lives beside the public key it certifies.  During a key
-- rotation the new key needs a certificate of its own: next_certificate,
-- which becomes certificate when the new key does (the worker's promotion
-- or anything else that moves next_key_fingerprint into key_fingerprint).
-- A certificate never outlives its key.
ALTER TABLE tunnel_ssh.tunnel ADD COLUMN certificate text,
							  ADD COLUMN next_certificate text;

-- An outbound proxy for the first hop (socks5://, socks5h:// or http://).
-- The URL, credentials and all, is kept in tunnel_ssh.secret beside the
-- private key, which no grant exposes; tunnel_ssh.tunnel, the tunnels view
-- and tunnel_status() (pg_monitor) show it without credentials.
ALTER TABLE tunnel_ssh.tunnel ADD COLUMN proxy text;
ALTER TABLE tunnel_ssh.secret ADD COLUMN proxy text;

CREATE FUNCTION tunnel_ssh.certificate_follows_key() RETURNS trigger
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
	IF NEW.key_fingerprint IS DISTINCT FROM OLD.key_fingerprint THEN
		IF NEW.key_fingerprint IS NOT DISTINCT FROM OLD.next_key_fingerprint THEN
			NEW.certificate := OLD.next_certificate;
		ELSIF NEW.certificate IS NOT DISTINCT FROM OLD.certificate THEN
			NEW.certificate := NULL;
		END IF;
	END IF;
	IF NEW.next_key_fingerprint IS DISTINCT FROM OLD.next_key_fingerprint
	   AND NEW.next_certificate IS NOT DISTINCT FROM OLD.next_certificate THEN
		NEW.next_certificate := NULL;
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER certificate_follows_key
	BEFORE UPDATE OF key_fingerprint, next_key_fingerprint ON tunnel_ssh.tunnel
	FOR EACH ROW EXECUTE FUNCTION tunnel_ssh.certificate_follows_key();

CREATE FUNCTION @extschema@.tunnel_certificate_set(name text, certificate text)
RETURNS void
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_certificate_set';
REVOKE ALL ON FUNCTION @extschema@.tunnel_certificate_set(text, text) FROM PUBLIC;

-- What a certificate says, NULLs for NULL.
CREATE FUNCTION tunnel_ssh.certificate_info(certificate text,
	OUT principals text[], OUT key_id text, OUT ca_fingerprint text,
	OUT valid_after timestamptz, OUT valid_before timestamptz,
	OUT validity text)
	LANGUAGE C STRICT STABLE
	AS 'MODULE_PATHNAME', 'tunnel_certificate_info';
-- Only tunnel_status() (SECURITY DEFINER, pg_monitor) needs it.
REVOKE ALL ON FUNCTION tunnel_ssh.certificate_info(text) FROM PUBLIC;

-- tunnel_public_key(name, restricted, what): what => 'authorized_keys'
-- (the line, as before), 'key' (the bare public key a CA signs),
-- 'next_key' (the pending key of a rotation, for its own certificate) or
-- 'principals' (the AuthorizedPrincipalsFile line for principal, by
-- default the tunnel's ssh_user).
DROP FUNCTION @extschema@.tunnel_public_key(text, boolean);
CREATE FUNCTION @extschema@.tunnel_public_key(name text,
											  restricted boolean DEFAULT true,
											  what text DEFAULT 'authorized_keys',
											  principal text DEFAULT NULL)
RETURNS text
	LANGUAGE C CALLED ON NULL INPUT STABLE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_public_key';
REVOKE ALL ON FUNCTION @extschema@.tunnel_public_key(text, boolean, text, text) FROM PUBLIC;

-- Status: what the certificate each tunnel logs in with says.  The
-- worker's shared-memory rows come from status_sessions (the C function
-- tunnel_status was until 1.3); the certificate from the catalog.
DROP VIEW tunnel_ssh.status;
DROP FUNCTION @extschema@.tunnel_status();
CREATE FUNCTION tunnel_ssh.status_sessions(
	OUT name text, OUT state text, OUT local_address text, OUT local_port int,
	OUT state_since timestamptz, OUT last_error text,
	OUT host_key_fingerprint text, OUT connect_attempts bigint,
	OUT active_connections int, OUT total_connections bigint,
	OUT bytes_in bigint, OUT bytes_out bigint, OUT key_fingerprint text,
	OUT rotation_pending boolean, OUT rotation_started timestamptz,
	OUT via text, OUT kex text, OUT host_key_algorithm text, OUT cipher text,
	OUT mac text, OUT extra_sessions int, OUT bastion text)
RETURNS SETOF record
	LANGUAGE C STRICT VOLATILE
	AS 'MODULE_PATHNAME', 'tunnel_status';
REVOKE ALL ON FUNCTION tunnel_ssh.status_sessions() FROM PUBLIC;

CREATE FUNCTION @extschema@.tunnel_status(
	OUT name text, OUT state text, OUT local_address text, OUT local_port int,
	OUT state_since timestamptz, OUT last_error text,
	OUT host_key_fingerprint text, OUT connect_attempts bigint,
	OUT active_connections int, OUT total_connections bigint,
	OUT bytes_in bigint, OUT bytes_out bigint, OUT key_fingerprint text,
	OUT rotation_pending boolean, OUT rotation_started timestamptz,
	OUT via text, OUT kex text, OUT host_key_algorithm text, OUT cipher text,
	OUT mac text, OUT extra_sessions int, OUT bastion text,
	OUT certificate_principals text[], OUT certificate_key_id text,
	OUT certificate_ca_fingerprint text,
	OUT certificate_valid_after timestamptz,
	OUT certificate_valid_before timestamptz,
	OUT certificate_validity text,
	OUT proxy text)
RETURNS SETOF record
	LANGUAGE sql VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS $$
SELECT s.*, c.principals, c.key_id, c.ca_fingerprint, c.valid_after,
	   c.valid_before, c.validity, t.proxy
  FROM tunnel_ssh.status_sessions() s
  LEFT JOIN tunnel_ssh.tunnel t ON t.name = s.name
  LEFT JOIN LATERAL tunnel_ssh.certificate_info(t.certificate) c ON true
$$;
CREATE VIEW tunnel_ssh.status AS SELECT * FROM @extschema@.tunnel_status();

REVOKE ALL ON FUNCTION @extschema@.tunnel_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.tunnel_status() TO pg_monitor;
GRANT SELECT ON tunnel_ssh.status TO pg_monitor;

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

-- Several bastions per tunnel: ssh_host => 'bastion-a, bastion-b:2222'.
-- The first bastion's host key is the tunnel's (host_key_fingerprint); the
-- others', trusted at first use, are kept here.  Pins serve all.
CREATE TABLE tunnel_ssh.bastion_host_key (
	tunnel text NOT NULL REFERENCES tunnel_ssh.tunnel (name)
		ON UPDATE CASCADE ON DELETE CASCADE,
	host text NOT NULL,
	port int NOT NULL,
	host_key_fingerprint text NOT NULL,
	host_key_algorithm text,
	recorded_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tunnel, host, port)
);
REVOKE ALL ON tunnel_ssh.bastion_host_key FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tunnel_ssh.bastion_host_key', '');

-- The bastions of a list as the worker reads it, in order.
CREATE FUNCTION tunnel_ssh.bastions(ssh_host text, ssh_port int,
	OUT "position" int, OUT host text, OUT port int)
RETURNS SETOF record
	LANGUAGE C STRICT IMMUTABLE
	AS 'MODULE_PATHNAME', 'tunnel_bastions';
REVOKE ALL ON FUNCTION tunnel_ssh.bastions(text, int) FROM PUBLIC;

-- What the worker knows of each bastion of each running tunnel.
CREATE FUNCTION tunnel_ssh.status_bastions(
	OUT tunnel text, OUT "position" int, OUT state text,
	OUT host_key_fingerprint text, OUT last_connected timestamptz,
	OUT last_error text, OUT failures int)
RETURNS SETOF record
	LANGUAGE C STRICT VOLATILE
	AS 'MODULE_PATHNAME', 'tunnel_status_bastions';
REVOKE ALL ON FUNCTION tunnel_ssh.status_bastions() FROM PUBLIC;

CREATE FUNCTION @extschema@.tunnel_bastion_status(
	OUT tunnel text, OUT "position" int, OUT host text, OUT port int,
	OUT state text, OUT host_key_fingerprint text,
	OUT last_connected timestamptz, OUT last_error text, OUT failures int)
RETURNS SETOF record
	LANGUAGE sql VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS $$
SELECT t.name, b.position, b.host, b.port,
	   coalesce(s.state, CASE WHEN t.enabled THEN 'standby' ELSE 'disabled' END),
	   coalesce(s.host_key_fingerprint,
				CASE WHEN b.position = 1 THEN t.host_key_fingerprint
					 ELSE k.host_key_fingerprint END),
	   s.last_connected, s.last_error, coalesce(s.failures, 0)
  FROM tunnel_ssh.tunnel t
  CROSS JOIN LATERAL tunnel_ssh.bastions(t.ssh_host, t.ssh_port) b
  LEFT JOIN tunnel_ssh.status_bastions() s
	ON s.tunnel = t.name AND s.position = b.position
  LEFT JOIN tunnel_ssh.bastion_host_key k
	ON k.tunnel = t.name AND k.host = b.host AND k.port = b.port
 ORDER BY t.name, b.position
$$;
CREATE VIEW tunnel_ssh.bastion_status AS
	SELECT * FROM @extschema@.tunnel_bastion_status();
REVOKE ALL ON FUNCTION @extschema@.tunnel_bastion_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.tunnel_bastion_status() TO pg_monitor;
REVOKE ALL ON tunnel_ssh.bastion_status FROM PUBLIC;
GRANT SELECT ON tunnel_ssh.bastion_status TO pg_monitor;
