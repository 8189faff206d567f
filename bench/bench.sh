#!/usr/bin/env bash
# tunnel_ssh benchmark, run as the unprivileged user by bench/run.sh.
#
# One private PostgreSQL reached three ways, taking turns (A B C A B C ...)
# so that drift of the machine hits all alike:
#   direct      the private server's own port (the limit)
#   relay       a plain TCP relay with TCP_NODELAY (bench/latency_relay with
#               no delay): what any forwarder costs, before SSH
#   openssh     ssh -N -L to the same sshd, with the cipher and MAC that
#               libssh2 negotiates (read from the sshd log)
#   tunnel_ssh  the extension's loopback port
# Every sample goes to results.csv (round,workload,path,metric,value); the
# medians and ratios to summary.md.  Nothing here asserts a speed.
# Then, on a tunnel of their own, BENCH_CONNECTIONS (500; 0: none) client
# connections held open, four rounds (the connections part, below), and 100
# tunnels at once (the scale part).  BENCH_PART=connections (bash
# bench/run.sh connections) runs syscalls_c1 and the connections part only,
# without the bulk tables.
set -euo pipefail
dir=${1:?work directory}
cd "$dir"
LPORT=59432 PPORT=59433 SPORT=59222
LOCAL_CONF="tunnel_ssh.port_range = '59100-59399'
max_connections = 200"
# BENCH_CIPHER: the worker's tunnel_ssh.ciphers (ssh -L follows what it
# negotiates); default: the module's own preference.
[ -n "${BENCH_CIPHER:-}" ] && LOCAL_CONF="$LOCAL_CONF
tunnel_ssh.ciphers = '$BENCH_CIPHER'"
. "$dir/lib.sh"
harness_start

PART=${BENCH_PART:-}
ROUNDS=${BENCH_ROUNDS:-5} SECS=${BENCH_SECONDS:-5}
CONNS=${BENCH_CONNECTIONS:-500}
OUT_MB=540 IN_MB=210 SCALE_TUNNELS=100 SCALE_CONNS=5
if [ -n "${BENCH_QUICK:-}" ]; then
  ROUNDS=${BENCH_ROUNDS:-1} SECS=${BENCH_SECONDS:-2} OUT_MB=60 IN_MB=30 SCALE_TUNNELS=10
fi
# The scale tunnels listen on SCALE_BASE+1..+100, clear of every port above.
SCALE_BASE=59300
OSSH_PORT=59010 TUN_PORT=59100 RELAY_SSH=59020 RELAY_PG=59021 OSSH_WAN=59011 TUN_WAN=59101
PLAIN=59030 PLAIN_WAN=59031
# The connections part's tunnel.
CONN_PORT=59102
RTT_MS=20
me=$(id -un)
declare -A PORT=([direct]=$PPORT [relay]=$PLAIN [openssh]=$OSSH_PORT [tunnel_ssh]=$TUN_PORT)
declare -A WAN_PORT=([direct]=$RELAY_PG [relay]=$PLAIN_WAN [openssh]=$OSSH_WAN [tunnel_ssh]=$TUN_WAN)
PATHS="direct relay openssh tunnel_ssh"
export PGSSLMODE=disable
: > results.csv
if [ "$PART" = connections ]; then
  WORKLOADS=${BENCH_WORKLOADS-syscalls_c1}
else
  WORKLOADS=${BENCH_WORKLOADS-select_c1 select_c16 churn_c8 churn_tls_c8 copy_out copy_in copy_out_rtt20 fdw_scan_1m fdw_join syscalls_c1}
fi

say() { printf '# %s\n' "$*" >&2; }
record() { echo "$1,$2,$3,$4,$5" >> results.csv; }  # round workload path metric value
now_ns() { date +%s%N; }
cpu_ms() { [ -n "$1" ] && awk '{print ($14+$15)*10}' "/proc/$1/stat" || echo 0; }
# The whole machine's CPU, in jiffies: "busy total" (busy: user, nice,
# system, irq, softirq; total adds idle, iowait and steal).
machine_cpu() { awk '$1 == "cpu" {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat; }
worker_pid() { lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'"; }
forwarder() {  # path workload
  case $1 in
    openssh) [ "$2" = copy_out_rtt20 ] && echo "$SSH_WAN_PID" || echo "$SSH_PID" ;;
    tunnel_ssh) worker_pid ;;
    relay) [ "$2" = copy_out_rtt20 ] && echo "$PLAIN_WAN_PID" || echo "$PLAIN_PID" ;;
    *) echo "" ;;
  esac
}
extra_pids=()
# lib.sh's cleanup stops extra_pids too.

# --- the private database ---
cat >> private/postgresql.conf <<C
max_connections = 700
ssl = on
C
openssl req -new -x509 -days 2 -nodes -subj /CN=localhost -newkey rsa:2048 \
  -keyout private/server.key -out private/server.crt >/dev/null 2>&1
chmod 600 private/server.key
$B/pg_ctl -D private restart -w -l private.log >/dev/null
$B/pgbench -i -s 10 -q -h 127.0.0.1 -p $PPORT postgres >/dev/null 2>&1
# The bulk tables only for the workloads that read them.
case " $WORKLOADS " in
  *" copy_"*|*" fdw_"*)
    say "loading data (${OUT_MB} MB to copy out)"
    rows=$(( OUT_MB * 1000000 / 270 ))
    psql -X -q -h 127.0.0.1 -p $PPORT -d postgres <<SQL
CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, $rows) g;
CREATE TABLE scan1m AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000000) g;
CREATE UNLOGGED TABLE bulk_in (id int, v text);
VACUUM ANALYZE;
SQL
    psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -c "COPY (SELECT * FROM bulk LIMIT $(( IN_MB * 1000000 / 270 ))) TO STDOUT" > bulk_in.copy
    ;;
esac

# --- sshd at DEBUG1 tells the negotiated cipher ---
kill_sshd
sed -i 's/^LogLevel .*/LogLevel DEBUG1/' sshd/sshd_config
start_sshd
sleep 0.5
"$dir/latency_relay" $RELAY_SSH $SPORT $(( RTT_MS / 2 )) & extra_pids+=($!)
"$dir/latency_relay" $RELAY_PG $PPORT $(( RTT_MS / 2 )) & extra_pids+=($!)
"$dir/latency_relay" $PLAIN $PPORT 0 & PLAIN_PID=$!; extra_pids+=($!)
"$dir/latency_relay" $PLAIN_WAN $RELAY_PG 0 & PLAIN_WAN_PID=$!; extra_pids+=($!)

lsql "CREATE EXTENSION tunnel_ssh; CREATE EXTENSION postgres_fdw;"
lsql "SELECT tunnel_create('bench', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => $TUN_PORT)" >> sshd/authorized_keys
lsql "SELECT tunnel_create('bench_wan', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $RELAY_SSH, ssh_user => '$me', local_port => $TUN_WAN)" >> sshd/authorized_keys
wait_state bench connected 20 || { tail -20 sshd/log >&2; exit 1; }
wait_state bench_wan connected 20
cipher=$(grep -m1 -o 'kex: client->server cipher: [^ ]* MAC: [^ ]*' sshd/log | awk '{print $4, $6}')
set -- $cipher
CIPHER=$1 MAC=$2
say "libssh2 negotiated cipher $CIPHER, MAC $MAC; ssh -L uses the same"
# An AEAD cipher (AES-GCM, chacha20-poly1305) has no separate MAC.
MACS_LINE="MACs $MAC"
[ "$MAC" = "<implicit>" ] && MACS_LINE=""

ssh-keygen -q -t ed25519 -N '' -f ossh_key
cat ossh_key.pub >> sshd/authorized_keys
cat > ssh_config <<C
Host *
  StrictHostKeyChecking no
  UserKnownHostsFile $dir/known_hosts
  IdentityFile $dir/ossh_key
  Ciphers $CIPHER
  $MACS_LINE
  ExitOnForwardFailure yes
C
ssh -F ssh_config -N -L 127.0.0.1:$OSSH_PORT:127.0.0.1:$PPORT -p $SPORT 127.0.0.1 2>ssh.log & SSH_PID=$!
extra_pids+=($SSH_PID)
ssh -F ssh_config -N -L 127.0.0.1:$OSSH_WAN:127.0.0.1:$PPORT -p $RELAY_SSH 127.0.0.1 2>>ssh.log & SSH_WAN_PID=$!
extra_pids+=($SSH_WAN_PID)
for _ in $(seq 1 50); do port_open $OSSH_PORT && port_open $OSSH_WAN && break; sleep 0.2; done

# Each path must really go where it says.
for p in $PATHS; do
  got=$(psql_via ${PORT[$p]} "SELECT inet_server_port()")
  [ "$got" = "$PPORT" ] || { say "$p does not reach the private server"; exit 1; }
done
before=$(lsql "SELECT bytes_in FROM tunnel_status() WHERE name = 'bench'")
psql_via $TUN_PORT "SELECT 1" >/dev/null
[ "$(lsql "SELECT bytes_in FROM tunnel_status() WHERE name = 'bench'")" -gt "$before" ] ||
  { say "tunnel_ssh path carried no bytes"; exit 1; }

lsql "SET client_min_messages = warning;
$(for p in $PATHS; do cat <<S
CREATE SERVER s_$p FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '${PORT[$p]}', dbname 'postgres', use_remote_estimate 'true');
CREATE USER MAPPING FOR CURRENT_USER SERVER s_$p OPTIONS (user '$me');
CREATE SCHEMA r_$p;
IMPORT FOREIGN SCHEMA public LIMIT TO (scan1m, pgbench_accounts, pgbench_branches) FROM SERVER s_$p INTO r_$p;
S
done)" >/dev/null

# --- workloads; each prints "metric value" lines ---
pgb() {  # port clients extra-args...
  local port=$1 c=$2; shift 2
  rm -f pgbench_log.*
  local out
  out=$($B/pgbench -n -c "$c" -j "$(( c > 1 ? 2 : 1 ))" -T "$SECS" -h 127.0.0.1 -p "$port" "$@" postgres 2>&1) ||
    { echo "$out" >&2; return 1; }
  grep -q "number of failed transactions: 0 " <<<"$out" || { echo "$out" >&2; return 1; }
  echo "tps $(awk '/^tps/ {print $3}' <<<"$out")"
  if ls pgbench_log.* >/dev/null 2>&1; then
    cat pgbench_log.* | awk '{print $3}' | sort -n |
      awk '{a[NR]=$1; s+=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "lat_avg_ms %.3f\nlat_p99_ms %.3f\n", s/NR/1000, a[i]/1000}'
  fi
}
w_select_c1()  { pgb "$1" 1 -S -l; }
w_select_c16() { pgb "$1" 16 -S -l; }
w_churn_c8()   { pgb "$1" 8 -S -C; }
w_churn_tls_c8() { PGSSLMODE=require pgb "$1" 8 -S -C; }
w_copy_out() {
  local t0 t1 bytes
  t0=$(now_ns)
  bytes=$(psql -X -h 127.0.0.1 -p "$1" -d postgres -c "COPY bulk TO STDOUT" | wc -c)
  t1=$(now_ns)
  echo "mb_per_s $(awk -v b="$bytes" -v t=$(( t1 - t0 )) 'BEGIN {printf "%.1f", b / t * 1000}')"
}
w_copy_in() {
  local t0 t1 bytes
  psql -X -q -h 127.0.0.1 -p "$1" -d postgres -c "TRUNCATE bulk_in"
  bytes=$(wc -c < bulk_in.copy)
  t0=$(now_ns)
  psql -X -q -h 127.0.0.1 -p "$1" -d postgres -v ON_ERROR_STOP=1 -c "COPY bulk_in FROM STDIN" < bulk_in.copy
  t1=$(now_ns)
  echo "mb_per_s $(awk -v b="$bytes" -v t=$(( t1 - t0 )) 'BEGIN {printf "%.1f", b / t * 1000}')"
}
# Syscalls of the forwarder per pgbench -S -c1 transaction (strace -c
# attached for the run: it slows the forwarder, the counts stay true).
w_syscalls_c1() {
  local fpid out n
  fpid=$(forwarder "$path" select_c1)
  [ -n "$fpid" ] || return 0
  strace -c -f -q -p "$fpid" -o strace_c.out & local st=$!
  sleep 0.5
  out=$($B/pgbench -n -c 1 -S -T "$SECS" -h 127.0.0.1 -p "$1" postgres 2>&1) || { echo "$out" >&2; kill $st; return 1; }
  kill -INT $st; wait $st 2>/dev/null || true
  n=$(awk '/number of transactions actually processed/ {print $NF}' <<<"$out")
  # % time, seconds, usecs/call, calls, [errors,] syscall
  # calls that are not per transaction (accept, epoll_ctl ...) are left out.
  awk -v n="$n" '$1 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ && $4 / n >= 0.05 {
      printf "%s %.2f\n", ($NF == "total" ? "syscalls_per_txn" : "per_txn_" $NF), $4 / n }' strace_c.out
}
w_copy_out_rtt20() { w_copy_out "${WAN_PORT[$path]}"; }
local_ms() {  # sql: wall time of one statement on the local server
  local t0 t1
  t0=$(now_ns); lsql "$1" >/dev/null; t1=$(now_ns)
  echo $(( (t1 - t0) / 1000000 ))
}
# random() is not shipped, so all 1M rows cross the tunnel (fetch_size 100).
w_fdw_scan_1m() { echo "ms $(local_ms "SELECT count(*) FROM r_$path.scan1m WHERE random() >= 0")"; }
w_fdw_join()    { echo "ms $(local_ms "SELECT b.bid, count(*) FROM r_$path.pgbench_accounts a JOIN r_$path.pgbench_branches b ON a.bid = b.bid GROUP BY b.bid")"; }

say "$ROUNDS rounds of: $WORKLOADS (pgbench $SECS s each)"
for round in $(seq 1 "$ROUNDS"); do
  for w in $WORKLOADS; do
    for path in $PATHS; do
      fpid=$(forwarder $path $w)
      c0=$(cpu_ms "$fpid")
      read -r busy0 total0 < <(machine_cpu)
      lines=$("w_$w" "${PORT[$path]}") || { say "$w via $path failed"; exit 1; }
      read -r busy1 total1 < <(machine_cpu)
      c1=$(cpu_ms "$fpid")
      busy_ms=$(( (busy1 - busy0) * 10 ))
      busy_pct=$(awk -v b=$(( busy1 - busy0 )) -v t=$(( total1 - total0 )) 'BEGIN {printf "%.0f", t ? 100 * b / t : 0}')
      while read -r metric value; do
        [ -n "$metric" ] || continue
        record "$round" "$w" "$path" "$metric" "$value"
        # With every core busy, throughput is CPU per unit of work: this is
        # what the path would reach if its forwarder cost no CPU at all, the
        # most that any forwarder could gain on this machine.
        if [ -n "$fpid" ] && [ "$busy_pct" -ge 90 ] && [ "$busy_ms" -gt $(( c1 - c0 )) ] &&
           { [ "$metric" = tps ] || [ "$metric" = mb_per_s ]; }; then
          record "$round" "$w" "$path" "${metric}_forwarder_free" \
            "$(awk -v v="$value" -v b=$busy_ms -v f=$(( c1 - c0 )) 'BEGIN {printf "%.1f", v * b / (b - f)}')"
        fi
      done <<<"$lines"
      [ -n "$fpid" ] && record "$round" "$w" "$path" forwarder_cpu_ms $(( c1 - c0 ))
      record "$round" "$w" "$path" machine_busy_pct "$busy_pct"
    done
  done
  say "round $round done"
done

# --- connections: many clients on one tunnel, held open, twice over ---
# Half on the loopback port, half on the Unix socket, each an idle pgbench
# client (a few pgbench processes per side, so the pids to find are several).
# With them open: how long tunnel_connections() takes (20 calls timed inside
# the server), how many rows name the pgbench that holds them, the worker's
# memory; then all closed, and the same again, to see that the memory per
# connection does not grow over a repeat.  tunnel_stat() must have counted
# each connection once.  Rounds 3 and 4 with tunnel_ssh.log_connections on,
# where the worker itself looks for each TCP client's process (a /proc walk)
# as it accepts it: open_all_ms and open_cpu_ms show what that costs, and
# a pgbench -S -c 1 on another tunnel during the opening what the data path
# feels of it.
CONN_PROCS=5
conn_rss() { awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} END {print r, a}' "/proc/$1/status"; }
conn_fds() { ls "/proc/$1/fd" | wc -l; }
conn_rows() { lsql "SELECT count(*) FROM tunnel_ssh.connections WHERE tunnel = 'conn'"; }
conn_active() { lsql "SELECT active_connections FROM tunnel_status() WHERE name = 'conn'"; }
# n calls of tunnel_connections(), each timed by clock_timestamp() in the
# server: "median_ms max_ms rows rows_with_pid" (rows: the fewest seen).
conn_time() {
  lsql "CREATE TEMP TABLE ct (ms float8, n int, p int);
DO \$\$
DECLARE t0 timestamptz; n int; p int;
BEGIN
  FOR i IN 1..$1 LOOP
    t0 := clock_timestamp();
    SELECT count(*), count(client_pid) INTO n, p FROM tunnel_connections();
    INSERT INTO ct VALUES (1000 * extract(epoch FROM clock_timestamp() - t0), n, p);
  END LOOP;
END \$\$;
SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
       round(max(ms)::numeric, 2), min(n), min(p) FROM ct" | tr '|' ' '
}
conn_record() { record "$1" connections tunnel_ssh "$2" "$3"; }
conn_round() {  # round
  local r=$1 per=$(( CONNS / 2 / CONN_PROCS )) tcp_pids=() unix_pids=() t0 i
  local rss anon n med max rows withpid c0
  read -r rss anon < <(conn_rss "$cwpid")
  conn_record "$r" rss_kb_before "$rss"; conn_record "$r" rss_anon_kb_before "$anon"
  conn_record "$r" worker_fds_before "$(conn_fds "$cwpid")"
  c0=$(cpu_ms "$cwpid")
  t0=$(now_ns)
  for i in $(seq 1 $CONN_PROCS); do
    $B/pgbench -n -c $per -j 1 -t 1 -f hold.sql -h 127.0.0.1 -p $CONN_PORT postgres > "conn_tcp$r.$i.out" 2>&1 & tcp_pids+=($!)
    $B/pgbench -n -c $per -j 1 -t 1 -f hold.sql -h "$dir/local/tunnel_ssh" -p $CONN_PORT postgres > "conn_unix$r.$i.out" 2>&1 & unix_pids+=($!)
  done
  extra_pids+=("${tcp_pids[@]}" "${unix_pids[@]}")
  # Meanwhile one client on the other tunnel: what the opening costs the
  # data path of the same worker (its latency, each transaction logged).
  rm -f probe.*
  $B/pgbench -n -S -c 1 -T 10 -l --log-prefix=probe -h 127.0.0.1 -p $TUN_PORT postgres > probe.out 2>&1 & probe=$!
  extra_pids+=($probe)
  n=0
  for _ in $(seq 1 600); do
    n=$(lsql "SELECT count(*) FROM tunnel_ssh.connections WHERE tunnel = 'conn' AND state = 'open'")
    [ "$n" -ge $(( per * CONN_PROCS * 2 )) ] && break
    sleep 0.2
  done
  conn_record "$r" open_all_ms $(( ($(now_ns) - t0) / 1000000 ))
  conn_record "$r" open_cpu_ms $(( $(cpu_ms "$cwpid") - c0 ))
  conn_record "$r" connections_open "$n"
  wait $probe || true
  conn_record "$r" probe_tps "$(awk '/^tps/ {printf "%.0f", $3}' probe.out)"
  cat probe.[0-9]* | awk '{print $3}' | sort -n |
    awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.2f %.2f\n", a[i]/1000, a[NR]/1000}' > probe.lat
  read -r n i < probe.lat
  conn_record "$r" probe_lat_p99_ms "$n"; conn_record "$r" probe_lat_max_ms "$i"
  conn_record "$r" active_connections "$(conn_active)"
  sleep 2
  read -r rss anon < <(conn_rss "$cwpid")
  conn_record "$r" rss_kb_open "$rss"; conn_record "$r" rss_anon_kb_open "$anon"
  conn_record "$r" worker_fds_open "$(conn_fds "$cwpid")"
  # What the /proc walk of a call goes through: our OS user's processes
  # (both servers' backends among them) and the machine's TCP sockets.
  conn_record "$r" processes_of_user "$(pgrep -u "$me" | wc -l)"
  conn_record "$r" tcp_sockets "$(( $(cat /proc/net/tcp /proc/net/tcp6 | wc -l) - 2 ))"
  read -r med max rows withpid < <(conn_time 20)
  conn_record "$r" call_ms_median "$med"; conn_record "$r" call_ms_max "$max"
  conn_record "$r" rows "$rows"; conn_record "$r" rows_with_pid "$withpid"
  # Each row's client_pid is the pgbench that holds it.
  conn_record "$r" tcp_rows_pid_right "$(lsql "SELECT count(*) FROM tunnel_ssh.connections WHERE tunnel = 'conn' AND client_addr IS NOT NULL AND client_pid IN ($(IFS=,; echo "${tcp_pids[*]}"))")"
  conn_record "$r" unix_rows_pid_right "$(lsql "SELECT count(*) FROM tunnel_ssh.connections WHERE tunnel = 'conn' AND client_addr IS NULL AND client_pid IN ($(IFS=,; echo "${unix_pids[*]}"))")"
  # The view joined with pg_stat_activity, as README shows it (the clients
  # are not backends of this server, so no row matches: the cost is the point).
  med=$(lsql "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, FORMAT JSON) SELECT c.*, a.usename FROM tunnel_ssh.connections c LEFT JOIN pg_stat_activity a ON a.pid = c.client_pid" |
    sed -n 's/.*"Execution Time": \([0-9.]*\).*/\1/p')
  conn_record "$r" join_ms "$med"
  # The pgbench processes still holding their clients (all of them, or
  # some failed or ended early: see conn_*.out).
  n=0; for i in "${tcp_pids[@]}" "${unix_pids[@]}"; do kill -0 "$i" 2>/dev/null && n=$(( n + 1 )); done
  conn_record "$r" pgbench_alive "$n"
  kill "${tcp_pids[@]}" "${unix_pids[@]}" 2>/dev/null || true
  wait "${tcp_pids[@]}" "${unix_pids[@]}" 2>/dev/null || true
  t0=$(now_ns)
  for _ in $(seq 1 300); do
    [ "$(conn_rows)" = 0 ] && [ "$(conn_active)" = 0 ] && break
    sleep 0.2
  done
  conn_record "$r" close_all_ms $(( ($(now_ns) - t0) / 1000000 ))
  conn_record "$r" rows_after_close "$(conn_rows)"
  sleep 2
  read -r rss anon < <(conn_rss "$cwpid")
  conn_record "$r" rss_kb_closed "$rss"; conn_record "$r" rss_anon_kb_closed "$anon"
  conn_record "$r" worker_fds_closed "$(conn_fds "$cwpid")"
  conn_record "$r" stat_connections "$(lsql "SELECT connections FROM tunnel_ssh.stat_tunnels WHERE tunnel = 'conn'")"
  conn_record "$r" stat_open_failures "$(lsql "SELECT open_failures_prohibited + open_failures_connect_failed + open_failures_timeout + open_failures_no_session + open_failures_other FROM tunnel_ssh.stat_tunnels WHERE tunnel = 'conn'")"
  say "connections round $r done"
}
if [ "$CONNS" -gt 0 ]; then
  say "connections: $CONNS clients on one tunnel (half TCP, half Unix socket), four rounds (the last two with log_connections on)"
  # pgbench's \sleep counts in int microseconds: at most 2147 s.
  printf 'SELECT 1;\n\\sleep 1800 s\n' > hold.sql
  lsql "SELECT tunnel_create('conn', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => $CONN_PORT)" >> sshd/authorized_keys
  wait_state conn connected 20
  lsql "SELECT tunnel_stat_reset('conn')" >/dev/null
  cwpid=$(worker_pid)
  read -r med max rows withpid < <(conn_time 20)
  record 0 connections tunnel_ssh call_ms_median "$med"
  record 0 connections tunnel_ssh call_ms_max "$max"
  record 0 connections tunnel_ssh rows "$rows"
  conn_round 1
  conn_round 2
  lsql "ALTER SYSTEM SET tunnel_ssh.log_connections = on"
  lsql "SELECT pg_reload_conf()" >/dev/null
  sleep 1
  # Rounds 3 and 4 alike: whether the memory grows over a repeat there too.
  for r in 3 4; do
    lines0=$(wc -l < local.log)
    conn_round $r
    # The audit lines of the round: one per connection received, and how
    # many of those could not name the client's process.
    record $r connections tunnel_ssh log_received "$(tail -n +$(( lines0 + 1 )) local.log | grep -c 'tunnel connection received: tunnel=conn ' || true)"
    record $r connections tunnel_ssh log_received_pid_unknown "$(tail -n +$(( lines0 + 1 )) local.log | grep 'tunnel connection received: tunnel=conn ' | grep -c 'client_pid=unknown' || true)"
  done
  lsql "ALTER SYSTEM RESET tunnel_ssh.log_connections"
  lsql "SELECT pg_reload_conf()" >/dev/null
fi

# --- scale: many tunnels, a few connections each ---
if [ "$PART" != connections ]; then
say "scale: $SCALE_TUNNELS tunnels x $SCALE_CONNS connections"
wpid=$(worker_pid)
rss0=$(awk '/VmRSS/ {print $2}' /proc/$wpid/status)
for i in $(seq 1 "$SCALE_TUNNELS"); do
  lsql "SELECT tunnel_create('s$i', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => $(( SCALE_BASE + i )))"
done >> sshd/authorized_keys
t0=$(now_ns)
for _ in $(seq 1 300); do
  [ "$(lsql "SELECT count(*) FROM tunnel_status() WHERE name ~ '^s[0-9]+$' AND state = 'connected'")" = "$SCALE_TUNNELS" ] && break
  sleep 0.2
done
up_ms=$(( ($(now_ns) - t0) / 1000000 ))
up_count=$(lsql "SELECT count(*) FROM tunnel_status() WHERE name ~ '^s[0-9]+$' AND state = 'connected'")
printf '\\sleep 50 ms\nSELECT 1;\n' > idle.sql
c0=$(cpu_ms "$wpid")
pids=()
SCALE_SECS=10
for i in $(seq 1 "$SCALE_TUNNELS"); do
  $B/pgbench -n -c $SCALE_CONNS -j 1 -T $SCALE_SECS -f idle.sql -h 127.0.0.1 -p $(( SCALE_BASE + i )) postgres > "scale$i.out" 2>&1 & pids+=($!)
done
sleep $(( SCALE_SECS / 2 ))
active=$(lsql "SELECT sum(active_connections) FROM tunnel_status() WHERE name ~ '^s[0-9]+$'")
rss_peak=$(awk '/VmRSS/ {print $2}' /proc/$wpid/status)
wait "${pids[@]}" || true
c1=$(cpu_ms "$wpid")
fails=$(grep -L "number of failed transactions: 0 " scale*.out | wc -l)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$wpid/status)
record 1 scale tunnel_ssh tunnels "$SCALE_TUNNELS"
record 1 scale tunnel_ssh connections "$active"
record 1 scale tunnel_ssh connected "$up_count"
record 1 scale tunnel_ssh all_connected_ms "$up_ms"
record 1 scale tunnel_ssh rss_kb_before "$rss0"
record 1 scale tunnel_ssh rss_kb_peak "$rss_peak"
record 1 scale tunnel_ssh hwm_kb "$hwm"
record 1 scale tunnel_ssh cpu_ms "$(( c1 - c0 ))"
record 1 scale tunnel_ssh failed_clients "$fails"
fi

# --- summary ---
{
  echo "## tunnel_ssh benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r);"
  echo "$(. /etc/os-release; echo "$PRETTY_NAME"): PostgreSQL $($B/postgres --version | awk '{print $3}'), libssh2 $(pkg-config --modversion libssh2),"
  echo "OpenSSH $(ssh -V 2>&1 | cut -d, -f1 | sed 's/^OpenSSH_//') (ssh -L and the sshd bastion of every path);"
  echo "cipher $CIPHER, MAC $MAC (both SSH paths); relay: a plain TCP relay with TCP_NODELAY; $ROUNDS rounds, paths in turn; median of the rounds; loopback,"
  echo "except copy_out_rtt20: through a relay adding ${RTT_MS} ms of round-trip time between client and sshd"
  echo "(direct: between client and server)."
  echo
  echo "| workload | metric | direct | relay | openssh | tunnel_ssh | tunnel/openssh | tunnel/relay | tunnel/direct |"
  echo "|---|---|---|---|---|---|---|---|---|"
  awk -F, '$2 != "scale" && $2 != "connections" {k=$2 FS $4 FS $3; v[k] = v[k] " " $5; if (!(($2 FS $4) in seen)) {seen[$2 FS $4]=1; order[++n]=$2 FS $4}}
    function median(s,   a, m, i, j, t) { m = split(s, a, " "); for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) {t = a[i]; a[i] = a[j]; a[j] = t}; return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
    END {
      for (i = 1; i <= n; i++) {
        split(order[i], wm, FS); w = wm[1]; m = wm[2];
        d = (w FS m FS "direct") in v ? median(v[w FS m FS "direct"]) : "";
        r = (w FS m FS "relay") in v ? median(v[w FS m FS "relay"]) : "";
        o = (w FS m FS "openssh") in v ? median(v[w FS m FS "openssh"]) : "";
        t = (w FS m FS "tunnel_ssh") in v ? median(v[w FS m FS "tunnel_ssh"]) : "";
        ro = (o != "" && o + 0 != 0 && t != "") ? sprintf("%.2f", t / o) : "";
        rd = (d != "" && d + 0 != 0 && t != "") ? sprintf("%.2f", t / d) : "";
        rr = (r != "" && r + 0 != 0 && t != "") ? sprintf("%.2f", t / r) : "";
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", w, m, d, r, o, t, ro, rr, rd
      }
    }' results.csv
  echo
  echo "Higher is better for tps and mb_per_s; lower for latency, ms and cpu. forwarder_cpu_ms is the CPU"
  echo "time of the relay, the ssh client or the tunnel_ssh worker during the workload; machine_busy_pct"
  echo "the share of all cores busy meanwhile (every process: clients, servers, sshd, forwarder). Where"
  echo "that is 90% or more the workload is CPU-bound, and tps_forwarder_free / mb_per_s_forwarder_free"
  echo "is the throughput scaled by machine CPU / (machine CPU - forwarder CPU): what the path would"
  echo "reach with a forwarder that cost nothing, the ceiling for any forwarder on this machine."
  echo
  if [ "$CONNS" -gt 0 ]; then
    echo "Connections: $CONNS clients held open on one tunnel, half on its loopback port, half on its Unix"
    echo "socket ($CONN_PROCS idle pgbench processes each side), then all closed; rounds 1 and 2 alike (round 0:"
    echo "no client). call_ms: tunnel_connections(), 20 calls timed inside the server (clock_timestamp()"
    echo "around SELECT count(*), count(client_pid)); join_ms: the view joined with pg_stat_activity (EXPLAIN"
    echo "ANALYZE); rows_with_pid: rows whose client_pid is not NULL, *_pid_right: those naming the pgbench"
    echo "that holds them; rss: the worker's VmRSS and RssAnon (kB); stat_*: tunnel_ssh.stat_tunnels, cumulative"
    echo "since tunnel_stat_reset() before round 1. Rounds 3 and 4: the same with tunnel_ssh.log_connections on;"
    echo "open_all_ms and open_cpu_ms: wall time until all were open, and the worker's CPU meanwhile;"
    echo "probe_*: pgbench -S -c 1 on another tunnel of the same worker for the first 10 s of the opening"
    echo "(open_cpu_ms includes the worker's CPU for it)."
    echo
    echo "| metric | round 0 | round 1 | round 2 | round 3 (log_connections) | round 4 (log_connections) |"
    echo "|---|---|---|---|---|---|"
    awk -F, '$2 == "connections" {v[$4 FS $1] = $5; if (!($4 in seen)) {seen[$4] = 1; order[++n] = $4}}
      END {for (i = 1; i <= n; i++) {m = order[i]; printf "| %s | %s | %s | %s | %s | %s |\n", m, v[m FS 0], v[m FS 1], v[m FS 2], v[m FS 3], v[m FS 4]}}' results.csv
    # Per connection: the worker with them open over the worker before it
    # opened any (round 1's start), and over the same round's start (which
    # holds the heap freed by the rounds before: up to 8 MB is kept).
    awk -F, -v n="$CONNS" '$2 == "connections" {v[$4 FS $1] = $5}
      END {for (r = 1; r <= 4; r++) printf "\nRound %d: worker VmRSS %d kB with %d connections open, %.1f kB per connection over the idle worker before round 1 (RssAnon: %.1f kB), %.1f over this round'"'"'s start; %d kB after all closed.", r,
             v["rss_kb_open" FS r], n, (v["rss_kb_open" FS r] - v["rss_kb_before" FS 1]) / n,
             (v["rss_anon_kb_open" FS r] - v["rss_anon_kb_before" FS 1]) / n,
             (v["rss_kb_open" FS r] - v["rss_kb_before" FS r]) / n, v["rss_kb_closed" FS r]; print ""}' results.csv
    echo
  fi
  if [ "$PART" != connections ]; then
    echo "Scale: $up_count of $SCALE_TUNNELS tunnels connected after ${up_ms} ms; $active client connections at once"
    echo "(pgbench, $SCALE_CONNS per tunnel), $fails clients with errors; worker RSS $(( rss0 / 1024 )) MB before,"
    echo "$(( rss_peak / 1024 )) MB at peak (high-water mark $(( hwm / 1024 )) MB), that is"
    echo "$(( (rss_peak - rss0) / SCALE_TUNNELS )) kB per tunnel; worker CPU $(( c1 - c0 )) ms over ${SCALE_SECS} s of that load."
  fi
} > summary.md
cat summary.md
