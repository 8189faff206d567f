#!/usr/bin/env bash
# What a DBA does to the catalog, the foreign servers and the worker's
# process cannot take down a tunnel it does not concern (issue #26):
#   1. pg_cancel_backend() on the worker
#   2. ACCESS EXCLUSIVE locks on tunnel_ssh tables (VACUUM FULL, CLUSTER,
#      ALTER EXTENSION UPDATE take them) while the catalog changes
#   3. a foreign server of tunnel_server_create dropped and made again by hand
#   4. private keys never reach the log, even with auto_explain logging
#      nested statements, their plans and their parameters
#   5. tunnel_test on rows edited by hand
#   6. a host key pinned while a session trusts its bastion at first use
# With real parts: sshd, two PostgreSQL servers, postgres_fdw.  "# " lines
# print measurements.  Prints "N passed, N failed" last.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
LPORT=53432 PPORT=53433 SPORT=53222
SPORT2=53223                 # a second sshd for the pin check (6)
FA=53401 FB=53402 FB2=53403 FC=53404 FD=53405
LOCAL_CONF="tunnel_ssh.port_range = '53400-53419'
max_prepared_transactions = 2"
. "$(dirname "$0")/lib.sh"
harness_start
me=$(id -un)

worker_pid() { lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'"; }
listening() { test "$(lsql "SELECT listening FROM tunnel_forward_status() WHERE local_port = $1")" = t; }
# A change the worker is told of at commit, touching no tunnel_ssh table
# (COMMIT PREPARED wakes it: catalog.c).
nudge_worker() {
  lsql "BEGIN; SELECT 1; PREPARE TRANSACTION 'nudge';" >/dev/null
  lsql "COMMIT PREPARED 'nudge'" >/dev/null
}
# lock_held TABLE: another session holds ACCESS EXCLUSIVE on it.
lock_held() {
  test "$(lsql "SELECT count(*) FROM pg_locks WHERE relation = '$1'::regclass AND mode = 'AccessExclusiveLock' AND granted")" = 1
}
# Ends the session that holds a lock (LOCK TABLE ... pg_sleep), at once.
release_lock() {
  lsql "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'BEGIN; LOCK TABLE%' AND pid <> pg_backend_pid()" >/dev/null
}
srv_a_options() { lsql "SELECT array_to_string(srvoptions, ',') FROM pg_foreign_server WHERE srvname = 'srv_a'"; }
# new_connections PORT N: N new connections 0.2 s apart, each with a 3 s
# connect timeout; prints "failed worst_ms".
new_connections() {
  local i t0 ms worst=0 failed=0
  for i in $(seq 1 "$2"); do
    t0=$(now_ms)
    if psql -X -q "host=127.0.0.1 port=$1 dbname=postgres connect_timeout=3" -Atc "SELECT 1" >/dev/null 2>&1; then
      ms=$(( $(now_ms) - t0 )); [ $ms -gt $worst ] && worst=$ms
    else
      failed=$((failed + 1))
    fi
    sleep 0.2
  done
  echo "$failed $worst"
}

$B/pgbench -i -s 1 -q -h 127.0.0.1 -p $PPORT postgres >/dev/null 2>&1
lsql "CREATE EXTENSION tunnel_ssh; CREATE EXTENSION postgres_fdw;"
for t in a:$FA b:$FB; do
  lsql "SELECT tunnel_create('${t%%:*}', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => ${t#*:})" \
    >> sshd/authorized_keys
done
check "tunnels a and b connect" wait_state a connected 20 && wait_state b connected 20
wpid=$(worker_pid)

# --- 1. pg_cancel_backend on the worker ---
# A connection through a stays open across the cancel: a query that is
# still running when the cancel arrives must complete.
psql_via $FA "SELECT pg_sleep(3); SELECT 'survived'" > cancel.out 2>&1 &
sleeper=$!
in_sleep() { test "$(psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(3)%'")" = 1; }
check "1. a query through a is running" wait_for 10 in_sleep
check "1. pg_cancel_backend(worker) is delivered" test "$(lsql "SELECT pg_cancel_backend($wpid)")" = t
wait $sleeper
check "1. the query through the tunnel completes across the cancel" grep -qx survived cancel.out \
  || sed 's/^/# /' cancel.out
check "1. the worker is the same process" test "$(worker_pid)" = "$wpid"
check "1. the worker logged no cancel" \
  test -z "$(grep -E 'canceling statement due to user request' local.log)"

# --- 2. ACCESS EXCLUSIVE locks on tunnel_ssh tables ---
# a. tunnel_ssh.server locked 8 s; meanwhile a forward is added to b (the
#    worker reads the catalog, then points the foreign servers: the lock is
#    on the latter).  New connections through a keep being served, and the
#    new forward listens without waiting for the lock.
lsql "SELECT tunnel_server_create('srv_a', 'a', 'postgres')" >/dev/null
psql -X -q -h "$dir" -p $LPORT -d postgres -c \
  "BEGIN; LOCK TABLE tunnel_ssh.server IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;" >/dev/null 2>&1 &
locker=$!
check "2a. another session holds ACCESS EXCLUSIVE on tunnel_ssh.server" wait_for 5 lock_held tunnel_ssh.server
t0=$(now_ms)
lsql "SELECT tunnel_forward_add('b', '127.0.0.1', $PPORT, $FB2)" >/dev/null
check "2a. a forward added under the lock listens at once" wait_for 3 listening $FB2
echo "# 2a. forward listening $(since $t0) s after its commit, tunnel_ssh.server locked"
read -r failed worst <<<"$(new_connections $FA 20)"
echo "# 2a. 20 new connections through a under the lock: $failed failed, worst $worst ms"
check "2a. every new connection through a is served under the lock" test "$failed" = 0
check "2a. the lock is still held after the connections (the check ran under it)" lock_held tunnel_ssh.server
release_lock
locker_gone() { ! kill -0 $locker 2>/dev/null; }
check "2a. the lock's session ended when cancelled" wait_for 10 locker_gone
wait $locker
check "2a. the worker is the same process" test "$(worker_pid)" = "$wpid"
check "2a. the worker said why it could not point the servers" \
  grep -q 'could not update the tunnel catalog, will retry' local.log
check "2a. queries through the new forward work" query_ok $FB2

# b. tunnel_ssh.tunnel locked 8 s, a reload and a catalog read meanwhile:
#    established traffic through a never stops for a whole second.
psql -X -q -h "$dir" -p $LPORT -d postgres -c \
  "BEGIN; LOCK TABLE tunnel_ssh.tunnel IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;" >/dev/null 2>&1 &
locker=$!
check "2b. another session holds ACCESS EXCLUSIVE on tunnel_ssh.tunnel" wait_for 5 lock_held tunnel_ssh.tunnel
$B/pgbench -n -S -c 1 -T 6 -P 1 -h 127.0.0.1 -p $FA postgres > pgbench.out 2> pgbench.progress &
bench=$!
# Once pgbench reports its first second, a reload and a catalog read.
wait_for 10 grep -q '^progress' pgbench.progress
lsql "SELECT pg_reload_conf()" >/dev/null
nudge_worker
wait $bench; bench_rc=$?
zero=$(grep -c ' 0.0 tps' pgbench.progress || true)
echo "# 2b. pgbench -S through a, tunnel_ssh.tunnel locked: $(grep -Eo '[0-9.]+ tps' pgbench.progress | tr '\n' ' ')"
check "2b. pgbench ran through the lock (exit $bench_rc, no failed transaction)" \
  bash -c "[ $bench_rc = 0 ] && grep -q '^number of failed transactions: 0 ' pgbench.out"
check "2b. no second without a transaction" test "$zero" = 0
check "2b. the lock was held the whole time" lock_held tunnel_ssh.tunnel
check "2b. the worker logged that it could not read the catalog" \
  grep -q 'could not read the tunnel catalog, will retry' local.log
release_lock
check "2b. the lock's session ended when cancelled" wait_for 10 locker_gone
wait $locker
check "2b. after the lock, the worker reads the catalog again" \
  wait_for 10 grep -q 'read the tunnel catalog after [0-9]* failed attempts' local.log
check "2b. the worker is the same process" test "$(worker_pid)" = "$wpid"

# --- 3. a foreign server made again by hand under the same name ---
lsql "DROP SERVER srv_a CASCADE;
      CREATE SERVER srv_a FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'handmade');"
check "3. dropping the server removed the tunnel's record of it" \
  test "$(lsql "SELECT count(*) FROM tunnel_ssh.server")" = 0
# The worker follows the foreign servers at every catalog change.
lsql "SELECT tunnel_forward_drop('b', $FB2)" >/dev/null
check "3. the catalog change is applied" wait_for 5 eval '! listening $FB2'
check "3. the hand-made server keeps its options" test "$(srv_a_options)" = dbname=handmade
check "3. the worker is the same process" test "$(worker_pid)" = "$wpid"
check "3. the worker did not try to repoint it" test -z "$(grep -E 'option "host" not found' local.log)"
# A record left behind (a catalog edited by hand, or one from before 1.3)
# names a server that is not the tunnel's any more.  The forward added
# after it shows that the worker has read the catalog since.
lsql "INSERT INTO tunnel_ssh.server (server, tunnel, local_port) VALUES ('srv_a', 'a', $FA) ON CONFLICT DO NOTHING"
lsql "SELECT tunnel_forward_add('b', '127.0.0.1', $PPORT, $FB2)" >/dev/null
check "3. later changes are applied (the worker lives)" wait_for 5 listening $FB2
check "3. with a stale record, the worker still leaves the server alone" test "$(srv_a_options)" = dbname=handmade
lsql "SELECT tunnel_create('c', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => $FC)" \
  >> sshd/authorized_keys
lsql "SELECT tunnel_server_create('srv_c', 'c', 'postgres')" >/dev/null
lsql "SELECT tunnel_drop('a', cascade => true)" >/dev/null
check "3. tunnel_drop(cascade) leaves a server that is not the tunnel's" \
  test "$(lsql "SELECT count(*) FROM pg_foreign_server WHERE srvname = 'srv_a'")" = 1
lsql "SELECT tunnel_drop('c', cascade => true)" >/dev/null
check "3. tunnel_drop(cascade) drops the server it made" \
  test "$(lsql "SELECT count(*) FROM pg_foreign_server WHERE srvname = 'srv_c'")" = 0
check "3. the worker is the same process" test "$(worker_pid)" = "$wpid"

# --- 4. private keys and logging ---
# auto_explain with everything a DBA may turn on: nested statements (the
# API's own SPI statements), verbose plans (constants folded in), and, on
# PostgreSQL 16+, the statements' parameters.
ae="LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on; SET auto_explain.log_verbose = on;"
[ "$($B/postgres -V | grep -Eo '[0-9]+' | head -1)" -ge 16 ] && ae="$ae SET auto_explain.log_parameter_max_length = -1;"
lsql "$ae SELECT tunnel_create('k', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => $FD);
      SELECT tunnel_rotate_key('k');
      SELECT tunnel_rotate_cancel('k');
      SELECT tunnel_rotate_key('k', key_type => 'rsa');" >/dev/null 2>&1
check "4. auto_explain logged the API's writes of the secret table" \
  grep -q 'Insert on tunnel_ssh.secret' local.log
check "4. auto_explain logged the rotation's write" grep -q 'Update on tunnel_ssh.secret' local.log
check "4. no private key in the log" test -z "$(grep -E 'PRIVATE KEY|BEGIN OPENSSH' local.log)"
lsql "SELECT tunnel_drop('k')" >/dev/null

# --- 5. tunnel_test on rows edited by hand ---
lsql "UPDATE tunnel_ssh.tunnel SET next_key_type = 'ed25519', next_key_fingerprint = 'SHA256:handmade',
        next_public_key = NULL, rotation_started = now() WHERE name = 'b';
      UPDATE tunnel_ssh.secret SET next_private_key = private_key WHERE tunnel = 'b';"
out=$(lsql "SELECT step || ':' || ok FROM tunnel_test('b')" 2>&1)
check "5. tunnel_test with a rotation row missing its public key answers" grep -q 'authenticate:t' <<<"$out" \
  || sed 's/^/# /' <<<"$out"
check "5. and says the rotation is incomplete" grep -q 'pending key rotation of tunnel "b" is incomplete' <<<"$out"
lsql "UPDATE tunnel_ssh.tunnel SET next_key_type = NULL, next_key_fingerprint = NULL, rotation_started = NULL WHERE name = 'b';
      UPDATE tunnel_ssh.secret SET next_private_key = NULL WHERE tunnel = 'b';"
lsql "SELECT tunnel_create('e', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => 9, local_port => $FC)" >/dev/null
lsql "DELETE FROM tunnel_ssh.secret WHERE tunnel = 'e'"
out=$(lsql "SELECT count(*) FROM tunnel_test('e')" 2>&1)
check "5. tunnel_test without a private key says so" grep -q 'has no usable key pair' <<<"$out" \
  || sed 's/^/# /' <<<"$out"
lsql "SELECT tunnel_drop('e')" >/dev/null
check "5. the worker is the same process (no backend crashed)" test "$(worker_pid)" = "$wpid"

# --- 6. a host key pinned while a session trusts its bastion at first use ---
# The tunnel's row is locked while it connects, so the key it trusted is not
# written yet; the same transaction then pins another key.  The running
# session is connected to a bastion the pin does not admit: it must go.
mkdir -p sshd2
sed -e "s/^Port .*/Port $SPORT2/" -e "s|^PidFile .*|PidFile $dir/sshd2/sshd.pid|" \
  sshd/sshd_config > sshd2/sshd_config
lsql "SELECT tunnel_create('p', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT2, ssh_user => '$me', local_port => $FD)" \
  >> sshd/authorized_keys
check "6. tunnel p: its bastion is not up yet" wait_state p unreachable 10
mkfifo tx.fifo
psql -X -q -h "$dir" -p $LPORT -d postgres -v ON_ERROR_STOP=1 < tx.fifo > tx.out 2>&1 &
txpid=$!
exec 7> tx.fifo
echo "BEGIN; SELECT 1 FROM tunnel_ssh.tunnel WHERE name = 'p' FOR UPDATE;" >&7
row_locked() { test "$(lsql "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'transactionid' AND a.state = 'idle in transaction'")" -ge 1; }
check "6. an open transaction holds p's row" wait_for 5 row_locked
/usr/sbin/sshd -f "$dir/sshd2/sshd_config" -E "$dir/sshd2/log"
check "6. p connects, trusting the bastion's key from memory" wait_state p connected 10
check "6. queries through p work" query_ok $FD
wrong=$(ssh-keygen -q -t ed25519 -N '' -f other_host_key <<<y >/dev/null 2>&1; ssh-keygen -l -f other_host_key.pub | awk '{print $2}')
echo "SELECT tunnel_alter('p', host_key_fingerprint => 'ssh-ed25519 $wrong'); COMMIT;" >&7
exec 7>&-
wait $txpid
check "6. the pin is committed" test "$(lsql "SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'p'")" = "ssh-ed25519 $wrong"
check "6. the session the pin does not admit is dropped" wait_state p host_key_mismatch 10
check "6. queries through p are refused" eval '! query_ok $FD'
check "6. the worker did not claim to have recorded a host key for p" \
  test -z "$(grep -E 'tunnel "p": recorded host key' local.log)"
check "6. other tunnels are untouched" query_ok $FB
lsql "SELECT tunnel_disable('p')" >/dev/null

# --- 7. tunnel_test granted to a role that is not a superuser ---
# README: tunnel_test is not granted to pg_monitor; EXECUTE on it may be
# given to whoever may run it.  It reads the key as its owner (SECURITY
# DEFINER) and shows none of it.
lsql "CREATE ROLE tester LOGIN"
tsql() { psql -X -q -h "$dir" -p $LPORT -U tester -d postgres -Atc "$1" 2>&1; }
check "7. without the grant, tunnel_test is refused to the role" \
  grep -q 'permission denied for function tunnel_test' <<<"$(tsql "SELECT * FROM tunnel_test('b')")"
lsql "GRANT EXECUTE ON FUNCTION tunnel_test(text) TO tester"
out=$(tsql "SELECT step || '|' || ok || '|' || detail FROM tunnel_test('b')")
echo "# tunnel_test('b') as tester: $(cut -d'|' -f1,2 <<<"$out" | tr '\n' ' ')"
check "7. with EXECUTE granted, every step of tunnel_test is ok for the role (b has two forwards: two probes)" \
  test "$(cut -d'|' -f1,2 <<<"$out" | tr '\n' ' ')" = "resolve|true tcp_connect|true ssh_handshake|true authenticate|true open_channel|true postgres_probe|true open_channel|true postgres_probe|true "
check "7. the role still cannot read the secret table" \
  grep -q 'permission denied' <<<"$(tsql "SELECT count(*) FROM tunnel_ssh.secret")"
# No 16-character piece of b's private key (its base64 body) in what the
# role saw, nor a PEM or OpenSSH key header.
leaked=0
for line in $(lsql "SELECT private_key FROM tunnel_ssh.secret WHERE tunnel = 'b'" | grep -v -- '-----'); do
  for ((i = 0; i + 16 <= ${#line}; i += 16)); do
    grep -qF -- "${line:i:16}" <<<"$out" && leaked=$((leaked + 1))
  done
done
check "7. tunnel_test shows the role no part of the private key" \
  bash -c "[ $leaked = 0 ] && ! grep -q 'PRIVATE KEY\|BEGIN OPENSSH' <<<\"\$1\"" _ "$out"

# --- 8. tunnel_ssh.database, and a server without the preload ---
# A second small cluster whose catalog lives in database "tdb".
C2PORT=53434
$B/initdb -D c2 -A trust >/dev/null
cat >> c2/postgresql.conf <<C
port = $C2PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'tunnel_ssh'
tunnel_ssh.database = 'tdb'
tunnel_ssh.port_range = '53420-53429'
tunnel_ssh.reconnect_max_delay = 2
C
trap '$B/pg_ctl -D "$dir/c2" stop -m immediate >/dev/null 2>&1; cleanup' EXIT
$B/pg_ctl -D c2 -l c2.log start -w >/dev/null
c2sql() {  # database sql
  psql -X -q -h "$dir" -p $C2PORT -d "$1" -v ON_ERROR_STOP=1 -Atc "$2"
}
err=$(c2sql postgres "CREATE EXTENSION tunnel_ssh" 2>&1)
echo "# CREATE EXTENSION in postgres, tunnel_ssh.database = tdb: $(tr '\n' ' ' <<<"$err")"
check "8. CREATE EXTENSION outside tunnel_ssh.database is refused, naming it" \
  grep -q 'ERROR:  tunnel_ssh can only be created in database "tdb"' <<<"$err"
check "8. ... and nothing was created" test "$(c2sql postgres "SELECT count(*) FROM pg_extension WHERE extname = 'tunnel_ssh'")" = 0
c2sql postgres "CREATE DATABASE tdb"
err=$(c2sql tdb "CREATE EXTENSION tunnel_ssh" 2>&1)
check "8. CREATE EXTENSION in tdb: no error, no warning" test -z "$err"
c2worker() { c2sql postgres "SELECT datname FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'"; }
c2sql tdb "SELECT tunnel_create('d', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => 53420)" \
  >> sshd/authorized_keys
c2state() { c2sql tdb "SELECT state FROM tunnel_status() WHERE name = 'd'"; }
# The worker started before tdb existed and failed to connect; it is
# started again (bgw_restart_time).
check "8. the worker runs in tdb" wait_for 30 eval 'test "$(c2worker)" = tdb'
check "8. a tunnel made in tdb connects" wait_for 15 eval 'test "$(c2state)" = connected'
check "8. queries through it work" wait_for 5 query_ok 53420
# Without the preload: no worker; tunnel_status says why; CREATE EXTENSION
# installs with a warning; tunnel_create still writes the catalog.
sed -i '/^shared_preload_libraries/d' c2/postgresql.conf
$B/pg_ctl -D c2 -l c2.log restart -m fast -w >/dev/null
check "8. without the preload: no worker" test -z "$(c2worker)"
check "8. ... the tunnel's port is closed" eval '! port_open 53420'
err=$(c2sql tdb "SELECT * FROM tunnel_status()" 2>&1)
echo "# tunnel_status() without the preload: $(tr '\n' ' ' <<<"$err")"
check "8. tunnel_status() says the module is not preloaded, and what to do" \
  bash -c "grep -q 'ERROR:  tunnel_ssh is not loaded through shared_preload_libraries' <<<\"\$1\" && grep -q 'HINT:  Add tunnel_ssh to shared_preload_libraries' <<<\"\$1\"" _ "$err"
c2sql tdb "DROP EXTENSION tunnel_ssh CASCADE" >/dev/null 2>&1
err=$(c2sql tdb "CREATE EXTENSION tunnel_ssh" 2>&1)
echo "# CREATE EXTENSION without the preload: $(tr '\n' ' ' <<<"$err")"
check "8. CREATE EXTENSION without the preload installs, with a warning that no tunnel runs" \
  bash -c "grep -q 'WARNING:  tunnel_ssh is not loaded through shared_preload_libraries' <<<\"\$1\" && grep -q 'DETAIL:  No tunnel will run' <<<\"\$1\" && [ \"\$(psql -X -h $dir -p $C2PORT -d tdb -Atc \"SELECT count(*) FROM pg_extension WHERE extname = 'tunnel_ssh'\")\" = 1 ]" _ "$err"
line=$(c2sql tdb "SELECT tunnel_create('e', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => 53421)" 2>&1)
check "8. tunnel_create without the preload returns the key line" grep -q '^restrict,port-forwarding,permitopen="127.0.0.1:'$PPORT'"' <<<"$line"
check "8. ... and nothing listens" eval '! port_open 53421'
$B/pg_ctl -D c2 stop -m immediate >/dev/null 2>&1

suite_end
