/* tunnel_ssh--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION tunnel_ssh UPDATE TO '1.2'" to load this file. \quit

-- Host key algorithms: since 1.2 sessions ask for host keys in OpenSSH's
-- order (ssh-ed25519, ECDSA, RSA), so that the fingerprint recorded is the
-- one "ssh" shows.  A host key recorded before was negotiated in libssh2's
-- own order (ECDSA first); those tunnels keep asking in that order, or they
-- would see another of the bastion's keys and refuse it as a mismatch.  The
-- worker records the algorithm with every host key it records from now on.
ALTER TABLE tunnel_ssh.tunnel ADD COLUMN host_key_algorithms text;
UPDATE tunnel_ssh.tunnel
	SET host_key_algorithms = 'ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,'
							  'ssh-ed25519,rsa-sha2-512,rsa-sha2-256,ssh-rsa'
	WHERE host_key_fingerprint IS NOT NULL;

-- A host key forgotten or pinned by hand (tunnel_alter, tunnel_host_key_reset,
-- an UPDATE) takes its algorithm preference with it.
CREATE FUNCTION tunnel_ssh.host_key_changed() RETURNS trigger
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
	IF NEW.host_key_fingerprint IS DISTINCT FROM OLD.host_key_fingerprint
	   AND NEW.host_key_algorithms IS NOT DISTINCT FROM OLD.host_key_algorithms THEN
		NEW.host_key_algorithms := NULL;
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER host_key_changed
	BEFORE UPDATE OF host_key_fingerprint ON tunnel_ssh.tunnel
	FOR EACH ROW EXECUTE FUNCTION tunnel_ssh.host_key_changed();

-- Status: the methods each session negotiated, and the extra sessions
-- (lanes) a tunnel has open while opens wait on its own.
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
	OUT via text,
	OUT kex text,
	OUT host_key_algorithm text,
	OUT cipher text,
	OUT mac text,
	OUT extra_sessions int)
RETURNS SETOF record
	LANGUAGE C STRICT VOLATILE
	AS 'MODULE_PATHNAME', 'tunnel_status';
CREATE VIEW tunnel_ssh.status AS SELECT * FROM @extschema@.tunnel_status();

REVOKE ALL ON FUNCTION @extschema@.tunnel_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.tunnel_status() TO pg_monitor;
GRANT SELECT ON tunnel_ssh.status TO pg_monitor;

-- authorized_keys lines restricted to the tunnel's targets: tunnel_create,
-- tunnel_public_key and tunnel_rotate_key return
-- restrict,port-forwarding,permitopen="host:port",...,command="..." KEY
-- unless called with restricted => false.
DROP FUNCTION @extschema@.tunnel_create(text, text, text, int, int, text, int, text, text, text);
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
	restricted boolean DEFAULT true)
RETURNS text
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_create';

DROP FUNCTION @extschema@.tunnel_public_key(text);
CREATE FUNCTION @extschema@.tunnel_public_key(name text,
											  restricted boolean DEFAULT true)
RETURNS text
	LANGUAGE C CALLED ON NULL INPUT STABLE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_public_key';

DROP FUNCTION @extschema@.tunnel_rotate_key(text, text);
CREATE FUNCTION @extschema@.tunnel_rotate_key(name text,
											  key_type text DEFAULT NULL,
											  restricted boolean DEFAULT true)
RETURNS text
	LANGUAGE C CALLED ON NULL INPUT VOLATILE
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'tunnel_rotate_key';

REVOKE ALL ON FUNCTION @extschema@.tunnel_create(text, text, text, int, int, text, int, text, text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_public_key(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.tunnel_rotate_key(text, text, boolean) FROM PUBLIC;

-- Foreign servers made by tunnel_server_create use the tunnels' Unix
-- sockets; the worker keeps their host pointing at this data directory's
-- socket directory, and learns of new ones (a restore) at commit.
CREATE TRIGGER catalog_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tunnel_ssh.server
	FOR EACH STATEMENT EXECUTE FUNCTION tunnel_ssh.catalog_changed();
