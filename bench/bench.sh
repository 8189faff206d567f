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

ROUNDS=${BENCH_ROUNDS:-5} SECS=${BENCH_SECONDS:-5}
OUT_MB=540 IN_MB=210 SCALE_TUNNELS=100 SCALE_CONNS=5
if [ -n "${BENCH_QUICK:-}" ]; then
  ROUNDS=${BENCH_ROUNDS:-1} SECS=${BENCH_SECONDS:-2} OUT_MB=60 IN_MB=30 SCALE_TUNNELS=10
fi
# The scale tunnels listen on SCALE_BASE+1..+100, clear of every port above.
SCALE_BASE=59300
OSSH_PORT=59010 TUN_PORT=59100 RELAY_SSH=59020 RELAY_PG=59021 OSSH_WAN=59011 TUN_WAN=59101
PLAIN=59030 PLAIN_WAN=59031
RTT_MS=20
me=$(id -un)
declare -A PORT=([direct]=$PPORT [relay]=$PLAIN [openssh]=$OSSH_PORT [tunnel_ssh]=$TUN_PORT)
declare -A WAN_PORT=([direct]=$RELAY_PG [relay]=$PLAIN_WAN [openssh]=$OSSH_WAN [tunnel_ssh]=$TUN_WAN)
PATHS="direct relay openssh tunnel_ssh"
export PGSSLMODE=disable
: > results.csv

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
say "loading data (${OUT_MB} MB to copy out)"
cat >> private/postgresql.conf <<C
max_connections = 700
ssl = on
C
openssl req -new -x509 -days 2 -nodes -subj /CN=localhost -newkey rsa:2048 \
  -keyout private/server.key -out private/server.crt >/dev/null 2>&1
chmod 600 private/server.key
$B/pg_ctl -D private restart -w -l private.log >/dev/null
$B/pgbench -i -s 10 -q -h 127.0.0.1 -p $PPORT postgres >/dev/null 2>&1
rows=$(( OUT_MB * 1000000 / 270 ))
psql -X -q -h 127.0.0.1 -p $PPORT -d postgres <<SQL
CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, $rows) g;
CREATE TABLE scan1m AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000000) g;
CREATE UNLOGGED TABLE bulk_in (id int, v text);
VACUUM ANALYZE;
SQL
psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -c "COPY (SELECT * FROM bulk LIMIT $(( IN_MB * 1000000 / 270 ))) TO STDOUT" > bulk_in.copy

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

WORKLOADS=${BENCH_WORKLOADS-select_c1 select_c16 churn_c8 churn_tls_c8 copy_out copy_in copy_out_rtt20 fdw_scan_1m fdw_join syscalls_c1}
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

# --- scale: many tunnels, a few connections each ---
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
  awk -F, '$2 != "scale" {k=$2 FS $4 FS $3; v[k] = v[k] " " $5; if (!(($2 FS $4) in seen)) {seen[$2 FS $4]=1; order[++n]=$2 FS $4}}
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
  echo "Scale: $up_count of $SCALE_TUNNELS tunnels connected after ${up_ms} ms; $active client connections at once"
  echo "(pgbench, $SCALE_CONNS per tunnel), $fails clients with errors; worker RSS $(( rss0 / 1024 )) MB before,"
  echo "$(( rss_peak / 1024 )) MB at peak (high-water mark $(( hwm / 1024 )) MB), that is"
  echo "$(( (rss_peak - rss0) / SCALE_TUNNELS )) kB per tunnel; worker CPU $(( c1 - c0 )) ms over ${SCALE_SECS} s of that load."
} > summary.md
cat summary.md
