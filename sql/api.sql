-- SQL API and input validation.  Committed tunnels point at 127.0.0.1:9,
-- where nothing listens, so the worker never leaves this machine.
\set VERBOSITY default
CREATE EXTENSION tunnel_ssh;

-- The line is restricted to the tunnel's targets, with a forced command.
SELECT regexp_replace(tunnel_create('t1', '127.0.0.1', '127.0.0.1', ssh_port => 9, local_port => 50100),
                      ' AAAA[A-Za-z0-9+/]+=* ', ' <key> ') AS restricted_line;
SELECT tunnel_create('t2', '127.0.0.1', '::1', 6432, 9, 'svc', NULL, 'ecdsa', restricted => false)
  ~ '^ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABB[A-Za-z0-9+/]+=* tunnel_ssh:t2$' AS ecdsa_line;
-- The NOTICE about ssh-rsa depends on the libssh2 version (e2e checks it).
SET client_min_messages = warning;
SELECT tunnel_create('t3', '127.0.0.1', 'db.internal', ssh_port => 9, key_type => 'rsa', restricted => false)
  ~ '^ssh-rsa AAAAB3NzaC1yc2E[A-Za-z0-9+/]+=* tunnel_ssh:t3$' AS rsa_line;
RESET client_min_messages;
SELECT tunnel_public_key('t1', restricted => false)
  ~ '^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]+=* tunnel_ssh:t1$' AS ed25519_line;
SELECT regexp_replace(tunnel_public_key('t2'), ' AAAA[A-Za-z0-9+/]+=* ', ' <key> ') AS ipv6_target;
-- Which port is picked depends on what else listens on this machine: only
-- that it comes from tunnel_ssh.port_range is shown.
SELECT name, ssh_host, ssh_port, ssh_user, remote_host, remote_port,
       CASE WHEN name = 't1' THEN local_port::text
            WHEN local_port BETWEEN 50000 AND 50999 THEN 'port_range' END AS local_port,
       key_type, key_fingerprint ~ '^SHA256:[A-Za-z0-9+/]{43}$' AS fp_ok,
       public_key = tunnel_public_key(name, false) AS same_line,
       tunnel_public_key(name) LIKE '%' || public_key AS restricted_ends_with_key,
       host_key_pinned
  FROM tunnel_ssh.tunnels ORDER BY name;
SELECT count(DISTINCT local_port) AS distinct_local_ports FROM tunnel_ssh.tunnels;

-- A change of targets says that the line changed, and gives the new one.
\set VERBOSITY terse
SELECT tunnel_forward_add('t2', 'db2.internal', 5433, local_port => 50110);
\set VERBOSITY default
SELECT regexp_replace(tunnel_public_key('t2'), ' AAAA[A-Za-z0-9+/]+=* ', ' <key> ') AS two_targets;
\set VERBOSITY terse
SELECT tunnel_forward_drop('t2', 50110);
\set VERBOSITY default
SELECT regexp_replace(tunnel_public_key('t2'), ' AAAA[A-Za-z0-9+/]+=* ', ' <key> ') AS one_target;
-- A jump tunnel's line permits the bastions reached through it.
BEGIN;
SET client_min_messages = warning;
SELECT tunnel_create('inner', '10.1.2.3', 'db.inner', ssh_port => 2222, via => 't1') IS NOT NULL AS created;
RESET client_min_messages;
SELECT regexp_replace(tunnel_public_key('t1'), ' AAAA[A-Za-z0-9+/]+=* ', ' <key> ') AS jump_line;
ROLLBACK;

-- Host key pins: alone, with the algorithm, as ssh-keygen -l prints them,
-- several at once; stored in one canonical form.
BEGIN;
SELECT tunnel_alter('t1', host_key_fingerprint => 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 't1';
SELECT tunnel_alter('t1', host_key_fingerprint => 'ssh-ed25519 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 't1';
SELECT tunnel_alter('t1', host_key_fingerprint => '256 SHA256:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA root@bastion (ECDSA)');
SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 't1';
SELECT tunnel_alter('t1', host_key_fingerprint => E'256 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA bastion (ED25519)\n3072 SHA256:CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCA bastion (RSA)\n');
SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 't1';
SELECT tunnel_alter('t1', host_key_fingerprint => 'rsa-sha2-512 SHA256:CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCA, SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 't1';
ROLLBACK;
SELECT tunnel_alter('t1', host_key_fingerprint => '1024 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA bastion (DSA)');
SELECT tunnel_alter('t1', host_key_fingerprint => '255 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA bastion (ECDSA)');
SELECT tunnel_alter('t1', host_key_fingerprint => 'ssh-ed25519 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA SHA256:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA');
SELECT tunnel_alter('t1', host_key_fingerprint => ', ,');
SELECT tunnel_alter('t1', host_key_fingerprint => 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA, ssh-ed25519 SHA256:x');

-- bad input: each an error, nothing changed
SELECT tunnel_create(NULL, '127.0.0.1', 'db');
SELECT tunnel_create('', '127.0.0.1', 'db');
SELECT tunnel_create(repeat('a', 64), '127.0.0.1', 'db');
SELECT tunnel_create('a.b', '127.0.0.1', 'db');
SELECT tunnel_create('t1', '127.0.0.1', 'db');
SELECT tunnel_create('x', '', 'db');
SELECT tunnel_create('x', '127.0.0.1', repeat('a', 254));
SELECT tunnel_create('x', '127.0.0.1', 'under_score.example');
SELECT tunnel_create('x', '256.1.1.1', 'db');
SELECT tunnel_create('x', '127.0.0.1', 'db', remote_port => 0);
SELECT tunnel_create('x', '127.0.0.1', 'db', ssh_port => 65536);
SELECT tunnel_create('x', '127.0.0.1', 'db', local_port => 50100);
SELECT tunnel_create('x', '127.0.0.1', 'db', local_port => 1023);
SELECT tunnel_create('x', '127.0.0.1', 'db', key_type => 'dsa');
SELECT tunnel_create('x', '127.0.0.1', 'db', host_key_fingerprint => 'SHA256:short');
SELECT tunnel_create('x', '127.0.0.1', 'db', ssh_user => 'a@b');
SET tunnel_ssh.port_range = '2000';
SET tunnel_ssh.port_range = '50100-50100';
SELECT tunnel_create('x', '127.0.0.1', 'db');
RESET tunnel_ssh.port_range;
SELECT count(*) FROM tunnel_ssh.tunnel;

-- a valid host name is accepted (rolled back: no DNS lookup ever happens)
BEGIN;
SELECT tunnel_create('named', 'bastion.example.com', 'db-1.internal', ssh_port => 9) IS NOT NULL AS created;
ROLLBACK;

-- day-2: bad input is refused and changes nothing
SELECT md5(string_agg(t::text, ',' ORDER BY name)) AS before FROM tunnel_ssh.tunnel t \gset
SELECT tunnel_alter('nope', ssh_port => 22);
SELECT tunnel_alter(NULL);
SELECT tunnel_alter('t1', ssh_port => 0);
SELECT tunnel_alter('t1', ssh_host => 'bad host');
SELECT tunnel_alter('t1', ssh_host => '127.0.0.1, ');
SELECT tunnel_alter('t1', ssh_host => '127.0.0.2, 127.0.0.3:99999');
SELECT tunnel_alter('t1', ssh_host => '127.0.0.2:9, 127.0.0.2');
SELECT tunnel_alter('t1', ssh_host => '[::1');
SELECT tunnel_alter('t1', ssh_host => 'a,b,c,d,e,f,g,h,i');
SELECT tunnel_alter('t1', remote_host => '');
SELECT tunnel_alter('t1', local_port => 80);
SELECT tunnel_alter('t1', ssh_user => 'a b');
SELECT tunnel_alter('t1', host_key_fingerprint => 'SHA256:x');
SELECT tunnel_rotate_key('t1', 'dsa');
SELECT tunnel_rotate_key('nope');
SELECT tunnel_rotate_cancel('t1');
SELECT tunnel_disable(NULL);
SELECT tunnel_enable('nope');
SELECT tunnel_host_key_reset('nope');
SELECT md5(string_agg(t::text, ',' ORDER BY name)) = :'before' AS unchanged FROM tunnel_ssh.tunnel t;

-- day-2: changes that are valid
\set VERBOSITY terse
SELECT tunnel_alter('t1', remote_host => 'db2.internal', remote_port => 6543, local_port => 50101);
\set VERBOSITY default
SELECT tunnel_alter('t1', ssh_user => 'other', host_key_fingerprint => 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
SELECT tunnel_alter('t1', ssh_host => '127.0.0.2');
SELECT ssh_host, ssh_user, remote_host, remote_port, local_port, host_key_fingerprint, host_key_pinned
  FROM tunnel_ssh.tunnels WHERE name = 't1';
-- Several bastions: an ordered list, ssh_port for those without a port.
SELECT tunnel_alter('t1', ssh_host => '127.0.0.2, 127.0.0.3:2222 , [::1]:2200, ::2');
SELECT position, host, port FROM tunnel_bastion_status() WHERE tunnel = 't1';
SELECT tunnel_alter('t1', ssh_host => '127.0.0.2');
\set VERBOSITY terse
SELECT tunnel_alter('t1', ssh_host => '127.0.0.1', remote_host => '127.0.0.1', remote_port => 5432, local_port => 50100);
\set VERBOSITY default
SET client_min_messages = warning;  -- the NOTICEs name random fingerprints
SELECT tunnel_rotate_key('t1') ~ '^restrict,port-forwarding,permitopen="127.0.0.1:5432",permitlisten="NONE:1",command="[^"]*" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]+=* tunnel_ssh:t1:[0-9]{8}$' AS new_line;
SELECT tunnel_rotate_key('t3', restricted => false) ~ '^ssh-rsa AAAAB3NzaC1yc2E[A-Za-z0-9+/]+=* tunnel_ssh:t3:[0-9]{8}$' AS new_bare_line;
SELECT tunnel_rotate_cancel('t3');
SELECT next_key_fingerprint ~ '^SHA256:' AND next_key_fingerprint <> key_fingerprint AS pending,
       rotation_started IS NOT NULL AS since
  FROM tunnel_ssh.tunnel WHERE name = 't1';
\set VERBOSITY terse
SELECT tunnel_rotate_key('t1');
\set VERBOSITY default
SELECT tunnel_rotate_cancel('t1');
RESET client_min_messages;
SELECT next_key_fingerprint IS NULL AS cancelled FROM tunnel_ssh.tunnel WHERE name = 't1';
SELECT next_private_key IS NULL AS key_erased FROM tunnel_ssh.secret WHERE tunnel = 't1';
SELECT tunnel_disable('t1');
SELECT enabled FROM tunnel_ssh.tunnel WHERE name = 't1';
SELECT tunnel_enable('t1');
SELECT tunnel_host_key_reset('t1');
SELECT host_key_fingerprint IS NULL AND NOT host_key_pinned AS forgotten
  FROM tunnel_ssh.tunnel WHERE name = 't1';
SELECT tunnel_test('nope');

-- tunnel_server_create where no wrapper was installed (this database has
-- none): an error that names the extension to create, and nothing written
SELECT count(*) AS wrappers FROM pg_foreign_data_wrapper;
SELECT tunnel_server_create('s1', 't1', 'postgres');
SELECT tunnel_server_create('s1', 't1', 'postgres', fdw => 'dblink_fdw');
SELECT tunnel_server_create('s1', 't1', 'postgres', fdw => 'other_fdw');
SELECT (SELECT count(*) FROM tunnel_ssh.server) AS servers,
       (SELECT count(*) FROM pg_foreign_server) AS foreign_servers;

-- privileges
CREATE ROLE regress_plain;
SET ROLE regress_plain;
SELECT tunnel_create('p', '127.0.0.1', 'db');
SELECT tunnel_public_key('t1');
SELECT tunnel_drop('t1');
SELECT * FROM tunnel_ssh.secret;
SELECT tunnel_alter('t1', ssh_port => 2222);
SELECT tunnel_rotate_key('t1');
SELECT tunnel_disable('t1');
SELECT * FROM tunnel_test('t1');
SELECT * FROM tunnel_forward_status();
RESET ROLE;
DROP ROLE regress_plain;

SELECT tunnel_public_key('nope');
SELECT tunnel_drop('nope');
SELECT tunnel_drop('t1'), tunnel_drop('t2'), tunnel_drop('t3');
SELECT count(*) FROM tunnel_ssh.tunnel;
SELECT count(*) FROM tunnel_ssh.secret;

-- tunnel_ssh.ciphers: OpenSSH's Ciphers syntax, checked before it is stored
ALTER SYSTEM SET tunnel_ssh.ciphers = '+aes256-cbc';
ALTER SYSTEM SET tunnel_ssh.ciphers = '-aes128-gcm@openssh.com,aes256-gcm@openssh.com';
ALTER SYSTEM SET tunnel_ssh.ciphers = 'aes128-gmc';
ALTER SYSTEM SET tunnel_ssh.ciphers = '';
ALTER SYSTEM RESET tunnel_ssh.ciphers;
SELECT setting = boot_val AS ciphers_default FROM pg_settings WHERE name = 'tunnel_ssh.ciphers';
SHOW tunnel_ssh.bulk_keystream;

-- Who uses the tunnels, and their counters (test/connections.sh checks
-- them with real clients; here only what needs none).  No client is here.
SELECT count(*) AS connections FROM tunnel_ssh.connections;
SHOW tunnel_ssh.log_connections;
SHOW tunnel_ssh.max_tracked_connections;
SELECT tunnel_stat_reset('nope');
SELECT tunnel_stat_reset();
SELECT count(*) AS after_reset FROM tunnel_stat() WHERE connections > 0;
-- Readable by pg_monitor, not by PUBLIC; resetting is the superuser's.
SELECT p.obj,
       has_function_privilege('pg_monitor', p.obj, 'EXECUTE') AS pg_monitor,
       has_function_privilege('public', p.obj, 'EXECUTE') AS public
  FROM unnest(ARRAY['tunnel_connections()', 'tunnel_stat()',
                    'tunnel_stat_reset(text)']) AS p(obj);
SELECT v.obj,
       has_table_privilege('pg_monitor', v.obj, 'SELECT') AS pg_monitor,
       has_table_privilege('public', v.obj, 'SELECT') AS public
  FROM unnest(ARRAY['tunnel_ssh.connections', 'tunnel_ssh.stat_tunnels',
                    'tunnel_ssh.stat_forwards']) AS v(obj);
