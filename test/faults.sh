#!/usr/bin/env bash
# Faults, with real parts: a bastion that is not there yet, a bastion that
# accepts and never speaks, a network that goes silent mid-query, sshd killed
# mid-COPY, the private database restarted, the worker SIGKILLed, a local
# port held by another process, the default backoff, keepalive_interval
# changed by reload.  Each check fails if the behaviour breaks;
# "# " lines print how long recovery took and what the client saw.  Prints
# "N passed, N failed" last.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
LPORT=57432 PPORT=57433 SPORT=57222
SPORT2=57223       # a second sshd, started late (item 1)
SILENT=57224       # a TCP listener that never speaks (item 2)
MAIN=57401 OTHER=57402 LATE=57403 SILENT_LOCAL=57404
# The smallest keepalive_interval the setting allows.
KA_INTERVAL=1 KA_COUNT=3 CONNECT_TIMEOUT=3
LOCAL_CONF="tunnel_ssh.port_range = '57400-57419'
tunnel_ssh.keepalive_interval = $KA_INTERVAL
tunnel_ssh.keepalive_count = $KA_COUNT
tunnel_ssh.connect_timeout = $CONNECT_TIMEOUT"
. "$(dirname "$0")/lib.sh"
harness_start
me=$(id -un)
suite_t0=$(date +%s)
# LogLevel DEBUG1: sshd logs each channel request, the worker's keepalive
# probes among them (item 8).
kill_sshd
sed -i 's/^LogLevel .*/LogLevel DEBUG1/' sshd/sshd_config
start_sshd
env_requests() { grep -c "server_input_channel_req: channel [0-9]* request env reply 1" sshd/log; }
more_than() { [ "$("${@:2}")" -gt "$1" ]; }   # N cmd...: cmd prints more than N

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
check "3. psql says the server closed the connection" grep -q "server closed the connection unexpectedly" inflight.out
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
check "4. psql says the COPY failed as the server closed the connection" \
  grep -q "COPY data transfer failed: server closed the connection unexpectedly" copy.err
check "4. the output is short, not truncated-but-success" test "$part" -lt "$full"
rm -f part.out
# Clients that arrive while the bastion is gone for a moment (within
# connect_timeout of the loss) wait for it instead of failing.
held=()
active_of() { lsql "SELECT active_connections FROM tunnel_status() WHERE name = '$1'"; }
a0=$(active_of main)
for i in 1 2 3 4; do
  ( psql -X -h 127.0.0.1 -p $MAIN -d "dbname=postgres connect_timeout=20" -Atc "SELECT $i" > held$i.out 2>&1
    echo $? > held$i.rc ) &
  held+=($!)
done
four_held() { test "$(active_of main)" -ge $((a0 + 4)); }
check "4. four clients arrive while sshd is down, and are held" wait_for 3 four_held
start_sshd
t0=$(now_ms)
check "4. sshd back: connected again" wait_state main connected 20
echo "# reconnected $(since $t0) s after sshd started"
for p in "${held[@]}"; do wait "$p"; done
held_ok=0
for i in 1 2 3 4; do [ "$(cat held$i.rc)" = 0 ] && [ "$(cat held$i.out)" = "$i" ] && held_ok=$((held_ok+1)); done
echo "# 4 clients held while sshd was down: $held_ok served, $(( $(now_ms) - t0 )) ms after sshd started; $(cat held*.out | grep -v '^[0-9]$' | sort -u | tr '\n' ' ')"
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

# --- 8. the default backoff (every other item runs with lib.sh's 2 s cap) ---
# A tunnel to a port where nothing listens fails at once at each attempt,
# so the status's state_since (set when the attempt fails) times each one.
# Failure n waits a delay drawn from [b/2, b], b = 0.5 s x 2^(n-1) up to
# reconnect_max_delay (30 s by default): the first six attempts show the
# doubling; a client arriving in backoff gets an attempt at once (at most one
# a second); and after eight failures the wait is capped (15-30 s, not the
# 32-64 s of the doubling), measured while item 9 runs.
DOWN=57225 DFLT_LOCAL=57405
boot=$(lsql "SELECT boot_val FROM pg_settings WHERE name = 'tunnel_ssh.reconnect_max_delay'")
set_max_delay() {
  local n
  n=$(grep -c 'parameter "tunnel_ssh.reconnect_max_delay" changed' local.log)
  lsql "ALTER SYSTEM SET tunnel_ssh.reconnect_max_delay = $1" && lsql "SELECT pg_reload_conf()" >/dev/null
  wait_for 10 more_than "$n" grep -c 'parameter "tunnel_ssh.reconnect_max_delay" changed' local.log
}
check "8. reconnect_max_delay set to its default ($boot s) by reload" set_max_delay "$boot"
# AT[n]: when attempt n failed (ms since the epoch, the server's clock).
declare -A AT
sample_dflt() {
  local r a since
  r=$(lsql "SELECT connect_attempts || ' ' || (extract(epoch FROM state_since) * 1000)::bigint FROM tunnel_status() WHERE name = 'dflt' AND state = 'unreachable'")
  [ -n "$r" ] || return 1
  read -r a since <<<"$r"
  [ -n "${AT[$a]:-}" ] || AT[$a]=$since
}
attempts_reach() {  # n: samples until attempt n has failed
  sample_dflt
  [ -n "${AT[$1]:-}" ]
}
wait_attempt() {  # n seconds
  local end=$(( $(now_ms) + $2 * 1000 ))
  until attempts_reach "$1"; do
    [ "$(now_ms)" -ge "$end" ] && return 1
    sleep 0.04
  done
}
delay_of() { echo $(( ${AT[$(( $1 + 1 ))]:-0} - ${AT[$1]:-0} )); }   # ms after failure n
# Within [b/2, b] of failure n's base b (ms), with 300 ms for a busy worker.
in_jitter() {  # n base_ms
  local d
  d=$(delay_of "$1")
  [ "$d" -ge $(( $2 / 2 - 20 )) ] && [ "$d" -le $(( $2 + 300 )) ]
}
lsql "SELECT tunnel_create('dflt', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $DOWN, ssh_user => '$me', local_port => $DFLT_LOCAL)" >/dev/null
t0=$(now_ms)
check "8. six attempts, each after the one before failed (within 20 s)" wait_attempt 6 20
echo "# delays after failures 1-5: $(for n in 1 2 3 4 5; do printf '%s ' "$(secs "$(delay_of $n)")"; done)s (want 0.25-0.5, 0.5-1, 1-2, 2-4, 4-8); attempts 1-6 in $(since $t0) s"
doubling() { in_jitter 1 500 && in_jitter 2 1000 && in_jitter 3 2000 && in_jitter 4 4000 && in_jitter 5 8000; }
check "8. the delays double from 0.5 s: each within [b/2, b], b = 0.5, 1, 2, 4, 8 s" doubling
check "8. ... past the 2 s cap the other items use" test "$(delay_of 5)" -gt 2300
# The sixth failure waits 8-16 s; a client arriving a second after it gets
# an attempt at once.
client_at() {  # n: a client arrives a second after attempt n failed
  local out
  while [ "$(( $(lsql "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint") - AT[$1] ))" -lt 1100 ]; do sleep 0.05; done
  c_at=$(lsql "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
  out=$(psql -X -h 127.0.0.1 -p $DFLT_LOCAL -d "dbname=postgres connect_timeout=5" -Atc "SELECT 1" 2>&1) && echo "# client through dflt succeeded?: $out"
  wait_attempt $(( $1 + 1 )) 5
}
check "8. a client arriving in backoff: attempt 7 made" client_at 6
echo "# attempt 7 failed $(( AT[7] - c_at )) ms after the client arrived, $(secs $(( AT[7] - AT[6] ))) s after attempt 6"
check "8. ... at once (within 1 s), not after the 8-16 s backoff" test $(( AT[7] - c_at )) -lt 1000
check "8. a second client a second later: attempt 8 at once" client_at 7
check "8. ... within 1 s" test $(( AT[8] - c_at )) -lt 1000
# Item 9 runs during the capped wait (no setting of it matters here).

# --- 9. keepalive_interval raised and lowered by reload under an idle session ---
# Idle under a 12 s interval, the session is never probed; lowered to 1 s
# (x 3 = 3 s) by reload, it has been silent longer than the new schedule:
# it must be probed, not declared dead.  A bastion that goes silent after
# that is still declared dead within the new schedule.  main is the only
# session on the bastion's sshd here (other disabled), so sshd's log counts
# main's probes.
reload_to() {  # seconds
  local n
  n=$(grep -cE "keepalive_interval\" changed to \"${1}s?\"" local.log)
  lsql "ALTER SYSTEM SET tunnel_ssh.keepalive_interval = $1" && lsql "SELECT pg_reload_conf()" >/dev/null
  changed() { test "$(grep -cE "keepalive_interval\" changed to \"${1}s?\"" local.log)" -gt "$2"; }
  wait_for 10 changed "$1" "$n"
}
sshd_sessions() { proc_tree "$(cat sshd/sshd.pid)" | grep -vx "$(cat sshd/sshd.pid)" | sort | tr '\n' ' '; }
lsql "SELECT tunnel_disable('other')" >/dev/null
check "9. setup: other disabled" wait_state other disabled 10
check "9. setup: main connected" wait_state main connected 10
check "9. keepalive_interval 12 s by reload" reload_to 12
query_ok $MAIN
# other's session gone from sshd: only main's is left.
one_session() { test "$(pgrep -P "$(cat sshd/sshd.pid)" | wc -l)" = 1; }
wait_for 10 one_session
before=$(attempts_of main) sessions=$(sshd_sessions) log_lines=$(wc -l < local.log)
# Idle for longer than the coming schedule (1 s x 3), shorter than 12 s:
# the idle time is what this item is about, no event to wait for.
sleep 4
env0=$(env_requests)
check "9. keepalive_interval 1 s by reload, after 4 s idle" reload_to 1
# The old code declared it dead at once.  Now it is probed at once, then
# every second while the probes are answered; unanswered, it would be
# declared dead 2 s (1 s x (3 - 1)) after the first probe, before a fourth.
t0=$(now_ms)
check "9. the idle session is probed (4 keepalive requests logged by sshd)" wait_for 10 more_than $((env0 + 3)) env_requests
echo "# $(( $(env_requests) - env0 )) probes in $(since $t0) s after the reload"
lost=$(tail -n +$((log_lines + 1)) local.log | grep "connection to bastion" || true)
[ -n "$lost" ] && echo "# log: $lost"
check "9. the idle session was kept: no loss logged" test -z "$lost"
check "9. ... same connect_attempts, connected" test "$(attempts_of main) $(state_of main)" = "$before connected"
check "9. ... same sshd session processes" test "$(sshd_sessions)" = "$sessions"
check "9. ... and it carries queries" query_ok $MAIN
kill -STOP $sessions
t0=$(now_ms)
check "9. then silenced: declared dead" wait_for 20 not_connected
detect=$(( $(now_ms) - t0 ))
echo "# declared dead after $(secs $detect) s (keepalive 1 s x $KA_COUNT): $(error_of main)"
check "9. within the new schedule (1 s x $KA_COUNT + 4 s)" test $detect -lt $(( (1 * KA_COUNT + 4) * 1000 ))
check "9. the log says how long it was silent and how many probes went unanswered" \
  grep -qE "no answer for [0-9]+ s, [0-9]+ keepalive probes? unanswered" <<<"$(tail -n +$((log_lines + 1)) local.log)"
kill -CONT $sessions
kill $sessions 2>/dev/null
check "9. reconnected" wait_state main connected 20

# --- 8, continued: the capped wait after eight failures ---
check "8. attempt 9 came on its own, after the capped wait (within 31 s of attempt 8)" \
  wait_attempt 9 $(( (AT[8] + 31000 - $(lsql "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")) / 1000 + 1 ))
echo "# attempt 9 failed $(secs "$(delay_of 8)") s after attempt 8 (capped: 15-30 s; doubling uncapped: 32-64 s)"
check "8. the wait after eight failures is capped at reconnect_max_delay: within [15, 30] s" in_jitter 8 30000
lsql "SELECT tunnel_drop('dflt')" >/dev/null

echo "# suite ran $(( $(date +%s) - suite_t0 )) s"
suite_end
