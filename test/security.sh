#!/usr/bin/env bash
# Security checks with real parts: privileges (42501 for anyone not a
# superuser, read-only status for pg_monitor), no private key in any log or
# view, loopback-only listeners, an impostor bastion, and hostile catalog rows
# written by hand.  One local server (log_min_messages = debug5, every
# statement logged), one private database, one real sshd, all on 127.0.0.1.
# Section 7 checks the socket directory before each bind, and shares it
# with a second local server.  Prints "N passed, N failed" last.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
# Below the ephemeral range (32768-60999), where an outgoing connection could
# hold a tunnel's port: servers 24432/24433/24222, tunnels 24500-24539.
LPORT=24432 PPORT=24433 SPORT=24222
LOCAL_CONF="tunnel_ssh.port_range = '24500-24539'
log_min_messages = debug5
log_statement = 'all'"
. "$(dirname "$0")/lib.sh"
harness_start
me=$(id -un)
t_start=$(date +%s)
pwned=/tmp/tunnel_ssh_pwned.$$
rm -f "$pwned"

# The impostor bastion of section 4, stopped at exit with everything else.
start_impostor() { /usr/sbin/sshd -f "$dir/impostor/sshd_config" -E "$dir/impostor/log"; }
kill_impostor() { kill_sshd_by_config "$dir/impostor/sshd_config"; }
# The second local server of section 7 too.
trap 'kill_impostor; $B/pg_ctl -D "$dir/local2" stop -m immediate >/dev/null 2>&1; cleanup' EXIT

# psql as a given role, errors with their SQLSTATE ("ERROR:  42501: ...").
as_role() { psql -X -q -h "$dir" -p $LPORT -U "$1" -d postgres -v VERBOSITY=verbose -Atc "$2" 2>&1; }
psql_priv() { psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -Atc "$1"; }
worker_pid() { lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'"; }
last_error() { lsql "SELECT last_error FROM tunnel_status() WHERE name = '$1'"; }
# Every table of the catalog and the foreign servers, as one digest.
catalog_sum() {
  lsql "SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
          SELECT 't' || t::text AS x FROM tunnel_ssh.tunnel t
          UNION ALL SELECT 'f' || f::text FROM tunnel_ssh.forward f
          UNION ALL SELECT 's' || s::text FROM tunnel_ssh.secret s
          UNION ALL SELECT 'v' || v::text FROM tunnel_ssh.server v
          UNION ALL SELECT 'p' || srvname || coalesce(srvoptions::text, '') FROM pg_foreign_server) q"
}

# RSA keys need ssh-rsa on OpenSSH 9 with libssh2 1.10 (see README).
kill_sshd
echo "PubkeyAcceptedAlgorithms +ssh-rsa" >> sshd/sshd_config
start_sshd
psql_priv "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g;
           CREATE TABLE stopflag (x int);" >/dev/null
lsql "CREATE EXTENSION tunnel_ssh; CREATE EXTENSION postgres_fdw;"

# --- tunnels of each key type, a second forward, a bad one, one to drop ---
declare -A PORT=([ed]=24501 [ec]=24502 [rs]=24503)
for t in ed ec rs; do
  case $t in ed) kt=ed25519 ;; ec) kt=ecdsa ;; rs) kt=rsa ;; esac
  lsql "SELECT tunnel_create('$t', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => ${PORT[$t]}, key_type => '$kt')" \
    >> sshd/authorized_keys 2>/dev/null
done
lsql "SELECT tunnel_forward_add('ed', '127.0.0.1', $PPORT, 24504)" >/dev/null
# Nothing listens on port 9: unreachable, and clients through it fail.
lsql "SELECT tunnel_create('bad', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => 9, ssh_user => '$me', local_port => 24505)" >/dev/null
# Never authorized: auth_failed, then dropped with its key.
gone_pub=$(lsql "SELECT tunnel_create('gone', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => 24506)")
for t in ed ec rs; do
  check "$t tunnel connects" wait_state $t connected 20
done
check "tunnel to a closed port: unreachable" wait_state bad unreachable 15
check "tunnel with an unknown key: auth_failed" wait_state gone auth_failed 15

# The private keys, kept in memory only, for the scan of section 2.
declare -A KEY
for t in ed ec rs gone; do
  KEY[$t]=$(lsql "SELECT private_key FROM tunnel_ssh.secret WHERE tunnel = '$t'")
done
# Their base64 bodies in 16-character chunks, what the scans look for.
pubs=$(lsql "SELECT string_agg(public_key, E'\n') FROM tunnel_ssh.tunnel")$'\n'$gone_pub
chunks=() public_chunks=0
for t in "${!KEY[@]}"; do
  body=$(grep -v -- '-----' <<<"${KEY[$t]}" | tr -d '\n\r')
  for ((i = 0; i + 16 <= ${#body}; i += 16)); do
    c=${body:i:16}
    # An RSA PKCS#8 key holds the public modulus at the same base64
    # alignment as the authorized_keys line: such chunks are not secret.
    if grep -qF -- "$c" <<<"$pubs"; then public_chunks=$((public_chunks+1)); continue; fi
    chunks+=("$c")
  done
done
check "each private key is PKCS#8 PEM" \
  bash -c '[ "$(grep -c "BEGIN PRIVATE KEY" <<<"$1")" = 4 ]' _ "$(printf '%s\n' "${KEY[@]}")"

# Traffic and errors while every statement and debug5 message is logged.
for t in ed ec rs; do
  check "query through the $t tunnel" test "$(psql_via ${PORT[$t]} "SELECT count(*) FROM items")" = 1000
done
check "query through the second forward" test "$(psql_via 24504 "SELECT sum(id) FROM items")" = 500500
psql_via 24501 "SELECT 1/0" >/dev/null 2>&1
$B/pgbench -n -S -c 4 -j 2 -t 50 -h 127.0.0.1 -p 24503 postgres >/dev/null 2>&1 || true
check "client through the unreachable tunnel fails" \
  bash -c "! psql -X -h 127.0.0.1 -p 24505 -d 'dbname=postgres connect_timeout=10' -Atc 'SELECT 1' >/dev/null 2>&1"
lsql "SELECT tunnel_drop('gone')" >/dev/null
check "dropped tunnel's key is gone from the catalog" \
  test "$(lsql "SELECT count(*) FROM tunnel_ssh.secret WHERE tunnel = 'gone'")" = 0

# ======================================================================
# 1. Privileges: a plain login role and a pg_monitor member
# ======================================================================
lsql "CREATE ROLE plain LOGIN; CREATE ROLE mon LOGIN; GRANT pg_monitor TO mon;" >/dev/null
stmts=(
  "tunnel_create|SELECT tunnel_create('evil', '127.0.0.1', '127.0.0.1', $PPORT, $SPORT, '$me', 24510)"
  "tunnel_drop|SELECT tunnel_drop('ed')"
  "tunnel_public_key|SELECT tunnel_public_key('ed')"
  "tunnel_forward_add|SELECT tunnel_forward_add('ed', '127.0.0.1', $PPORT, 24511)"
  "tunnel_forward_drop|SELECT tunnel_forward_drop('ed', 24504)"
  "tunnel_server_create|SELECT tunnel_server_create('evil_srv', 'ed', 'postgres', 24501)"
  "tunnel_alter|SELECT tunnel_alter('ec', remote_port => 5432)"
  "tunnel_disable|SELECT tunnel_disable('ed')"
  "tunnel_enable|SELECT tunnel_enable('ed')"
  "tunnel_host_key_reset|SELECT tunnel_host_key_reset('ed')"
  "tunnel_rotate_key|SELECT tunnel_rotate_key('ed')"
  "tunnel_rotate_cancel|SELECT tunnel_rotate_key('ec'); SELECT tunnel_rotate_cancel('ec')"
  "tunnel_test|SELECT * FROM tunnel_test('ed')"
  "SELECT from tunnel_ssh.secret|SELECT private_key FROM tunnel_ssh.secret"
  "SELECT next key from tunnel_ssh.secret|SELECT next_private_key FROM tunnel_ssh.secret"
  "UPDATE tunnel_ssh.tunnel|UPDATE tunnel_ssh.tunnel SET ssh_host = '127.0.0.3'"
  "INSERT INTO tunnel_ssh.tunnel|INSERT INTO tunnel_ssh.tunnel (name, ssh_host, ssh_port, ssh_user, key_type, public_key, key_fingerprint) VALUES ('evil', '127.0.0.1', 22, 'x', 'ed25519', 'x', 'x')"
  "DELETE FROM tunnel_ssh.tunnel|DELETE FROM tunnel_ssh.tunnel"
  "UPDATE tunnel_ssh.forward|UPDATE tunnel_ssh.forward SET remote_host = '127.0.0.3'"
  "UPDATE tunnel_ssh.secret|UPDATE tunnel_ssh.secret SET private_key = 'x'"
)
sum_before=$(catalog_sum)
# Control: each statement works for a superuser (rolled back), so a refusal
# below is the privilege check and not a bad argument.
for s in "${stmts[@]}"; do
  out=$(lsql "BEGIN; ${s#*|}; ROLLBACK;" 2>&1)
  rc=$?
  check "control: superuser may run ${s%%|*} (rolled back)" test $rc = 0 ||
    echo "$out" | sed 's/^/# /'
done
for role in plain mon; do
  for s in "${stmts[@]}"; do
    out=$(as_role $role "${s#*|}")
    check "$role: ${s%%|*} refused with 42501" grep -q "ERROR:  42501:" <<<"$out" ||
      echo "$out" | sed 's/^/# /'
  done
done
check "catalog unchanged after every refused attempt" test "$(catalog_sum)" = "$sum_before"
check "no foreign server was made" test "$(lsql "SELECT count(*) FROM pg_foreign_server")" = 0
check "tunnels still connected after the attempts" \
  test "$(lsql "SELECT string_agg(state, ',' ORDER BY name) FROM tunnel_status() WHERE name IN ('ed', 'ec', 'rs')")" = "connected,connected,connected"

# Which extension functions a plain role may execute at all: triggers only.
exec_fns=$(lsql "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
                 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'tunnel_ssh') AND d.classid = 'pg_proc'::regclass
                   AND has_function_privilege('plain', p.oid, 'EXECUTE') AND p.prorettype <> 'trigger'::regtype")
echo "# non-trigger functions a plain role may execute: ${exec_fns:-none}"
check "a plain role can execute no API function" test -z "$exec_fns"

for v in tunnel_ssh.status tunnel_ssh.tunnels tunnel_ssh.forward_status "tunnel_status()" "tunnel_forward_status()"; do
  out=$(as_role mon "SELECT count(*) FROM $v")
  check "mon (pg_monitor) reads $v" test "$out" = "$(lsql "SELECT count(*) FROM $v")"
  out=$(as_role plain "SELECT count(*) FROM $v")
  check "plain role cannot read $v (42501)" grep -q "ERROR:  42501:" <<<"$out"
done
check "mon sees the states" \
  test "$(as_role mon "SELECT state FROM tunnel_ssh.status WHERE name = 'ed'")" = connected
cols=$(lsql "SELECT string_agg(table_name || '.' || column_name, ' ') FROM information_schema.columns
             WHERE table_schema = 'tunnel_ssh' AND table_name IN ('status', 'tunnels')
               AND column_name ~* 'private|secret'")
check "no private key column in tunnel_ssh.status or tunnel_ssh.tunnels" test -z "$cols"
mon_out=$(as_role mon "SELECT * FROM tunnel_ssh.status; SELECT * FROM tunnel_ssh.tunnels")
check "what mon reads holds no PEM text" bash -c '! grep -qE "PRIVATE|BEGIN" <<<"$1"' _ "$mon_out"

# ======================================================================
# 3. Listeners bind to loopback only
# ======================================================================
check "tunnel port answers on 127.0.0.1" port_open 24501
err=$(bash -c 'exec 3<>/dev/tcp/127.0.0.2/24501' 2>&1)
rc=$?
echo "# connect to 127.0.0.2:24501: $(tr '\n' ' ' <<<"${err:-connected}")"
check "same port on 127.0.0.2 is refused" bash -c '[ "$1" != 0 ] && grep -q "refused" <<<"$2"' _ $rc "$err"
listeners=$(ss -Hltn '( sport >= :24500 and sport <= :24539 )' | awk '{print $4}')
echo "# listeners: $(tr '\n' ' ' <<<"$listeners")"
check "every tunnel listener (5) is on 127.0.0.1" \
  bash -c '[ "$(grep -c . <<<"$1")" = 5 ] && ! grep -qv "^127\.0\.0\.1:" <<<"$1"' _ "$listeners"

# ======================================================================
# 4. Host key mismatch: an impostor bastion on the same port
# ======================================================================
real_fp=$(ssh-keygen -l -f sshd/host_key.pub | awk '{print $2}')
check "ed's recorded host key is the bastion's" \
  test "$(lsql "SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'ed'")" = "$real_fp"
psql_priv "ALTER SYSTEM SET log_connections = on" >/dev/null
psql_priv "SELECT pg_reload_conf()" >/dev/null
# A new session reads the configuration file itself: on once SHOW says so.
log_connections_on() { test "$(psql_priv "SHOW log_connections")" = on; }
wait_for 10 log_connections_on
conn_lines() { grep -c "connection received: host=127.0.0.1" private.log; }
more_conn_lines() { test "$(conn_lines)" -gt "$1"; }
c0=$(conn_lines)
psql_via 24501 "SELECT 1" >/dev/null
check "log_connections counts a connection through the tunnel" wait_for 10 more_conn_lines "$c0"

mkdir -p impostor
ssh-keygen -q -t ed25519 -N '' -f impostor/host_key
fake_fp=$(ssh-keygen -l -f impostor/host_key.pub | awk '{print $2}')
sed -e "s|^HostKey .*|HostKey $dir/impostor/host_key|" -e "s|^PidFile .*|PidFile $dir/impostor/sshd.pid|" \
  sshd/sshd_config > impostor/sshd_config
swap_sshd start_impostor
check "impostor: ed goes to host_key_mismatch" wait_state ed host_key_mismatch 20
# The loss of the session and the mismatch are two failures: ed's next
# attempt is 10-20 s after the mismatch.  The clients below come within it,
# and must not bring it forward (sshd penalises connections it closes
# before authentication).  A client forwarded to the private database would
# be logged there before its psql returned.
before=$(conn_lines) a_ed=$(attempts_of ed)
fails=0
t0=$(now_ms)
for i in 1 2 3 4 5; do
  psql -X -h 127.0.0.1 -p 24501 -d 'dbname=postgres connect_timeout=10' -Atc "SELECT 1" >/dev/null 2>&1 || fails=$((fails+1))
  psql -X -h 127.0.0.1 -p 24504 -d 'dbname=postgres connect_timeout=10' -Atc "SELECT 1" >/dev/null 2>&1 || fails=$((fails+1))
done
a_ed_after=$(attempts_of ed) after=$(conn_lines)
echo "# 10 clients through the impostor in $(since $t0) s, $fails failed; ed's connect_attempts $a_ed before, $a_ed_after after"
echo "# private database connection lines: $before before, $after after"
check "every client through the impostor failed" test "$fails" = 10
check "the private database saw no new connection" test "$after" = "$before"
check "the clients brought no attempt forward (connect_attempts unchanged)" test "$a_ed_after" = "$a_ed"
check "the clients did reach the impostor" grep -q "Connection from 127.0.0.1" impostor/log
check "the impostor never saw an authentication" bash -c "! grep -q 'Accepted\|Failed publickey\|Postponed' impostor/log"
err=$(last_error ed)
echo "# last_error: $err"
echo "# tunnel_status().host_key_fingerprint meanwhile: $(lsql "SELECT host_key_fingerprint FROM tunnel_status() WHERE name = 'ed'")"
check "last_error names the recorded fingerprint" grep -qF "$real_fp" <<<"$err"
check "last_error names the impostor's fingerprint" grep -qF "$fake_fp" <<<"$err"
check "ec refuses the impostor too" wait_state ec host_key_mismatch 20
check "rs refuses the impostor too" wait_state rs host_key_mismatch 20
check "the recorded host key was not overwritten" \
  test "$(lsql "SELECT count(*) FROM tunnel_ssh.tunnel WHERE host_key_fingerprint = '$real_fp'")" = 3
# The WARNING names the bastion and the tunnel, its DETAIL both keys.
check "mismatch logged as WARNING with both fingerprints" \
  bash -c "grep -A1 'WARNING:.*host key of' local.log | grep '^DETAIL:\|DETAIL:  ' | grep -F '$real_fp' | grep -qF '$fake_fp'"
if sshd_penalises; then
  penalties=$(penalty_lines impostor/log)
  [ -n "$penalties" ] && echo "$penalties" | sed 's/^/# impostor: /'
  check "three tunnels refusing the impostor: no penalty from its sshd (OpenSSH 9.8+)" test -z "$penalties"
else
  skip "three tunnels refusing the impostor: no penalty from its sshd" "OpenSSH $(ssh -V 2>&1 | sed -n 's/^OpenSSH_\([^ ,]*\).*/\1/p') has no PerSourcePenalties (9.8+)"
fi
kill_impostor
start_sshd
t0=$(now_ms)
# A host key mismatch is retried in 10 s, 20 s, ... (sshd penalises
# connections closed before authentication), not at once.
check "real bastion back: ed connected again on its own" wait_state ed connected 45
echo "# back in $(since $t0) s"
check "query through ed after the real bastion returns" test "$(psql_via 24501 "SELECT count(*) FROM items")" = 1000
for t in ec rs; do wait_state $t connected 45 >/dev/null; done

# ======================================================================
# 5. Hostile catalog rows written by a superuser
# ======================================================================
wpid=$(worker_pid)
# A connection held open through ed for the whole section: a worker crash
# or a reset of ed's session would cut it.
psql_via 24501 "DO \$\$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM stopflag) LOOP PERFORM pg_sleep(0.2); END LOOP; END \$\$; SELECT 'survived'" \
  > held.out 2>&1 &
held=$!
held_running() { test "$(psql_priv "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'DO %stopflag%'")" = 1; }
check "a connection is held open through ed" wait_for 10 held_running
garbage='this is not a key: garbage-text-0123456789'
# name | ssh_host | ssh_user | private key (SQL over ed's or rs's secret, or none) | remote_host | expected state | last_error pattern
hostile=(
  "h_proxy|'-oProxyCommand=touch $pwned'|'$me'|private_key|'127.0.0.1'|invalid|invalid definition: .*host"
  "h_long|repeat('a', 300)|'$me'|private_key|'127.0.0.1'|invalid|invalid definition: .*at most 253"
  "h_newline|E'127.0.0.1\\n-oProxyCommand=touch $pwned'|'$me'|private_key|'127.0.0.1'|invalid|invalid definition: .*host"
  "u_shell|'127.0.0.1'|'a b;id&'|private_key|'127.0.0.1'|invalid|invalid definition: .*SSH user name may not contain"
  "u_long|'127.0.0.1'|'x;touch$pwned'|private_key|'127.0.0.1'|invalid|invalid definition: .*SSH user name"
  "u_option|'127.0.0.1'|'-oProxyCommand=touch'|private_key|'127.0.0.1'|invalid|invalid definition: .*SSH user name"
  "k_garbage|'127.0.0.1'|'$me'|'$garbage'|'127.0.0.1'|invalid|invalid definition: The stored private key cannot be read"
  "k_empty|'127.0.0.1'|'$me'|''|'127.0.0.1'|invalid|invalid definition: The stored private key cannot be read"
  "k_trunc|'127.0.0.1'|'$me'|left(private_key, length(private_key) / 2)|'127.0.0.1'|invalid|invalid definition: The stored private key cannot be read or does not match key_fingerprint"
  "k_none|'127.0.0.1'|'$me'|NONE|'127.0.0.1'|invalid|no private key"
  "f_proxy|'127.0.0.1'|'$me'|private_key|'-oProxyCommand=touch $pwned'|invalid|invalid definition: .*host"
  "f_newline|'127.0.0.1'|'$me'|private_key|E'127.0.0.1\\nX'|invalid|invalid definition: .*host"
)
port=24520
declare -A HPORT
for h in "${hostile[@]}"; do
  IFS='|' read -r name host user keysql rhost want pattern <<<"$h"
  src=ed; [ "$name" = k_trunc ] && src=rs
  secret_sql="INSERT INTO tunnel_ssh.secret (tunnel, private_key) SELECT '$name', $keysql FROM tunnel_ssh.secret WHERE tunnel = '$src';"
  [ "$keysql" = NONE ] && secret_sql=
  out=$(lsql "BEGIN;
    INSERT INTO tunnel_ssh.tunnel (name, ssh_host, ssh_port, ssh_user, key_type, public_key, key_fingerprint)
      SELECT '$name', $host, $SPORT, $user, key_type, public_key, key_fingerprint FROM tunnel_ssh.tunnel WHERE name = '$src';
    INSERT INTO tunnel_ssh.forward (local_port, tunnel, remote_host, remote_port) VALUES ($port, '$name', $rhost, $PPORT);
    $secret_sql
    COMMIT;" 2>&1)
  [ -n "$out" ] && echo "$out" | sed 's/^/# /'
  HPORT[$name]=$port
  port=$((port+1))
  st=
  for _ in $(seq 1 75); do
    st=$(state_of "$name")
    [ "$st" = "$want" ] && break
    sleep 0.2
  done
  err=$(last_error "$name")
  echo "# $name: state $st, last_error: $err"
  check "$name: state $want" test "$st" = "$want"
  check "$name: last_error says why" grep -qE -- "$pattern" <<<"$err"
  check "$name: last_error holds no key text" \
    bash -c '! grep -qE "PRIVATE|BEGIN|-----|garbage-text" <<<"$1" && ! grep -qF -f <(printf "%s\n" "${@:2}") <<<"$1"' _ "$err" "${chunks[@]}"
  check "$name: good tunnel still answers" test "$(psql_via 24501 "SELECT count(*) FROM items" 2>&1)" = 1000
done
for name in h_proxy u_shell f_proxy; do
  check "invalid tunnel $name does not listen on its port ${HPORT[$name]}" \
    bash -c "! (exec 3<>/dev/tcp/127.0.0.1/${HPORT[$name]}) 2>/dev/null"
done
check "worker pid unchanged (no crash, no restart)" test "$(worker_pid)" = "$wpid"
psql_priv "INSERT INTO stopflag VALUES (1)"
wait $held
check "connection held open through ed across all hostile rows survived" grep -qx survived held.out ||
  sed 's/^/# /' held.out
check "no command from a hostile row ran ($pwned absent)" test ! -e "$pwned"
check "no backend or worker crashed" \
  bash -c "! grep -E 'terminated by signal|PANIC|reinitializing|background worker .* exited with exit code [1-9]' local.log"
check "ed, ec, rs still connected" \
  test "$(lsql "SELECT string_agg(state, ',' ORDER BY name) FROM tunnel_status() WHERE name IN ('ed', 'ec', 'rs')")" = "connected,connected,connected"
for h in "${hostile[@]}"; do
  lsql "SELECT tunnel_drop('${h%%|*}')" >/dev/null 2>&1 || echo "# could not drop ${h%%|*}"
done
check "hostile tunnels dropped" \
  test "$(lsql "SELECT count(*) FROM tunnel_status() WHERE name NOT IN ('ed', 'ec', 'rs', 'bad')")" = 0

# ======================================================================
# 6. Who can connect: the server's OS user through the socket, no one else
# ======================================================================
# Another OS user of this host, tunnel_other (made by security.root.sh),
# tries to log in through the tunnels: its attempts run in a loop of its
# own that takes "host port" requests in $dir/other.
sockdir="$dir/local/tunnel_ssh"
as_other() {  # host port -> tunnel_other's psql output and "exit N"
  local n=$RANDOM$RANDOM
  echo "$1 $2" > "$dir/other/tmp.$n" && mv "$dir/other/tmp.$n" "$dir/other/req.$n"
  for _ in $(seq 1 150); do [ -e "$dir/other/res.$n" ] && break; sleep 0.1; done
  cat "$dir/other/res.$n" 2>/dev/null || echo "no answer from tunnel_other's loop"
}
check "socket directory: owned by the server's user, mode 700" test "$(stat -c '%a %U' "$sockdir")" = "700 $me"
check "each forward has its socket there" test -S "$sockdir/.s.PGSQL.24501" -a -S "$sockdir/.s.PGSQL.24504"
check "the server's user connects through the socket" \
  test "$(psql -X -h "$sockdir" -p 24501 -d postgres -Atc "SELECT count(*) FROM items" 2>&1)" = 1000
r=$(as_other "$sockdir" 24501); echo "# tunnel_other through the socket: $(tr '\n' ' ' <<<"$r")"
check "another OS user cannot use the socket (permission denied)" \
  bash -c 'grep -q "Permission denied" <<<"$1" && ! grep -q "exit 0" <<<"$1"' _ "$r"
r=$(as_other 127.0.0.1 24501); echo "# tunnel_other through 127.0.0.1:24501 (TCP on): $(tr '\n' ' ' <<<"$r")"
check "with TCP on, another OS user reaches the private database's login (README says so)" \
  grep -q 'role "tunnel_other" does not exist' <<<"$r"
lsql "SELECT tunnel_server_create('ed_db', 'ed', 'postgres', local_port => 24501);
      CREATE USER MAPPING FOR CURRENT_USER SERVER ed_db OPTIONS (user '$me');
      CREATE FOREIGN TABLE ed_items (id int, v text) SERVER ed_db OPTIONS (table_name 'items');" >/dev/null
check "tunnel_server_create points the server at the socket directory" \
  test "$(lsql "SELECT array_to_string(srvoptions, ' ') FROM pg_foreign_server WHERE srvname = 'ed_db'")" = "host=$sockdir port=24501 dbname=postgres"
check "postgres_fdw through the socket" test "$(lsql "SELECT count(*) FROM ed_items")" = 1000
# TCP off: the sockets only.
lsql "ALTER SYSTEM SET tunnel_ssh.listen_address = ''"; lsql "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 25); do port_open 24501 || break; sleep 0.2; done
check "listen_address '': no TCP listener left" \
  test -z "$(ss -Hltn '( sport >= :24500 and sport <= :24539 )')"
check "status shows the socket directory as the local address" \
  test "$(lsql "SELECT local_address FROM tunnel_status() WHERE name = 'ed'")" = "$sockdir"
check "TCP off: the server's user still connects through the socket" \
  test "$(psql -X -h "$sockdir" -p 24501 -d postgres -Atc "SELECT count(*) FROM items" 2>&1)" = 1000
check "TCP off: postgres_fdw still works" test "$(lsql "SELECT count(*) FROM ed_items")" = 1000
r=$(as_other "$sockdir" 24501); echo "# tunnel_other, TCP off, socket: $(tr '\n' ' ' <<<"$r")"
check "TCP off: another OS user is refused at the socket" grep -q "Permission denied" <<<"$r"
r=$(as_other 127.0.0.1 24501); echo "# tunnel_other, TCP off, 127.0.0.1:24501: $(tr '\n' ' ' <<<"$r")"
check "TCP off: another OS user is refused at the port" grep -q "Connection refused" <<<"$r"
check "ed still connected (the session was not touched)" test "$(state_of ed)" = connected
# A non-loopback address is refused unless allowed (and not tried here:
# servers of the tests listen on 127.0.0.1 only).
lsql "ALTER SYSTEM SET tunnel_ssh.listen_address = '0.0.0.0'"; lsql "SELECT pg_reload_conf()" >/dev/null
check "listen_address 0.0.0.0 without allow_remote_listen: bind_failed" wait_state ed bind_failed 10
check "... saying why" grep -q 'is not a loopback address: set tunnel_ssh.allow_remote_listen' <<<"$(last_error ed)"
check "... and nothing listens on 0.0.0.0" test -z "$(ss -Hltn '( sport >= :24500 and sport <= :24539 )' | grep -v '127.0.0.1:')"
check "... while the socket still serves" \
  test "$(psql -X -h "$sockdir" -p 24501 -d postgres -Atc "SELECT count(*) FROM items" 2>&1)" = 1000
check "listen_address must be an address" grep -q "must be an IPv4 or IPv6 address" <<<"$(lsql "ALTER SYSTEM SET tunnel_ssh.listen_address = 'localhost'" 2>&1)"
check "a socket directory too long for a socket path is refused" \
  grep -q "107 bytes" <<<"$(lsql "ALTER SYSTEM SET tunnel_ssh.socket_directory = '/tmp/$(printf 'x%.0s' $(seq 1 95))'" 2>&1)"
lsql "ALTER SYSTEM RESET tunnel_ssh.listen_address"; lsql "SELECT pg_reload_conf()" >/dev/null
check "listen_address back to 127.0.0.1: connected, TCP again" wait_state ed connected 10
for _ in $(seq 1 25); do port_open 24501 && break; sleep 0.2; done
check "... the port answers again" port_open 24501

# ======================================================================
# 7. The socket directory: checked before each bind; a lock file per socket
# ======================================================================
# security.root.sh made rootmade/ (root's): other_owned, a directory of
# tunnel_other's, and other_parent/sock, ours in a directory of theirs.
fwd_error() { lsql "SELECT last_error FROM tunnel_forward_status() WHERE tunnel = '$1' AND local_port = $2"; }
fwd_error_has() { grep -qF -- "$3" <<<"$(fwd_error "$1" "$2")"; }
set_sockdir() {
  lsql "ALTER SYSTEM SET tunnel_ssh.socket_directory = '$1'"
  lsql "SELECT pg_reload_conf()" >/dev/null
}
sql_true() { test "$("$1" "$2")" = t; }
# Returns once the forward's failing bind was retried for 2 s more (each
# retry stamps last_error_at): a WARNING logged at every retry would show.
retried() {  # psql-function tunnel port
  local t0
  t0=$("$1" "SELECT last_error_at FROM tunnel_forward_status() WHERE tunnel = '$2' AND local_port = $3")
  wait_for 15 sql_true "$1" "SELECT last_error_at > '$t0'::timestamptz + interval '2 s' FROM tunnel_forward_status() WHERE tunnel = '$2' AND local_port = $3"
}
srv_host() { lsql "SELECT split_part(srvoptions[1], '=', 2) FROM pg_foreign_server WHERE srvname = '$1'"; }
srv_host_is() { test "$(srv_host "$1")" = "$2"; }

# A parent that becomes writable by others after the directory was checked
# at reload: the next bind (a new forward) checks again.
mkdir -p pw/sock && chmod 755 pw && chmod 700 pw/sock
set_sockdir "$dir/pw/sock"
check "socket_directory changed by reload: the sockets move there" wait_for 10 test -S pw/sock/.s.PGSQL.24501
chmod 777 pw
lsql "SELECT tunnel_forward_add('ed', '127.0.0.1', $PPORT, 24507)" >/dev/null
check "a bind after a parent became writable by others is refused, the forward says why" \
  wait_for 10 fwd_error_has ed 24507 "socket directory \"$dir/pw/sock\" is unsafe: its parent \"$dir/pw\" is writable by other users and has no sticky bit"
echo "# forward 24507: $(fwd_error ed 24507)"
check "... no socket was made there" test ! -e pw/sock/.s.PGSQL.24507
check "... while its TCP port serves" query_ok 24507
check "... and ed stays connected" test "$(state_of ed)" = connected
chmod 1777 pw
check "sticky bit set: the socket is made at a retry" wait_for 10 test -S pw/sock/.s.PGSQL.24507
chmod 755 pw
check "... with its lock file, naming this server's postmaster" \
  test "$(head -n 1 pw/sock/.s.PGSQL.24507.lock)" = "$(head -n 1 local/postmaster.pid)"
lsql "SELECT tunnel_forward_drop('ed', 24507)" >/dev/null
check "a dropped forward's socket and lock file are removed" \
  wait_for 10 test ! -e pw/sock/.s.PGSQL.24507 -a ! -e pw/sock/.s.PGSQL.24507.lock

# A symbolic link: refused; TCP serves, and foreign servers follow it.
mkdir -m 700 realsock && ln -s "$dir/realsock" linksock
set_sockdir "$dir/linksock"
check "a socket directory that is a symbolic link is refused, the forward says why" \
  wait_for 10 fwd_error_has ed 24501 "socket directory \"$dir/linksock\" is a symbolic link"
check "... no socket behind the link" test -z "$(ls -A realsock)"
check "... TCP still serves" query_ok 24501
check "... ed stays connected" test "$(state_of ed)" = connected
retried lsql ed 24501
n=$(grep -c "WARNING:  tunnel_ssh refuses its socket directory: socket directory \"$dir/linksock\" is a symbolic link" local.log)
check "... one WARNING names the path and why, not one per forward or retry ($n)" test "$n" = 1
lsql "SELECT tunnel_server_create('ed_tcp', 'ed', 'postgres', local_port => 24501)" >/dev/null
check "tunnel_server_create points a server at TCP while the directory is refused" \
  srv_host_is ed_tcp 127.0.0.1
check "... and the worker points the older server there too" wait_for 10 srv_host_is ed_db 127.0.0.1
check "postgres_fdw works on through TCP" test "$(lsql "SELECT count(*) FROM ed_items")" = 1000
lsql "ALTER SYSTEM SET tunnel_ssh.listen_address = ''"; lsql "SELECT pg_reload_conf()" >/dev/null
check "TCP off and the directory refused: ed is bind_failed" wait_state ed bind_failed 10
out=$(lsql "SELECT tunnel_server_create('ed_none', 'ed', 'postgres', local_port => 24501)" 2>&1)
echo "# $(tr '\n' ' ' <<<"$out")"
check "tunnel_server_create then fails, saying where to look" \
  bash -c 'grep -q "ERROR:  the tunnels have no local endpoint" <<<"$1" && grep -q "HINT:  The server log says why" <<<"$1"' _ "$out"
check "... and the worker leaves the servers as they were" srv_host_is ed_db 127.0.0.1
lsql "ALTER SYSTEM RESET tunnel_ssh.listen_address"

# Directories another OS user could replace.
other_uid=$(id -u tunnel_other)
set_sockdir "$dir/rootmade/other_owned"
check "a socket directory owned by another user is refused" \
  wait_for 10 fwd_error_has ed 24501 "socket directory \"$dir/rootmade/other_owned\" is owned by user ID $other_uid"
set_sockdir "$dir/rootmade/other_parent/sock"
check "one in a parent directory another user owns is refused" \
  wait_for 10 fwd_error_has ed 24501 "its parent \"$dir/rootmade/other_parent\" is owned by user ID $other_uid"
check "... no socket made there" test ! -e rootmade/other_parent/sock/.s.PGSQL.24501
check "ed connected all along (TCP back on)" wait_state ed connected 10

# Two servers sharing one absolute socket directory: the second is refused
# the port the first holds, and the first keeps it.
set_sockdir "$dir/shared"
check "the first server listens in the shared directory" wait_for 10 test -S shared/.s.PGSQL.24501
check "the worker points the servers back at the sockets" wait_for 10 srv_host_is ed_db "$dir/shared"
ino=$(stat -c %i shared/.s.PGSQL.24501)
pm1=$(head -n 1 local/postmaster.pid)
L2PORT=24434
lsql2() { psql -X -q -h "$dir" -p $L2PORT -d postgres -v ON_ERROR_STOP=1 -Atc "$1"; }
$B/initdb -D local2 -A trust >/dev/null
cat >> local2/postgresql.conf <<C
port = $L2PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'tunnel_ssh'
log_error_verbosity = verbose
tunnel_ssh.keepalive_interval = 2
tunnel_ssh.reconnect_max_delay = 2
tunnel_ssh.port_range = '24540-24549'
tunnel_ssh.listen_address = ''
tunnel_ssh.socket_directory = '$dir/shared'
C
$B/pg_ctl -D local2 -l local2.log start -w >/dev/null
lsql2 "CREATE EXTENSION tunnel_ssh"
# Its port 24501 leads to the first server's own database, which has no
# table "items": a client that lands there shows at once.
lsql2 "SELECT tunnel_create('twin', '127.0.0.1', '127.0.0.1', $LPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => 24501)" \
  >> sshd/authorized_keys 2>/dev/null
lsql2 "SELECT tunnel_forward_add('twin', '127.0.0.1', $PPORT, 24541)" >/dev/null 2>&1
repaste twin sshd/authorized_keys lsql2
# A session that logged in before the new line keeps the old one's
# permitopen (issue 26, item 6): log in again.
lsql2 "SELECT tunnel_disable('twin')" >/dev/null; lsql2 "SELECT tunnel_enable('twin')" >/dev/null
fwd2_has() { grep -qF -- "$3" <<<"$(lsql2 "SELECT last_error FROM tunnel_forward_status() WHERE tunnel = '$1' AND local_port = $2")"; }
check "second server: port 24501 refused, naming the server that holds it" \
  wait_for 15 fwd2_has twin 24501 "Unix socket \"$dir/shared/.s.PGSQL.24501\" belongs to another server: PID $pm1, data directory \"$dir/local\""
check "... and does not listen there" \
  test "$(lsql2 "SELECT listening FROM tunnel_forward_status() WHERE local_port = 24501")" = f
check "... the first server's socket is the same file" test "$(stat -c %i shared/.s.PGSQL.24501)" = "$ino"
check "... and its lock file still names the first server" test "$(head -n 1 shared/.s.PGSQL.24501.lock)" = "$pm1"
shared_ok() { test "$(psql -X -h "$dir/shared" -p "$1" -d 'dbname=postgres connect_timeout=5' -Atc "SELECT count(*) FROM items" 2>&1)" = 1000; }
c0=$(lsql "SELECT total_connections FROM tunnel_forward_status() WHERE tunnel = 'ed' AND local_port = 24501")
check "the first server keeps serving the shared socket" shared_ok 24501
check "... through its own tunnel (its forward counted the connection)" \
  test "$(lsql "SELECT total_connections FROM tunnel_forward_status() WHERE tunnel = 'ed' AND local_port = 24501")" -gt "$c0"
check "the second server serves its own port in the shared directory" wait_for 20 shared_ok 24541
retried lsql2 twin 24501
n=$(grep -c "WARNING:  F0001: tunnel \"twin\" cannot listen on its Unix socket for port 24501" local2.log)
check "... one WARNING with SQLSTATE F0001, not one per retry ($n)" test "$n" = 1
check "... with a hint that names the lock file" \
  grep -qF "HINT:  Give each server its own tunnel_ssh.socket_directory, or its own ports.  If no such server runs, remove \"$dir/shared/.s.PGSQL.24501.lock\"." local2.log
# The first lets go (tunnel disabled): the second takes the port.  Then it
# dies without cleaning up: its lock file names a dead postmaster, stale.
lsql "SELECT tunnel_disable('ed')" >/dev/null
check "once the first server lets go, the second takes the socket" \
  wait_for 15 sql_true lsql2 "SELECT listening FROM tunnel_forward_status() WHERE local_port = 24501"
pm2=$(head -n 1 local2/postmaster.pid)
check "... its lock file names the second server" test "$(head -n 1 shared/.s.PGSQL.24501.lock)" = "$pm2"
$B/pg_ctl -D local2 stop -m immediate >/dev/null
echo "# its postmaster $pm2 after the stop: $(ps -o stat= -p "$pm2" || echo gone)"
check "second server killed: its lock file stays behind" test "$(head -n 1 shared/.s.PGSQL.24501.lock)" = "$pm2"
lsql "SELECT tunnel_enable('ed')" >/dev/null
lock_is() { test "$(head -n 1 shared/.s.PGSQL.24501.lock 2>/dev/null)" = "$1"; }
check "the first server takes over the stale lock" wait_for 15 lock_is "$pm1" ||
  echo "# forward 24501: $(fwd_error ed 24501)"
check "... and is connected" wait_state ed connected 15
check "... and serves the socket" shared_ok 24501
check "no server process of the second server crashed" bash -c "! grep -E 'terminated by signal|PANIC' local2.log"

# ======================================================================
# 2. No private key anywhere (last: the log holds everything above)
# ======================================================================
logs=(local.log local2.log private.log sshd/log impostor/log)
log_bytes=$(cat "${logs[@]}" | wc -c)
views=$(lsql "SELECT * FROM pg_stat_activity; SELECT * FROM tunnel_ssh.status; SELECT * FROM tunnel_ssh.tunnels")
views+=$(as_role mon "SELECT * FROM pg_stat_activity; SELECT * FROM tunnel_ssh.status; SELECT * FROM tunnel_ssh.tunnels")
echo "# scanned ${#chunks[@]} 16-character chunks of 4 private keys (ed25519, ecdsa, rsa, dropped ed25519; $public_chunks chunks of public modulus left out)"
echo "# in $log_bytes log bytes (${logs[*]}: $(grep -c 'DEBUG' local.log) DEBUG lines, $(grep -c 'LOG:  statement:' local.log) statements) and ${#views} bytes of pg_stat_activity, status and tunnels"
check "the scan has material: >100 chunks, a debug5 log" \
  bash -c "[ ${#chunks[@]} -gt 100 ] && [ $(grep -c 'DEBUG' local.log) -gt 1000 ]"
control_hits=$(grep -ohF -f <(printf '%s\n' "${chunks[@]}") <<<"${KEY[ed]}${KEY[rs]}" | wc -l)
check "control: the scan finds chunks in text that holds keys ($control_hits)" test "$control_hits" -gt 10
log_hits=$(grep -ohF -f <(printf '%s\n' "${chunks[@]}") "${logs[@]}" | wc -l)
view_hits=$(grep -ohF -f <(printf '%s\n' "${chunks[@]}") <<<"$views" | wc -l)
echo "# hits: $log_hits in logs, $view_hits in views"
check "no private key chunk in any log" test "$log_hits" = 0
check "no private key chunk in pg_stat_activity, status or tunnels" test "$view_hits" = 0
check "no PEM marker in the server log" bash -c "! grep -q 'PRIVATE KEY' local.log"

if sshd_penalises; then
  penalties=$(penalty_lines sshd/log)
  [ -n "$penalties" ] && echo "$penalties" | sed 's/^/# sshd: /'
  check "the whole suite drew no penalty from the bastion's sshd (OpenSSH 9.8+)" test -z "$penalties"
else
  skip "the whole suite drew no penalty from the bastion's sshd" "OpenSSH $(ssh -V 2>&1 | sed -n 's/^OpenSSH_\([^ ,]*\).*/\1/p') has no PerSourcePenalties (9.8+)"
fi
echo "# whole suite: $(( $(date +%s) - t_start )) s"
suite_end
