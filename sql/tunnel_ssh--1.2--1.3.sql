/* tunnel_ssh--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION tunnel_ssh UPDATE TO '1.3'" to load this file. \quit

-- A foreign server made by tunnel_server_create and then dropped (by hand,
-- with its wrapper, or by DROP OWNED) leaves no row behind in
-- tunnel_ssh.server: a server made again under its name is not the
-- tunnel's, and neither the worker nor tunnel_drop(cascade) may touch it.
-- SECURITY DEFINER: whoever may drop a server may run this, and only this
-- function writes tunnel_ssh.server for them.
CREATE FUNCTION tunnel_ssh.server_dropped() RETURNS event_trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	AS $$
BEGIN
	IF pg_catalog.to_regclass('tunnel_ssh.server') IS NULL THEN
		RETURN;
	END IF;
	DELETE FROM tunnel_ssh.server s
	 USING pg_catalog.pg_event_trigger_dropped_objects() d
	 WHERE d.object_type = 'server'
	   AND d.object_identity = pg_catalog.quote_ident(s.server);
END
$$;
REVOKE ALL ON FUNCTION tunnel_ssh.server_dropped() FROM PUBLIC;

CREATE EVENT TRIGGER tunnel_ssh_server_dropped ON sql_drop
	WHEN TAG IN ('DROP SERVER', 'DROP FOREIGN DATA WRAPPER', 'DROP EXTENSION',
				 'DROP OWNED')
	EXECUTE FUNCTION tunnel_ssh.server_dropped();
