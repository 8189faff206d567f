#!/usr/bin/env bash
# A dark target beside a healthy one, tunnel_ssh against ssh -L (issue #16's
# table), run as the unprivileged user by bench/run.sh dark, inside a network
# namespace where 10.231.10.5 drops SYNs (test/isolation.root.sh).
#
# Each path forwards two ports through one SSH session to one sshd: A to the
# private database, B to the dark target; keepalive 5 s x 3 on both
# (tunnel_ssh.keepalive_*, ServerAliveInterval/CountMax).  pgbench -S -c 1
# runs on A for PGB_SECS; 2 s in, three clients connect to B and wait
# (libpq connect_timeout 200 s); then 20 new connections to A, 0.2 s apart.
# Recorded: those connections' times, pgbench's seconds without a
# transaction and its slowest one, whether the SSH session survived, and
# when each of B's clients got an answer.  Nothing here asserts a speed:
# results.csv (path,metric,value) and summary.md.
set -uo pipefail   # not -e: the harness helpers (repaste, grep -c) return 1 in normal use
dir=${1:?work directory}
cd "$dir"
LPORT=59532 PPORT=59533 SPORT=59522
TUN_A=59540 TUN_B=59541 OSSH_A=59550 OSSH_B=59551
DARK=10.231.10.5 PGB_SECS=40
LOCAL_CONF="tunnel_ssh.port_range = '59540-59549'
tunnel_ssh.keepalive_interval = 5
tunnel_ssh.keepalive_count = 3"
. "$dir/lib.sh"
harness_start
me=$(id -un)
export PGSSLMODE=disable
: > results.csv
say() { printf '# %s\n' "$*" >&2; }
record() { echo "$1,$2,$3" >> results.csv; }

$B/pgbench -i -s 5 -q -h 127.0.0.1 -p $PPORT postgres >/dev/null 2>&1
lsql "CREATE EXTENSION tunnel_ssh;" || exit 1
lsql "SELECT tunnel_create('t', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => $TUN_A)" \
  >> sshd/authorized_keys
lsql "SELECT tunnel_forward_add('t', '$DARK', 5432, $TUN_B)" >/dev/null 2>&1
repaste t sshd/authorized_keys
lsql "SELECT tunnel_disable('t')" >/dev/null
lsql "SELECT tunnel_enable('t')" >/dev/null
wait_state t connected 20 || exit 1

ssh-keygen -q -t ed25519 -N '' -f ossh_key
cat ossh_key.pub >> sshd/authorized_keys
cat > ssh_config <<C
Host *
  StrictHostKeyChecking no
  UserKnownHostsFile $dir/known_hosts
  IdentityFile $dir/ossh_key
  ServerAliveInterval 5
  ServerAliveCountMax 3
  ExitOnForwardFailure yes
C
ssh -F ssh_config -N -L 127.0.0.1:$OSSH_A:127.0.0.1:$PPORT -L 127.0.0.1:$OSSH_B:$DARK:5432 \
  -p $SPORT 127.0.0.1 2>ssh.log &
SSH_PID=$!
extra_pids+=($SSH_PID)
for _ in $(seq 1 50); do port_open $OSSH_A && break; sleep 0.2; done
timeout 2 bash -c "exec 3<>/dev/tcp/$DARK/5432" 2>/dev/null && { say "$DARK answers: not dark"; exit 1; }

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

run_path() {  # path port_a port_b
  local path=$1 a=$2 b=$3 i q0 lat=() rc ms bench
  say "$path: pgbench on A, three clients waiting on B, new connections to A"
  for i in $(seq 1 10); do
    q0=$(now_ms); psql_via $a "SELECT 1" >/dev/null || true; lat+=($(( $(now_ms) - q0 ))); sleep 0.2
  done
  record $path new_conn_idle_median_ms "$(printf '%s\n' "${lat[@]}" | median)"
  $B/pgbench -n -S -c 1 -T $PGB_SECS -P 1 -h 127.0.0.1 -p $a postgres > pgb_$path.out 2>&1 &
  bench=$!
  sleep 2
  for i in 1 2 3; do
    ( s=$(now_ms)
      psql -X -h 127.0.0.1 -p $b -d "dbname=postgres connect_timeout=200" -Atc "SELECT 1" > dark_${path}_$i.out 2>&1
      echo "$? $(( $(now_ms) - s ))" > dark_${path}_$i.res ) &
  done
  sleep 1
  lat=()
  for i in $(seq 1 20); do
    q0=$(now_ms)
    if psql_via $a "SELECT 1" >/dev/null 2>&1; then lat+=($(( $(now_ms) - q0 ))); else lat+=(failed); fi
    sleep 0.2
  done
  record $path new_conn_dark_median_ms "$(printf '%s\n' "${lat[@]}" | grep -v failed | median)"
  record $path new_conn_dark_worst_ms "$(printf '%s\n' "${lat[@]}" | grep -v failed | sort -n | tail -1)"
  record $path new_conn_dark_failed "$(printf '%s\n' "${lat[@]}" | grep -c failed || true)"
  wait $bench && rc=0 || rc=$?
  record $path pgbench_exit "$rc"
  record $path pgbench_tps "$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' pgb_$path.out | head -1 | cut -d. -f1)"
  record $path pgbench_seconds_without_txn "$(awk '/^progress/ && $4 + 0 < 1 { n++ } END { print n + 0 }' pgb_$path.out)"
  record $path pgbench_seconds_seen "$(grep -c '^progress' pgb_$path.out || true)"
  for i in 1 2 3; do
    wait_for 200 test -s dark_${path}_$i.res || true
    read -r rc ms < dark_${path}_$i.res || { rc=none ms=none; }
    record $path dark_client_${i}_answer_ms "$ms"
    record $path dark_client_${i}_said "\"$(tr '\n' ' ' < dark_${path}_$i.out | tr -d '"' | cut -c1-120)\""
  done
}

attempts=$(attempts_of t)
run_path tunnel_ssh $TUN_A $TUN_B
record tunnel_ssh session_reconnects $(( $(attempts_of t) - attempts ))
record tunnel_ssh session_state "$(state_of t)"
record tunnel_ssh forward_b_last_error "\"$(lsql "SELECT last_error FROM tunnel_forward_status() WHERE local_port = $TUN_B")\""

run_path openssh $OSSH_A $OSSH_B
kill -0 $SSH_PID 2>/dev/null && alive=yes || alive=no
record openssh session_reconnects "$( [ $alive = yes ] && echo 0 || echo "ssh exited" )"
record openssh session_state "$( [ $alive = yes ] && echo "running" || echo "exited: $(tail -1 ssh.log)" )"
record openssh forward_b_last_error "\"$(grep -m1 -i 'open failed\|connect failed' ssh.log | tr -d '"' || true)\""

v() { awk -F, -v p="$1" -v m="$2" '$1 == p && $2 == m { sub(/^[^,]*,[^,]*,/, ""); print; exit }' results.csv; }
{
  echo "# A dark target beside a healthy one: tunnel_ssh and ssh -L"
  echo
  echo "$(. /etc/os-release; echo "$PRETTY_NAME"); PostgreSQL $($B/postgres -V | awk '{print $3}');"
  echo "libssh2 $(pkg-config --modversion libssh2); $(ssh -V 2>&1 | cut -d, -f1) (client and bastion);"
  echo "keepalive 5 s x 3 on both; tunnel_ssh.connect_timeout $(lsql "SHOW tunnel_ssh.connect_timeout");"
  echo "pgbench -S -c 1 for $PGB_SECS s on the healthy forward; three clients on the dark one."
  echo
  echo "| | tunnel_ssh | ssh -L |"
  echo "|---|---|---|"
  for m in new_conn_idle_median_ms new_conn_dark_median_ms new_conn_dark_worst_ms new_conn_dark_failed \
           pgbench_exit pgbench_tps pgbench_seconds_without_txn session_reconnects session_state \
           dark_client_1_answer_ms dark_client_2_answer_ms dark_client_3_answer_ms dark_client_1_said forward_b_last_error; do
    echo "| $m | $(v tunnel_ssh $m) | $(v openssh $m) |"
  done
} > summary.md
cat summary.md >&2
