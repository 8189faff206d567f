-- SQL API and input validation.  Committed tunnels point at 127.0.0.1:9,
-- where nothing listens, so the worker never leaves this machine.
\set VERBOSITY default
CREATE EXTENSION tunnel_ssh;

SELECT tunnel_create('t1', '127.0.0.1', '127.0.0.1', ssh_port => 9, local_port => 50100)
  ~ '^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]+=* tunnel_ssh:t1$' AS ed25519_line;
SELECT tunnel_create('t2', '127.0.0.1', '::1', 6432, 9, 'svc', NULL, 'ecdsa')
  ~ '^ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABB[A-Za-z0-9+/]+=* tunnel_ssh:t2$' AS ecdsa_line;
SELECT tunnel_create('t3', '127.0.0.1', 'db.internal', ssh_port => 9, key_type => 'rsa')
  ~ '^ssh-rsa AAAAB3NzaC1yc2E[A-Za-z0-9+/]+=* tunnel_ssh:t3$' AS rsa_line;
SELECT name, ssh_host, ssh_port, ssh_user, remote_host, remote_port, local_port,
       key_type, key_fingerprint ~ '^SHA256:[A-Za-z0-9+/]{43}$' AS fp_ok,
       public_key = tunnel_public_key(name) AS same_line, host_key_pinned
  FROM tunnel_ssh.tunnels ORDER BY name;

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

-- privileges
CREATE ROLE regress_plain;
SET ROLE regress_plain;
SELECT tunnel_create('p', '127.0.0.1', 'db');
SELECT tunnel_public_key('t1');
SELECT tunnel_drop('t1');
SELECT * FROM tunnel_ssh.secret;
RESET ROLE;
DROP ROLE regress_plain;

SELECT tunnel_public_key('nope');
SELECT tunnel_drop('nope');
SELECT tunnel_drop('t1'), tunnel_drop('t2'), tunnel_drop('t3');
SELECT count(*) FROM tunnel_ssh.tunnel;
SELECT count(*) FROM tunnel_ssh.secret;
