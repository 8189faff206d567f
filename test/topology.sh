#!/usr/bin/env bash
# Topologies with real parts: a jump host (ssh -J) into a private network
# made of network namespaces by topology.root.sh.  Prints "N passed, N
# failed" last.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
LPORT=56532 PPORT=56533 SPORT=56522
LOCAL_CONF="tunnel_ssh.port_range = '56500-56519'"
. "$(dirname "$0")/lib.sh"
harness_start
me=$(id -un)

lsql "CREATE EXTENSION tunnel_ssh; CREATE EXTENSION postgres_fdw; CREATE EXTENSION dblink;"

# --- jump host ---
# The first bastion, with a forward of its own (to its private side).
lsql "SELECT tunnel_create('b1', '10.231.1.2', '10.231.2.2', 2222, ssh_port => 2222, ssh_user => '$me', local_port => 56501)" >> b1/authorized_keys
# The second bastion, straight from here: there is no route to it.
lsql "SELECT tunnel_create('b2_direct', '10.231.2.2', '127.0.0.1', 5432, ssh_port => 2222, ssh_user => '$me', local_port => 56502)" >> b2/authorized_keys
# And through the first, as ssh -J does.
lsql "SELECT tunnel_create('b2', '10.231.2.2', '127.0.0.1', 5432, ssh_port => 2222, ssh_user => '$me', local_port => 56503, via => 'b1')" >> b2/authorized_keys 2>b2.err
# b1's line permits b2's sshd already: it is b1's own target.
check "b2 via b1: b1's line, which permits b2's sshd already, is unchanged (no NOTICE)" test ! -s b2.err
check "b1's line permits exactly its target" \
  grep -q '^restrict,port-forwarding,permitopen="10.231.2.2:2222",permitlisten="NONE:1",command=' <<<"$(lsql "SELECT tunnel_public_key('b1')")"

check "first bastion: connected" wait_state b1 connected 15
check "second bastion cannot be reached directly" wait_state b2_direct unreachable 15
direct_error=$(lsql "SELECT last_error FROM tunnel_status() WHERE name = 'b2_direct'")
echo "# direct attempt: $direct_error"
check "the direct attempt fails for want of a route" grep -qiE "no route|unreachable" <<<"$direct_error"
check "second bastion through the first: connected" wait_state b2 connected 15
check "query reaches the database behind both bastions" \
  test "$(psql_via 56503 "SELECT min(marker) || ' ' || count(*) FROM behind_b2")" = "reached b2 1000"
check "b2's sshd saw the session come from b1's side" grep -q "Accepted publickey for $me from 10.231.2.1" b2/log
check "the tunnels view shows the chain" \
  test "$(lsql "SELECT via FROM tunnel_ssh.tunnels WHERE name = 'b2'")" = b1

# tunnel_test walks the chain: b1's steps, then b2's over a channel of b1.
steps=$(lsql "SELECT string_agg(step || '=' || ok, ', ') FROM tunnel_test('b2')")
echo "# tunnel_test('b2'): $steps"
check "tunnel_test follows the jump: every step of both hops ok" test "$steps" = \
  "jump b1: resolve=true, jump b1: tcp_connect=true, jump b1: ssh_handshake=true, jump b1: authenticate=true, tcp_connect=true, ssh_handshake=true, authenticate=true, open_channel=true, postgres_probe=true"
check "tunnel_test: b2 is reached by the jump host" \
  grep -q 'jump host "b1" (10.231.1.2) connected to 10.231.2.2 port 2222' <<<"$(lsql "SELECT detail FROM tunnel_test('b2') WHERE step = 'tcp_connect'")"
check "tunnel_test: b2's own host key is checked" \
  grep -q "matches" <<<"$(lsql "SELECT detail FROM tunnel_test('b2') WHERE step = 'ssh_handshake'")"
lsql "SELECT tunnel_create('b2_bad', '10.231.2.2', '127.0.0.1', 5432, ssh_port => 2223, ssh_user => '$me', local_port => 56519, via => 'b1')" >/dev/null 2>bad.err
check "a jump tunnel to another bastion port: b1's new line in a NOTICE" \
  grep -q 'HINT:  Replace the tunnel.s line in authorized_keys on the bastion with: restrict,port-forwarding,permitopen="10.231.2.2:2222",permitopen="10.231.2.2:2223",' bad.err
bad=$(lsql "SELECT step || ': ' || detail FROM tunnel_test('b2_bad') WHERE NOT ok")
echo "# tunnel_test('b2_bad') before b1's line is replaced: $bad"
check "tunnel_test: b1's line does not permit b2_bad's bastion yet, and says which line to paste" \
  grep -qF "tcp_connect: the authorized_keys line on the bastion does not permit 10.231.2.2:2223: replace it with tunnel_public_key('b1')" <<<"$bad"
repaste b1 b1/authorized_keys
bad=$(lsql "SELECT step || ': ' || detail FROM tunnel_test('b2_bad') WHERE NOT ok")
echo "# tunnel_test('b2_bad'): $bad"
check "tunnel_test: a bastion the jump host cannot reach fails at tcp_connect, as seen from the jump host" \
  grep -q '^tcp_connect: nothing listens on 10.231.2.2:2223 as seen from the bastion' <<<"$bad"
lsql "SELECT tunnel_drop('b2_bad')" >/dev/null 2>&1
repaste b1 b1/authorized_keys

lsql "CREATE SERVER b2db FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '56503', dbname 'postgres');
      CREATE USER MAPPING FOR CURRENT_USER SERVER b2db OPTIONS (user '$me');
      IMPORT FOREIGN SCHEMA public LIMIT TO (behind_b2) FROM SERVER b2db INTO public;" >/dev/null
check "postgres_fdw through two bastions" \
  test "$(lsql "SELECT count(*) FROM behind_b2 WHERE g % 10 = 0")" = 100
echo "SELECT count(*) FROM behind_b2;" > count.sql
out=$($B/pgbench -n -c 4 -j 2 -T 3 -h 127.0.0.1 -p 56503 -f count.sql postgres 2>&1)
echo "# pgbench through the jump: $(grep -E '^tps' <<<"$out")"
check "pgbench through the jump: no failure" grep -q "number of failed transactions: 0 " <<<"$out" ||
  echo "$out" | sed 's/^/# /' | tail -5

# --- the jump host stops answering, then comes back ---
b1pids=$(proc_tree "$(cat b1/sshd.pid)" | tr '\n' ' ')
kill -STOP $b1pids
t0=$(date +%s)
check "jump host silent: the second tunnel says why" wait_state b2 unreachable 30
echo "# detected after $(( $(date +%s) - t0 )) s (keepalive 2 s x 3)"
check "the reason names the jump tunnel" \
  grep -q 'jump tunnel "b1" is not connected' <<<"$(lsql "SELECT last_error FROM tunnel_status() WHERE name = 'b2'")"
kill -CONT $b1pids
t0=$(date +%s)
check "jump host back: first tunnel connected" wait_state b1 connected 30
check "and the second, through it" wait_state b2 connected 30
echo "# both back $(( $(date +%s) - t0 )) s after the jump host resumed"
check "query through both bastions again" \
  test "$(psql_via 56503 "SELECT count(*) FROM behind_b2")" = 1000

# --- a jump chain cannot be dropped from under its users ---
err=$(lsql "SELECT tunnel_drop('b1')" 2>&1 >/dev/null)
check "dropping a jump tunnel in use is refused" grep -q "used as jump host" <<<"$err"
err=$(lsql "SELECT tunnel_create('loop', '10.231.2.2', '127.0.0.1', via => 'nosuch')" 2>&1 >/dev/null)
check "via must name an existing tunnel" grep -q 'tunnel "nosuch" does not exist' <<<"$err"

# --- one tunnel, several forwards: three private clusters behind one sshd ---
for port in 56534 56535; do
  $B/initdb -D "priv$port" -A trust >/dev/null
  printf "port = $port\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '$dir'\n" >> "priv$port/postgresql.conf"
  $B/pg_ctl -D "priv$port" -l "priv$port.log" start -w >/dev/null
done
trap 'cleanup; for p in 56534 56535; do $B/pg_ctl -D "$dir/priv$p" stop -m immediate >/dev/null 2>&1; done' EXIT
for port in $PPORT 56534 56535; do
  $B/pgbench -i -s 1 -q -h 127.0.0.1 -p $port postgres >/dev/null 2>&1
done
keys_before=$(wc -l < sshd/authorized_keys)
lsql "SELECT tunnel_create('multi', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => 56510)" >> sshd/authorized_keys
wait_state multi connected 15 >/dev/null
p2=$(lsql "SELECT tunnel_forward_add('multi', '127.0.0.1', 56534)" 2>/dev/null)
p3=$(lsql "SELECT tunnel_forward_add('multi', '127.0.0.1', 56535, local_port => 56512)" 2>/dev/null)
check "forward_add picks a port from the range" test "$p2" -ge 56500 -a "$p2" -le 56519
p4=$(lsql "SELECT tunnel_forward_add('multi', '127.0.0.1', $PPORT, local_port => 56513)" 2>fwd.err)
check "a forward to a target the line already permits: no new line" test ! -s fwd.err
port_is() { test "$(psql_via "$1" 'SHOW port')" = "$2"; }
check "... and it works at once on the running session" wait_for 3 port_is 56513 "$PPORT"
check "adding forwards kept the session (one connect attempt)" \
  test "$(lsql "SELECT connect_attempts FROM tunnel_status() WHERE name = 'multi'")" = 1
check "new targets are refused until the line is replaced and the session logs in again" \
  bash -c "! psql -X -h 127.0.0.1 -p $p2 -d postgres -Atc 'SELECT 1' >/dev/null 2>&1"
repaste multi sshd/authorized_keys
check "one key, one line, replaced in place" test "$(( $(wc -l < sshd/authorized_keys) - keys_before ))" = 1
lsql "SELECT tunnel_disable('multi')" >/dev/null; wait_state multi disabled 10 >/dev/null
lsql "SELECT tunnel_enable('multi')" >/dev/null; wait_state multi connected 15 >/dev/null
check "each forward reaches its own cluster" \
  test "$(psql_via 56510 'SHOW port') $(psql_via "$p2" 'SHOW port') $(psql_via "$p3" 'SHOW port')" = "$PPORT 56534 56535"
lsql "SELECT tunnel_forward_drop('multi', 56513)" >/dev/null
attempts=$(lsql "SELECT connect_attempts FROM tunnel_status() WHERE name = 'multi'")

$B/pgbench -n -S -c 4 -j 2 -T 6 -h 127.0.0.1 -p 56510 postgres > pgb1.out 2>&1 &
b1job=$!
$B/pgbench -n -S -c 4 -j 2 -T 6 -h 127.0.0.1 -p "$p3" postgres > pgb3.out 2>&1 &
b3job=$!
# Both pgbench runs connected (8 backends on the two clusters), then the drop.
benching() {
  test $(( $(psql -X -h 127.0.0.1 -p $PPORT -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'") +
           $(psql -X -h 127.0.0.1 -p 56535 -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'") )) -ge 8
}
wait_for 10 benching
lsql "SELECT tunnel_forward_drop('multi', $p2)" >/dev/null
closed() { ! (exec 3<>/dev/tcp/127.0.0.1/$p2) 2>/dev/null; }
check "dropped forward's port is closed" wait_for 3 closed
check "... while pgbench still ran on the others" kill -0 $b1job $b3job
wait $b1job $b3job
echo "# pgbench during the drop: $(grep -h '^tps' pgb1.out pgb3.out | cut -c1-16 | tr '\n' ' ')"
check "the other forwards carried pgbench without a failure" \
  test "$(grep -h 'number of failed transactions: 0 ' pgb1.out pgb3.out | wc -l)" = 2
check "and the session was never dropped" \
  test "$(lsql "SELECT connect_attempts FROM tunnel_status() WHERE name = 'multi'")" = "$attempts"

for bad in "tunnel_forward_add('nosuch', '127.0.0.1')|does not exist" \
           "tunnel_forward_add('multi', '127.0.0.1', local_port => 56512)|already used" \
           "tunnel_forward_add('multi', 'bad host!')|invalid remote_host" \
           "tunnel_forward_drop('multi', 56599)|has no forward" ; do
  err=$(lsql "SELECT ${bad%|*}" 2>&1 >/dev/null)
  check "refused: ${bad%|*}" grep -q "${bad#*|}" <<<"$err"
done
lsql "SELECT tunnel_forward_drop('multi', $p3)" >/dev/null
err=$(lsql "SELECT tunnel_forward_drop('multi', 56510)" 2>&1 >/dev/null)
check "the last forward cannot be dropped" grep -q "HINT:  Use tunnel_drop" <<<"$err"

# --- foreign servers in one call ---
lsql "SELECT tunnel_server_create('multi_db', 'multi', 'postgres', options => '{fetch_size=5000,use_remote_estimate=true}');
      CREATE USER MAPPING FOR CURRENT_USER SERVER multi_db OPTIONS (user '$me');
      CREATE SCHEMA remote; IMPORT FOREIGN SCHEMA public LIMIT TO (pgbench_accounts, pgbench_branches) FROM SERVER multi_db INTO remote;" >/dev/null
check "the server points at the tunnel's port" \
  grep -q "port=56510" <<<"$(lsql "SELECT array_to_string(srvoptions, ' ') FROM pg_foreign_server WHERE srvname = 'multi_db'")"
q="SELECT b.bid, count(*) FROM remote.pgbench_accounts a JOIN remote.pgbench_branches b ON a.bid = b.bid GROUP BY b.bid"
check "IMPORT FOREIGN SCHEMA and a join through the server" test "$(lsql "$q")" = "1|100000"
check "the join is pushed down" grep -q "Remote SQL: SELECT.*JOIN" <<<"$(lsql "EXPLAIN VERBOSE $q")"
check "dblink over the same server" \
  test "$(lsql "SELECT * FROM dblink('multi_db', 'SHOW port') AS t(port text)")" = "$PPORT"
# A local port that moves (tunnel_alter does this) takes the server with it.
lsql "UPDATE tunnel_ssh.forward SET local_port = 56515 WHERE local_port = 56510" >/dev/null
check "the server followed the port" \
  grep -q "port=56515" <<<"$(lsql "SELECT array_to_string(srvoptions, ' ') FROM pg_foreign_server WHERE srvname = 'multi_db'")"
branches() { test "$(lsql "SELECT count(*) FROM remote.pgbench_branches")" = 1; }
check "and still works" wait_for 5 branches
err=$(lsql "SELECT tunnel_server_create('x', 'multi', 'postgres', options => '{port=1}')" 2>&1 >/dev/null)
check "options cannot override host or port" grep -q 'option "port" is set by tunnel_server_create' <<<"$err"
err=$(lsql "SELECT tunnel_drop('multi')" 2>&1 >/dev/null)
check "tunnel_drop refuses while a server uses the tunnel" grep -q 'foreign server "multi_db" uses tunnel "multi"' <<<"$err"
lsql "SELECT tunnel_drop('multi', cascade => true)" >/dev/null 2>&1
check "cascade drops the server too" \
  test "$(lsql "SELECT count(*) FROM pg_foreign_server WHERE srvname = 'multi_db'")" = 0

suite_end
