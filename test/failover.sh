#!/usr/bin/env bash
# Failover between bastions (issue 28), with real parts: two sshd bastions
# on 127.0.0.1 (A on $SA, B on $SB, each with its own host key), a private
# PostgreSQL, one tunnel through both ('127.0.0.1:$SA, 127.0.0.1:$SB').
#   1. it serves through A, the first; B is standby
#   2. A frozen (SIGSTOP on A's per-connection sshd processes of the tunnel,
#      not its listener) under a pgbench loop and a stream of new
#      connections: served through B within keepalive_interval x
#      keepalive_count + connect_timeout; failures only in that window; B's
#      host key recorded for B; A in backoff; a handful of logins, no penalty
#   3. A resumed: no failback while B serves (12 s of 1 s keepalives)
#   4. B stopped: the tunnel returns to A
#   5. tunnel_test walks both bastions and says which would serve
#   6. the first bastion down at create time (nothing listens): served
#      through the second within connect_timeout, the first in backoff
#   7. a pin list naming A's and B's keys works through both (tunnel_alter
#      of the list puts B first); a pin list without B's key refuses B
# "# " lines print the measurements.  Prints "N passed, N failed" last.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
LPORT=51432 PPORT=51433 SPORT=51222
SA=$SPORT SB=51223 DOWN=51224          # bastion A, bastion B, nothing listens
TP=51401 TD=51402 TPIN=51403 TQ=51404  # local ports of the tunnels
KA_INTERVAL=1 KA_COUNT=3 CONNECT_TIMEOUT=5
# Served again within this after a freeze: declared dead, then one connect
# (and 3 s for a busy machine).
FAILOVER_S=$(( KA_INTERVAL * KA_COUNT + CONNECT_TIMEOUT + 3 ))
LOCAL_CONF="tunnel_ssh.port_range = '51400-51419'"
. "$(dirname "$0")/lib.sh"
harness_start
me=$(id -un)
suite_t0=$(date +%s)
export PGSSLMODE=disable
BA="127.0.0.1:$SA" BB="127.0.0.1:$SB"   # bastions A and B ($B is the bin directory)

# Processes this suite stops (SIGSTOP) are resumed before cleanup kills them.
frozen=()
failover_cleanup() {
  [ ${#frozen[@]} -gt 0 ] && kill -CONT "${frozen[@]}" 2>/dev/null
  cleanup
}
trap failover_cleanup EXIT

# The settings by ALTER SYSTEM and reload, as a DBA sets them.
set_conf() {  # name value
  local n
  # Already so (a default): nothing changes, nothing is logged.
  [ "$(lsql "SELECT setting FROM pg_settings WHERE name = 'tunnel_ssh.$1'")" = "$2" ] && return 0
  n=$(grep -c "parameter \"tunnel_ssh.$1\" changed" local.log)
  lsql "ALTER SYSTEM SET tunnel_ssh.$1 = $2" && lsql "SELECT pg_reload_conf()" >/dev/null
  wait_for 10 bash -c "[ \$(grep -c 'parameter \"tunnel_ssh.$1\" changed' local.log) -gt $n ]"
}
check "setup: keepalive_interval $KA_INTERVAL s by reload" set_conf keepalive_interval $KA_INTERVAL
check "setup: keepalive_count $KA_COUNT by reload" set_conf keepalive_count $KA_COUNT
check "setup: connect_timeout $CONNECT_TIMEOUT s by reload" set_conf connect_timeout $CONNECT_TIMEOUT

# Bastion B: a second sshd with its own host key and authorized_keys.
mkdir -p sshd2
ssh-keygen -q -t ed25519 -N '' -f sshd2/host_key
touch sshd2/authorized_keys; chmod 600 sshd2/authorized_keys
sed -e "s/^Port .*/Port $SB/" -e "s|^PidFile .*|PidFile $dir/sshd2/sshd.pid|" \
    -e "s|^HostKey .*|HostKey $dir/sshd2/host_key|" \
    -e "s|^AuthorizedKeysFile .*|AuthorizedKeysFile $dir/sshd2/authorized_keys|" \
    sshd/sshd_config > sshd2/sshd_config
start_sshd_b() { /usr/sbin/sshd -f "$dir/sshd2/sshd_config" -E "$dir/sshd2/log"; }
start_sshd_b
check "setup: bastions A ($SA) and B ($SB) listen" wait_for 5 bash -c "(exec 3<>/dev/tcp/127.0.0.1/$SA) && (exec 3<>/dev/tcp/127.0.0.1/$SB)"
fp_a=$(ssh-keygen -l -f sshd/host_key.pub | awk '{print $2}')
fp_b=$(ssh-keygen -l -f sshd2/host_key.pub | awk '{print $2}')
check "setup: A and B have host keys of their own" test "$fp_a" != "$fp_b"
listener_a=$(cat sshd/sshd.pid)
listener_b() { cat sshd2/sshd.pid 2>/dev/null; }

pgbench -q -i -s 1 -h 127.0.0.1 -p $PPORT postgres >/dev/null 2>&1
lsql "CREATE EXTENSION tunnel_ssh;"
# The same authorized_keys line goes on each bastion.
paste_both() { tee -a sshd/authorized_keys >> sshd2/authorized_keys; }

# --- 1. a tunnel through two bastions serves through the first ---
api=yes
if ! lsql "SELECT tunnel_create('t', '$BA, $BB', '127.0.0.1', $PPORT, ssh_user => '$me', local_port => $TP)" > t.line 2> create.err; then
  api=no
  echo "# tunnel_create with a list of bastions refused: $(head -n 1 create.err)"
  # What the rest of the suite can still prove without the API: a tunnel
  # through A alone, to find, freeze and resume A's sessions.
  lsql "SELECT tunnel_create('t', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SA, ssh_user => '$me', local_port => $TP)" > t.line
fi
paste_both < t.line
check "1. tunnel_create takes a list of two bastions" test $api = yes
check "1. connected" wait_state t connected 15
check "1. a query through it" query_ok $TP
bastion_of() { lsql "SELECT bastion FROM tunnel_status() WHERE name = '$1'" 2>/dev/null; }
served_by() { test "$(bastion_of "$1")" = "$2"; }   # tunnel host:port
check "1. tunnel_status().bastion names A, the first" served_by t "$BA"
check "1. sshd A's log shows the login" grep -q "Accepted publickey for $me from 127.0.0.1" sshd/log
rows() {  # tunnel: position|host|port|state per bastion
  lsql "SELECT string_agg(concat_ws('|', position, host, port, state), ' ' ORDER BY position) FROM tunnel_ssh.bastion_status WHERE tunnel = '$1'" 2>/dev/null
}
col() {  # tunnel position column
  lsql "SELECT $3 FROM tunnel_ssh.bastion_status WHERE tunnel = '$1' AND position = $2" 2>/dev/null
}
echo "# bastion_status of t: $(rows t)"
check "1. bastion_status: two rows, A serving, B standby" \
  test "$(rows t)" = "1|127.0.0.1|$SA|serving 2|127.0.0.1|$SB|standby"
has_fp() { grep -qF -- "$3" <<<"$(col "$1" "$2" host_key_fingerprint)"; }  # tunnel position fp
check "1. A's row has A's host key, recorded on first use" has_fp t 1 "$fp_a"
lsql "CREATE ROLE watcher LOGIN; GRANT pg_monitor TO watcher"
wsql() { psql -X -q -h "$dir" -p $LPORT -d postgres -U watcher -Atc "$1" 2>&1; }
check "1. a pg_monitor member reads bastion_status (two rows)" \
  test "$(wsql "SELECT count(*) FROM tunnel_ssh.bastion_status WHERE tunnel = 't'")" = 2

# --- 2. A frozen under pgbench and a stream of new connections ---
# The per-connection sshd processes of A that serve tunnel t: the worker's
# TCP connections to A (ss, by the worker's pid), their ports matched to
# the sshd side's sockets, whose process is a child of A's listener; and
# sshd A's log names each port ("Connection from 127.0.0.1 port N").
worker_pid() { lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'"; }
worker_ports_to() {  # sshd port: the worker's local ports of its connections there
  ss -Htnp state established "( dport = :$1 )" | grep "pid=$(worker_pid)," |
    awk '{ n = split($3, a, ":"); print a[n] }' | sort -u
}
sessions_of() {  # sshd_port listener_pid: the listener's children serving the worker
  local port p
  for port in $(worker_ports_to "$1"); do
    for p in $(ss -Htnp state established "( sport = :$1 and dport = :$port )" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
      [ "$(awk '{print $4}' /proc/$p/stat 2>/dev/null)" = "$2" ] && echo "$p"
    done
  done | sort -u
}
# Each found process is stopped before its children are listed (kill_tree's
# reasoning), and remembered for cleanup's SIGCONT.
freeze() {  # pid...
  local p
  for p in "$@"; do frozen+=($(proc_tree_stopped "$p")); done
}
thaw() { [ ${#frozen[@]} -gt 0 ] && kill -CONT "${frozen[@]}" 2>/dev/null; frozen=(); }

# A stream of new connections, one every 0.1 s: "start_ms end_ms rc" per
# connection (libpq waits up to 15 s, longer than the tunnel holds a client).
# Both loops end when the file "stop" exists, each after its current client.
stream() {  # port file
  local s rc
  while [ ! -e stop ]; do
    s=$(now_ms)
    psql -X -h 127.0.0.1 -p "$1" -d "dbname=postgres connect_timeout=15" -Atc "SELECT 1" >/dev/null 2>&1
    rc=$?
    echo "$s $(now_ms) $rc" >> "$2"
    sleep 0.1
  done
}
# pgbench as an application that reconnects: runs of 3 s, each until it
# ends or aborts (its connections closed), then another starts.  The
# per-transaction logs (-l) give when each transaction ended (a run must
# end by itself to write all of its log); PREFIX.runs "end_ms rc" per run.
pgbench_loop() {  # port prefix
  local n=0 rc
  while [ ! -e stop ]; do
    n=$((n+1))
    pgbench -n -S -c 2 -T 3 -l --log-prefix="$2.$n" -h 127.0.0.1 -p "$1" postgres > "$2.$n.out" 2>&1
    rc=$?
    echo "$(now_ms) $rc" >> "$2.runs"
  done
}
stop_bg() { local p; touch stop; for p in "$@"; do wait "$p" 2>/dev/null; done; rm -f stop; }

rm -f stop; : > stream.txt
stream $TP stream.txt & stream_pid=$!
pgbench_loop $TP pgb & pgb_pid=$!
extra_pids+=($stream_pid $pgb_pid)
ok_after() { awk -v t="$1" -v n="$2" '$1 >= t && $3 == 0 { c++ } END { exit !(c >= n) }' stream.txt; }
t_warm=$(now_ms)
check "2. the stream of new connections is served before the freeze" wait_for 15 ok_after "$t_warm" 5
check "2. pgbench runs through the tunnel" wait_for 15 bash -c "cat pgb.1.*[0-9] 2>/dev/null | grep -q ."
frozen_ports=$(worker_ports_to $SA | tr '\n' ' ')
sessions=$(sessions_of $SA "$listener_a" | tr '\n' ' ')
echo "# the worker's connections to A from ports: $frozen_ports; A's processes serving them: $sessions(listener $listener_a)"
check "2. A's per-connection sshd serving the tunnel found by the connection's port" test -n "$sessions"
check "2. ... not A's listener" bash -c "! grep -qw $listener_a <<<'$sessions'"
logged_ports() { local p; for p in $frozen_ports; do grep -q "Connection from 127.0.0.1 port $p on" sshd/log || return 1; done; }
check "2. ... sshd A's log names each of those connections" logged_ports
la0=$(grep -c "Connection from" sshd/log) lb0=$(grep -c "Connection from" sshd2/log)
pa0=$(penalty_lines sshd/log | wc -l) pb0=$(penalty_lines sshd2/log | wc -l)
# From the freeze until served through B, as often as psql can: the
# serving bastion and each bastion's state and last_error, in one
# statement (A's backoff after its first failure may last 0.25 s).
sample() {
  lsql "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint || ' ' || coalesce((SELECT bastion FROM tunnel_status() WHERE name = 't'), '-') || ' ' ||
               coalesce((SELECT string_agg(position || ':' || state || ':' || (last_error IS NOT NULL AND last_error <> '')::text || ':' || failures, ',' ORDER BY position)
                         FROM tunnel_ssh.bastion_status WHERE tunnel = 't'), '-')" 2>/dev/null >> samples.txt
}
rm -f sampled; : > samples.txt
t_freeze=$(now_ms)
freeze $sessions
echo "# froze ${frozen[*]} at $(date -u +%T.%N | cut -c1-12)"
( while [ ! -e sampled ]; do sample; sleep 0.01; done ) & sampler=$!
extra_pids+=($sampler)
left_frozen() { ! worker_ports_to $SA | grep -qxF -f <(tr ' ' '\n' <<<"$frozen_ports" | grep .); }
served_b() { served_by t "$BB" && test "$(state_of t)" = connected; }
check "2. the worker left the frozen session (within keepalive $KA_INTERVAL s x $KA_COUNT + 3 s)" \
  wait_for $(( KA_INTERVAL * KA_COUNT + 3 )) left_frozen
echo "# the worker left the frozen session $(since $t_freeze) s after the freeze"
check "2. served through B within keepalive_interval x keepalive_count + connect_timeout (+3 s)" \
  wait_for $FAILOVER_S served_b
t_served=$(now_ms)
touch sampled; wait $sampler
# sshd's connections from the freeze until served again.
la=$(( $(grep -c "Connection from" sshd/log) - la0 )) lb=$(( $(grep -c "Connection from" sshd2/log) - lb0 ))
echo "# $(secs $(( t_served - t_freeze ))) s after the freeze: bastion $(bastion_of t); bastion_status: $(rows t)"
check "2. a new connection after the failover succeeds" query_ok $TP
check "2. sshd B's log shows the login" grep -q "Accepted publickey for $me from 127.0.0.1" sshd2/log
check "2. B's row has B's host key, recorded for B" has_fp t 2 "$fp_b"
check "2. ... and A's row still A's" has_fp t 1 "$fp_a"
check "2. the two rows' host keys differ" test "$(col t 1 host_key_fingerprint)" != "$(col t 2 host_key_fingerprint)"
echo "# $(wc -l < samples.txt) samples (ms bastion position:state:has_error:failures), the last:"; tail -n 3 samples.txt | sed 's/^/#   /'
check "2. A was in backoff, with its last_error, after it failed" grep -q ' 1:backoff:true' samples.txt
check "2. ... its failures in a row counted" grep -qE ' 1:backoff:true:[1-9]' samples.txt
# The stream and pgbench run on for 3 s after the failover: the measured
# window needs them (served again, and staying served).
sleep 3
stop_bg $stream_pid $pgb_pid
t_end=$(now_ms)
win_end=$(( t_served + 1000 ))
gap=$(awk '$3 == 0 { if (p && $2 - p > g) g = $2 - p; p = $2 } END { print g + 0 }' stream.txt)
nfail=$(awk '$3 != 0' stream.txt | wc -l)
# A failure outside the window: one that ended before the freeze, or
# started after the window (one in flight at the freeze is caught by it).
outside=$(awk -v a="$t_freeze" -v b="$win_end" '$3 != 0 && ($2 < a || $1 > b)' stream.txt | wc -l)
echo "# stream: $(wc -l < stream.txt) new connections, $nfail failed ($outside outside the window), longest gap between successes $(secs $gap) s"
check "2. new connections failed only in the failover window" test "$outside" = 0
check "2. new connections succeed after it (5 or more)" ok_after "$win_end" 5
# pgbench: transaction end times (epoch s + us) from every run's log.
cat pgb.*.[0-9]* 2>/dev/null | awk '$3 != "failed" && $3 != "skipped" { printf "%.0f\n", $5 * 1000 + $6 / 1000 }' | sort -n > pgb.ends
ptx_before=$(awk -v a="$t_freeze" '$1 < a' pgb.ends | wc -l)
ptx_after=$(awk -v b="$win_end" '$1 > b' pgb.ends | wc -l)
pgap=$(awk -v a="$t_freeze" '$1 >= a - 2000 { if (p && $1 - p > g) g = $1 - p; p = $1 } END { print g + 0 }' pgb.ends)
pfail_out=$(awk -v a="$t_freeze" -v b="$win_end" '$2 != 0 && ($1 < a || $1 > b + 2000)' pgb.runs 2>/dev/null | wc -l)
aborted=$(grep -h "aborted" pgb.*.out 2>/dev/null | head -n 2 | tr '\n' ' ' | cut -c1-160)
echo "# pgbench: $ptx_before transactions before the freeze, $ptx_after after the window, longest gap $(secs $pgap) s; runs ended: $(awk '{ printf "%s(rc %s) ", $1 - '"$t_freeze"', $2 }' pgb.runs 2>/dev/null)ms after the freeze; $aborted"
check "2. pgbench ran transactions before the freeze" test "$ptx_before" -gt 0
check "2. pgbench's failed runs ended only in the window" test "$pfail_out" = 0
check "2. pgbench runs transactions again after it" test "$ptx_after" -gt 0
echo "# connections during the failover: A $la, B $lb"
check "2. a handful of connections to A during the failover (<= 3)" test "$la" -le 3
check "2. a handful of connections to B during the failover (<= 3)" test "$lb" -le 3
if sshd_penalises; then
  check "2. no penalty on A or B" test "$(( $(penalty_lines sshd/log | wc -l) - pa0 + $(penalty_lines sshd2/log | wc -l) - pb0 ))" = 0
else
  skip "2. no penalty on A or B" "OpenSSH $(ssh -V 2>&1 | cut -d, -f1) has no PerSourcePenalties"
fi

# --- 3. A resumed: no failback while B serves ---
thaw
kill $sessions 2>/dev/null   # A's stale sessions: the worker has left them
t0=$(now_ms)
# 12 s of 1 s keepalives on B: the serving bastion sampled every 0.5 s
# (the window is what this item measures).
stay=$(for _ in $(seq 1 24); do bastion_of t; sleep 0.5; done | sort | uniq -c | tr '\n' ' ')
echo "# serving bastion over $(since $t0) s after A resumed: $stay"
check "3. no failback: B serves all 12 s after A came back" test "$(tr -s ' ' <<<"$stay" | sed 's/^ //; s/ $//')" = "24 $BB"
check "3. A's row is not serving" bash -c "[ '$(col t 1 state)' = standby ] || [ '$(col t 1 state)' = backoff ]"

# --- 4. B stopped: the tunnel returns to A ---
kill_sshd_by_config "$dir/sshd2/sshd_config"
rm -f sshd2/sshd.pid
t0=$(now_ms)
served_a() { served_by t "$BA" && test "$(state_of t)" = connected; }
check "4. B stopped: served through A again" wait_for $FAILOVER_S served_a
echo "# $(since $t0) s after B stopped: bastion $(bastion_of t); bastion_status: $(rows t)"
check "4. a query through A" query_ok $TP
check "4. B in backoff, with its last_error" \
  test "$(col t 2 state) $(test -n "$(col t 2 last_error)" && echo yes)" = "backoff yes"

# --- 5. tunnel_test walks both bastions ---
start_sshd_b
wait_for 5 port_open $SB
tt=$(lsql "SELECT step || ' | ' || ok || ' | ' || coalesce(detail, '') FROM tunnel_test('t')" 2>&1)
sed 's/^/# tunnel_test: /' <<<"$tt" | cut -c1-160
check "5. tunnel_test names both bastions" bash -c "grep -qF '$BA' <<<\"\$1\" && grep -qF '$BB' <<<\"\$1\"" _ "$tt"
check "5. its 'serving' row says A would serve" \
  grep -qF "$BA" <<<"$(lsql "SELECT detail FROM tunnel_test('t') WHERE step = 'serving'" 2>/dev/null)"

# --- 6. the first bastion down at create time ---
t0=$(now_ms)
lsql "SELECT tunnel_create('d', '127.0.0.1:$DOWN, $BA', '127.0.0.1', $PPORT, ssh_user => '$me', local_port => $TD)" 2>/dev/null | paste_both
served_d() { served_by d "$BA" && test "$(state_of d)" = connected; }
check "6. nothing listens on the first: served through the second within connect_timeout" \
  wait_for $(( CONNECT_TIMEOUT + 1 )) served_d
echo "# d, $(since $t0) s after create: bastion $(bastion_of d); bastion_status: $(rows d); first's last_error: $(col d 1 last_error)"
check "6. a query through it" query_ok $TD
check "6. the first is in backoff, with its last_error" \
  test "$(col d 1 state) $(test -n "$(col d 1 last_error)" && echo yes)" = "backoff yes"

# --- 7. pins: a list naming A's and B's keys works through both ---
lsql "SELECT tunnel_create('p', '$BA, $BB', '127.0.0.1', $PPORT, ssh_user => '$me', local_port => $TPIN, host_key_fingerprint => '$fp_a, $fp_b')" 2>/dev/null | paste_both
served_p() { served_by p "$1" && test "$(state_of p)" = connected; }
check "7. pinned A and B: served through A" wait_for 15 served_p "$BA"
lsql "SELECT tunnel_alter('p', ssh_host => '$BB, $BA')" >/dev/null 2>&1
check "7. tunnel_alter puts B first: served through B, its pin accepted" wait_for 15 served_p "$BB"
check "7. a query through B" query_ok $TPIN
echo "# p: $(rows p)"
# A pin list without B's key refuses B (one attempt, then A serves).
lsql "SELECT tunnel_create('q', '$BB, $BA', '127.0.0.1', $PPORT, ssh_user => '$me', local_port => $TQ, host_key_fingerprint => '$fp_a')" 2>/dev/null | paste_both
served_q() { served_by q "$BA" && test "$(state_of q)" = connected; }
check "7. pinned A only, B first: B refused, served through A" wait_for 15 served_q
echo "# q: $(rows q); B's last_error: $(col q 1 last_error)"
check "7. ... B's row says its host key did not match" grep -qi "host key" <<<"$(col q 1 last_error)"

echo "# api: $api"
echo "# suite ran $(( $(date +%s) - suite_t0 )) s"
suite_end
