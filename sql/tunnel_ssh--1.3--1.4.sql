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
	OUT mac text, OUT extra_sessions int)
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
	OUT mac text, OUT extra_sessions int,
	OUT certificate_principals text[], OUT certificate_key_id text,
	OUT certificate_ca_fingerprint text,
	OUT certificate_valid_after timestamptz,
	OUT certificate_valid_before timestamptz,
	OUT certificate_validity text)
RETURNS SETOF record
	LANGUAGE sql VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS $$
SELECT s.*, c.principals, c.key_id, c.ca_fingerprint, c.valid_after,
	   c.valid_before, c.validity
  FROM tunnel_ssh.status_sessions() s
  LEFT JOIN tunnel_ssh.tunnel t ON t.name = s.name
  LEFT JOIN LATERAL tunnel_ssh.certificate_info(t.certificate) c ON true
$$;
CREATE VIEW tunnel_ssh.status AS SELECT * FROM @extschema@.tunnel_status();

REVOKE ALL ON FUNCTION @extschema@.tunnel_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.tunnel_status() TO pg_monitor;
GRANT SELECT ON tunnel_ssh.status TO pg_monitor;
