#!/usr/bin/env bash
# Faults, with real parts: a bastion that is not there yet, a bastion that
# accepts and never speaks, a network that goes silent mid-query, sshd killed
# mid-COPY, the private database restarted, the worker SIGKILLed, a local
# port held by another process.  Each check fails if the behaviour breaks;
# "# " lines print how long recovery took and what the client saw.  Prints
# "N passed, N failed" last.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
LPORT=57432 PPORT=57433 SPORT=57222
SPORT2=57223       # a second sshd, started late (item 1)
SILENT=57224       # a TCP listener that never speaks (item 2)
MAIN=57401 OTHER=57402 LATE=57403 SILENT_LOCAL=57404
KA_INTERVAL=2 KA_COUNT=3 CONNECT_TIMEOUT=3
LOCAL_CONF="tunnel_ssh.port_range = '57400-57419'
tunnel_ssh.keepalive_count = $KA_COUNT
tunnel_ssh.connect_timeout = $CONNECT_TIMEOUT"
. "$(dirname "$0")/lib.sh"
harness_start
me=$(id -un)
suite_t0=$(date +%s)

# A TCP listener on 127.0.0.1:$1 that accepts and never writes nor closes.
silent_listener() {
  perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0],
                                  Listen => 16, ReuseAddr => 1) or die "listen: $!\n";
    my @held; while (my $c = $s->accept) { push @held, $c }' "$1" &
  extra_pids+=($!)
  wait_for 5 port_open "$1"
}
stop_pid() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -c \
  "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, 450000) g;"
lsql "CREATE EXTENSION tunnel_ssh;"
mk() {  # name ssh_port local_port: create, authorize its key
  lsql "SELECT tunnel_create('$1', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $2, ssh_user => '$me', local_port => $3)" \
    >> sshd/authorized_keys
}
mk main $SPORT $MAIN
mk other $SPORT $OTHER
check "setup: main connected" wait_state main connected 15
check "setup: other connected" wait_state other connected 15

# --- 1. bastion unreachable at create time, then it comes up ---
mkdir -p sshd2
sed -e "s/^Port .*/Port $SPORT2/" -e "s|^PidFile .*|PidFile $dir/sshd2/sshd.pid|" \
  sshd/sshd_config > sshd2/sshd_config
mk late $SPORT2 $LATE
check "1. nothing listening on the bastion port: unreachable" wait_state late unreachable 10
err=$(error_of late)
echo "# last_error: $err"
check "1. last_error has the socket error" \
  grep -q "could not connect to 127.0.0.1 port $SPORT2: Connection refused" <<<"$err"
/usr/sbin/sshd -f "$dir/sshd2/sshd_config" -E "$dir/sshd2/log"
t0=$(now_ms)
check "1. bastion started: connected on its own" wait_state late connected 20
echo "# connected $(since $t0) s after the bastion started (reconnect_max_delay 2 s)"
check "1. query through it" query_ok $LATE

# --- 2. a bastion that accepts TCP and never speaks ---
silent_listener $SILENT
lsql "SELECT tunnel_create('silent', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SILENT, ssh_user => '$me', local_port => $SILENT_LOCAL)" >/dev/null
t0=$(now_ms)
# Meanwhile the healthy tunnel: 50 new connections with SELECT 1.
lat=()
for i in $(seq 1 50); do
  # Its state a second in, well within connect_timeout (3 s), however
  # slow each connection of the loop is on this machine.
  [ -z "${during:-}" ] && [ $(( $(now_ms) - t0 )) -ge 1000 ] && during=$(state_of silent)
  q0=$(now_ms)
  psql_via $MAIN "SELECT 1" >/dev/null || lat+=(99999)
  lat+=($(( $(now_ms) - q0 )))
done
max=$(printf '%s\n' "${lat[@]}" | sort -n | tail -1)
avg=$(printf '%s\n' "${lat[@]}" | awk '{ s += $1 } END { printf "%.0f", s / NR }')
during=${during:-$(state_of silent)}
echo "# 50 x 'SELECT 1' on a new connection via main, in $(since $t0) s, while 'silent' was $during: avg $avg ms, max $max ms"
check "2. the silent bastion held its tunnel in connecting meanwhile" test "$during" = connecting
check "2. the healthy tunnel is not delayed (max < 1 s)" test "$max" -lt 1000
timed_out() { grep -q "timed out" <<<"$(error_of silent)"; }
check "2. the silent bastion's tunnel times out (< 3 x connect_timeout)" \
  wait_for $(( 3 * CONNECT_TIMEOUT )) timed_out
echo "# gave up after $(since $t0) s (connect_timeout $CONNECT_TIMEOUT s): $(error_of silent)"
check "2. the error names the SSH handshake" \
  grep -q "SSH handshake with 127.0.0.1 port $SILENT timed out after $CONNECT_TIMEOUT s" <<<"$(error_of silent)"
lsql "SELECT tunnel_drop('silent')" >/dev/null
stop_pid "${extra_pids[-1]}"

# --- 3. the network goes silent mid-query ---
timeout 60 psql -X -h 127.0.0.1 -p $MAIN -d postgres -Atc "SELECT pg_sleep(60)" > inflight.out 2>&1 &
inflight=$!
sleeping() { test "$(psql -X -h 127.0.0.1 -p $PPORT -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")" -ge 1; }
check "3. a query is in flight through the tunnel" wait_for 10 sleeping
listener=$(cat sshd/sshd.pid)
sessions=$(proc_tree "$listener" | grep -vx "$listener" | tr '\n' ' ')
check "3. sshd has sessions for the tunnels" test -n "$sessions"
echo "# stopping sshd sessions: $sessions(listener $listener keeps accepting)"
kill -STOP $sessions
t0=$(now_ms)
not_connected() { test "$(state_of main)" != connected; }
check "3. silence: session declared dead" wait_for $(( KA_INTERVAL * KA_COUNT + 10 )) not_connected
detect=$(( $(now_ms) - t0 ))
echo "# declared dead after $(secs $detect) s (keepalive ${KA_INTERVAL} s x $KA_COUNT): $(error_of main)"
check "3. within keepalive_interval x keepalive_count + 4 s" test $detect -lt $(( (KA_INTERVAL * KA_COUNT + 4) * 1000 ))
wait $inflight; rc=$?
echo "# in-flight psql exited $rc after $(since $t0) s: $(tr '\n' ' ' < inflight.out)"
check "3. the in-flight query ends with an error, not a hang" test $rc -ne 0 -a $rc -ne 124
check "3. psql says the connection was lost" grep -qi "connection" inflight.out
# sshd's listener still accepts: a new session need not wait for the old ones.
check "3. reconnected while the old sessions are still stopped" wait_state main connected 20
echo "# reconnected $(since $(( t0 + detect ))) s after the session was declared dead"
kill -CONT $sessions
kill $sessions 2>/dev/null
t0=$(now_ms)
check "3. new queries through the tunnel work" wait_for 10 query_ok $MAIN
check "3. and through the other tunnel on that sshd" wait_for 10 query_ok $OTHER
echo "# queries work $(since $t0) s after the stale sessions were resumed and ended"

# --- 4. sshd killed during a large COPY out ---
psql -X -h 127.0.0.1 -p $MAIN -d postgres -Atc "COPY big TO STDOUT" > full.out
full=$(stat -c %s full.out)
check "4. full COPY through the tunnel: every row" test "$(wc -l < full.out)" = 450000
rm -f full.out
# A slow reader (~30 MB/s) keeps the COPY in flight long enough to cut it.
( psql -X -h 127.0.0.1 -p $MAIN -d postgres -Atc "COPY big TO STDOUT" 2> copy.err |
    perl -e 'while (sysread STDIN, $b, 65536) { syswrite STDOUT, $b; select undef, undef, undef, 0.002 }' > part.out
  echo "${PIPESTATUS[0]}" > copy.rc ) &
copyjob=$!
started() { test "$(stat -c %s part.out 2>/dev/null || echo 0)" -gt 10000000; }
check "4. COPY under way" wait_for 30 started
t0=$(now_ms)
# SIGKILL to the listener and every session (computed before any dies).
kill -KILL $(for p in $(pgrep -f "sshd -f $dir/sshd/sshd_config"); do proc_tree "$p"; done)
rm -f sshd/sshd.pid
wait $copyjob
part=$(stat -c %s part.out)
echo "# psql exited $(cat copy.rc) after $(since $t0) s with $part of $full bytes: $(tr '\n' ' ' < copy.err)"
check "4. psql exits non-zero" test "$(cat copy.rc)" -ne 0
check "4. psql prints an error" grep -qiE "error|closed|lost" copy.err
check "4. the output is short, not truncated-but-success" test "$part" -lt "$full"
rm -f part.out
# Clients that arrive while the bastion is gone for a moment (within
# connect_timeout of the loss) wait for it instead of failing.
held=()
for i in 1 2 3 4; do
  ( psql -X -h 127.0.0.1 -p $MAIN -d "dbname=postgres connect_timeout=20" -Atc "SELECT $i" > held$i.out 2>&1
    echo $? > held$i.rc ) &
  held+=($!)
done
sleep 0.5
start_sshd
t0=$(now_ms)
check "4. sshd back: connected again" wait_state main connected 20
echo "# reconnected $(since $t0) s after sshd started"
for p in "${held[@]}"; do wait "$p"; done
held_ok=0
for i in 1 2 3 4; do [ "$(cat held$i.rc)" = 0 ] && [ "$(cat held$i.out)" = "$i" ] && held_ok=$((held_ok+1)); done
echo "# 4 clients started 0.5 s before sshd: $held_ok served, $(( $(now_ms) - t0 )) ms after sshd started; $(cat held*.out | grep -v '^[0-9]$' | sort -u | tr '\n' ' ')"
check "4. clients that arrived while sshd was down were held and served" test "$held_ok" = 4
check "4. query after the reconnect" wait_for 10 query_ok $MAIN

# --- 5. the private database restarts under a connected tunnel ---
wait_state main connected 10 >/dev/null
before=$(attempts_of main)
t0=$(now_ms)
$B/pg_ctl -D private -l private.log restart -m fast -w >/dev/null
restarted=$(now_ms)
check "5. new connections through the tunnel right after (10 s)" wait_for 10 query_ok $MAIN
echo "# private restart took $(secs $(( restarted - t0 ))) s; first query through the tunnel $(since $restarted) s after it was up"
check "5. the tunnel stayed connected" test "$(state_of main)" = connected
check "5. the SSH session was kept (no new connect attempt)" test "$(attempts_of main)" = "$before"

# --- 6. the worker is SIGKILLed: crash restart ---
layout="SELECT string_agg(name || ':' || local_port, ' ' ORDER BY name) FROM tunnel_status()"
catalog="SELECT string_agg(name, ' ' ORDER BY name) FROM tunnel_ssh.tunnel"
before=$(lsql "$layout")
wpid=$(lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'")
echo "# tunnels before: $before; worker pid $wpid"
deliberate_kill 9 "$wpid"
t0=$(now_ms)
reinit() { grep -q "all server processes terminated; reinitializing" local.log; }
new_worker() { test -n "$(lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker' AND pid <> $wpid")"; }
check "6. the postmaster did crash handling" wait_for 30 reinit
check "6. a new worker runs" wait_for 30 new_worker
echo "# new worker $(since $t0) s after SIGKILL"
all_connected() {
  local n
  n=$(lsql "SELECT count(*) FROM tunnel_ssh.tunnel") && [ "$n" -gt 0 ] &&
    test "$(lsql "SELECT count(*) FILTER (WHERE state = 'connected') FROM tunnel_status()")" = "$n"
}
check "6. after the crash restart every tunnel is connected" wait_for 60 all_connected
echo "# all tunnels connected $(since $t0) s after SIGKILL of the worker"
grep -E "terminated by signal 9|reinitializing|database system is ready|connected to 127" local.log |
  tail -n 6 | cut -c1-140 | sed 's/^/# log: /'
after=$(lsql "$layout")
echo "# tunnels after: $after"
check "6. tunnel_status() lists the catalog's tunnels, no loss, no duplicate" \
  test "$(lsql "SELECT string_agg(name, ' ' ORDER BY name) FROM tunnel_status()")" = "$(lsql "$catalog")"
check "6. same names and local ports as before" test "$after" = "$before"
all_query_ok() { query_ok $MAIN && query_ok $OTHER && query_ok $LATE; }
check "6. queries through every tunnel work" wait_for 10 all_query_ok

# --- 7. a tunnel's local port is held by another process ---
$B/pg_ctl -D local stop -m fast -w >/dev/null
silent_listener $OTHER
holder=${extra_pids[-1]}
$B/pg_ctl -D local -l local.log start -w >/dev/null
check "7. port taken: bind_failed" wait_state other bind_failed 15
err=$(error_of other)
echo "# last_error: $err"
check "7. last_error has the bind error" \
  grep -q "could not listen on 127.0.0.1 port $OTHER: Address already in use" <<<"$err"
check "7. another tunnel works meanwhile" wait_state main connected 15
check "7. query through it" wait_for 10 query_ok $MAIN
stop_pid "$holder"
t0=$(now_ms)
check "7. port freed: the tunnel binds and connects" wait_state other connected 10
echo "# connected $(since $t0) s after the port was freed"
check "7. query through the freed port" wait_for 5 query_ok $OTHER

# --- 8. keepalive_interval lowered by reload under an idle session ---
# Idle under a 12 s interval, the session is never probed; lowered to 2 s
# (x 3 = 6 s) by reload, it has been silent longer than the new schedule:
# it must be probed, not declared dead.  A bastion that goes silent after
# that is still declared dead within the new schedule.
reload_to() {  # seconds
  local n
  n=$(grep -cE "keepalive_interval\" changed to \"${1}s?\"" local.log)
  lsql "ALTER SYSTEM SET tunnel_ssh.keepalive_interval = $1" && lsql "SELECT pg_reload_conf()" >/dev/null
  changed() { test "$(grep -cE "keepalive_interval\" changed to \"${1}s?\"" local.log)" -gt "$2"; }
  wait_for 10 changed "$1" "$n"
}
sshd_sessions() { proc_tree "$(cat sshd/sshd.pid)" | grep -vx "$(cat sshd/sshd.pid)" | sort | tr '\n' ' '; }
check "8. setup: main connected" wait_state main connected 10
check "8. keepalive_interval 12 s by reload" reload_to 12
query_ok $MAIN
before=$(attempts_of main) sessions=$(sshd_sessions) log_lines=$(wc -l < local.log)
# Idle for longer than the coming schedule (2 s x 3), shorter than 12 s.
sleep 8.5
check "8. keepalive_interval 2 s by reload, after 8.5 s idle" reload_to 2
# Two new intervals, in which the old code declared it dead at once.
sleep 4
lost=$(tail -n +$((log_lines + 1)) local.log | grep "connection to bastion" || true)
[ -n "$lost" ] && echo "# log: $lost"
check "8. the idle session was kept: no loss logged" test -z "$lost"
check "8. ... same connect_attempts, connected" test "$(attempts_of main) $(state_of main)" = "$before connected"
check "8. ... same sshd session processes" test "$(sshd_sessions)" = "$sessions"
check "8. ... and it carries queries" query_ok $MAIN
kill -STOP $sessions
t0=$(now_ms)
check "8. then silenced: declared dead" wait_for 20 not_connected
detect=$(( $(now_ms) - t0 ))
echo "# declared dead after $(secs $detect) s (keepalive 2 s x $KA_COUNT): $(error_of main)"
check "8. within the new schedule (2 s x $KA_COUNT + 4 s)" test $detect -lt $(( (2 * KA_COUNT + 4) * 1000 ))
check "8. the log says how long it was silent and how many probes went unanswered" \
  grep -qE "no answer for [0-9]+ s, [0-9]+ keepalive probes? unanswered" <<<"$(tail -n +$((log_lines + 1)) local.log)"
kill -CONT $sessions
kill $sessions 2>/dev/null
check "8. reconnected" wait_state main connected 20

echo "# suite ran $(( $(date +%s) - suite_t0 )) s"
suite_end
