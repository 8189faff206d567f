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
pass=0 fail=0
ok()   { pass=$((pass+1)); echo "ok $((pass+fail)) - $1"; }
notok(){ fail=$((fail+1)); echo "not ok $((pass+fail)) - $1"; }
check(){ local name=$1; shift; if "$@"; then ok "$name"; else notok "$name"; fi; }
me=$(id -un)

lsql "CREATE EXTENSION tunnel_ssh; CREATE EXTENSION postgres_fdw; CREATE EXTENSION dblink;"

# --- jump host ---
# The first bastion, with a forward of its own (to its private side).
lsql "SELECT tunnel_create('b1', '10.231.1.2', '10.231.2.2', 2222, ssh_port => 2222, ssh_user => '$me', local_port => 56501)" >> b1/authorized_keys
# The second bastion, straight from here: there is no route to it.
lsql "SELECT tunnel_create('b2_direct', '10.231.2.2', '127.0.0.1', 5432, ssh_port => 2222, ssh_user => '$me', local_port => 56502)" >> b2/authorized_keys
# And through the first, as ssh -J does.
lsql "SELECT tunnel_create('b2', '10.231.2.2', '127.0.0.1', 5432, ssh_port => 2222, ssh_user => '$me', local_port => 56503, via => 'b1')" >> b2/authorized_keys

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

echo "1..$((pass+fail))"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
