#!/usr/bin/env bash
# Failover between two bastions (issue 28): tunnel_ssh with a list of two
# bastions against the reference users have, `ssh -L` kept up by autossh on
# bastion A alone (it cannot fail over).  Run as root:
#   bash bench/failover.sh
# It installs what it needs (autossh among them), builds and installs the
# module (test/prepare.sh, under the machine-wide test lock), and runs the
# measurement as the unprivileged user in a network namespace of its own,
# where 10.231.10.5 drops SYNs (test/isolation.root.sh).  Results:
# bench/results/failover-<UTC date>-<release>.txt.  Nothing is asserted.
#
# Each run: pgbench -S -c 4 for RUN_SECS (30) s, restarted at once when its
# clients are aborted (an application that reconnects), and a stream of
# new connections, `psql -c 'SELECT 1'` every 0.1 s (libpq
# connect_timeout 10 s), both through the path.  Scenarios:
#   session  at t = 10 s the per-connection sshd serving the path on the
#            active bastion is frozen (SIGSTOP; its listener still accepts)
#   bastion  at t = 10 s the whole active bastion is frozen (its listener
#            and every session: a paused VM); resumed (SIGCONT) at t = 25 s
#   dark     the first bastion drops SYNs from the start (10.231.10.5:22)
# Keepalive 2 s x 3 and connect timeout 5 s on both paths
# (tunnel_ssh.keepalive_*, connect_timeout; ServerAliveInterval/CountMax,
# ConnectTimeout).  Reported per run: the longest gap without a successful
# new connection, failed new connections, pgbench's transactions, aborted
# clients (each lost the transaction it was in) and runs that could not
# connect, and the time from the event until a connection that started after
# it was served (never: not within the run).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" != inner ]; then
  # --- as root ---
  cd "$here"
  . test/prepare.sh
  prepare_machine autossh || exit 1
  work=$(mktemp -d /tmp/tunnel_ssh_failover.XXXXXX)
  trap 'rm -rf "$work"; restore_machine' EXIT
  chmod 755 "$work"
  cp test/lib.sh bench/failover.sh "$work/"
  chown -R "$user" "$work"
  mkdir -p bench/results
  out=bench/results/failover-$(date -u +%Y%m%d-%H%M)-$(. /etc/os-release; echo "${VERSION_CODENAME:-$ID}").txt
  in_own_network "bash $here/test/isolation.root.sh setup $work $user || exit 1
rc=0
su $user -c 'BENCH_SCENARIOS=\"${BENCH_SCENARIOS:-}\" BENCH_PATHS=\"${BENCH_PATHS:-}\" bash ${BENCH_TRACE:+-x} $work/failover.sh inner $work' || rc=1
bash $here/test/isolation.root.sh teardown $work $user
exit \$rc"
  rc=$?
  [ -f "$work/results.txt" ] && cp "$work/results.txt" "$out" && echo "results: $out"
  exit $rc
fi

# --- as the unprivileged user, in the namespace ---
dir=${2:?work directory}
cd "$dir"
LPORT=51532 PPORT=51533 SPORT=51522
SA=$SPORT SB=51523
TUN=51540 OSSH=51550
DARK=10.231.10.5
KA_INTERVAL=2 KA_COUNT=3 CONNECT_TIMEOUT=5
RUN_SECS=30 EVENT_AT=10 RESUME_AT=25
LOCAL_CONF="tunnel_ssh.port_range = '51540-51549'
tunnel_ssh.keepalive_interval = $KA_INTERVAL
tunnel_ssh.keepalive_count = $KA_COUNT
tunnel_ssh.connect_timeout = $CONNECT_TIMEOUT
max_connections = 200"
. "$dir/lib.sh"
harness_start
me=$(id -un)
export PGSSLMODE=disable PGCONNECT_TIMEOUT=10
say() { printf '# %s\n' "$*" >&2; }
BA="127.0.0.1:$SA" BB="127.0.0.1:$SB"   # bastions A and B ($B is the bin directory)
frozen=()
bench_cleanup() {
  [ ${#frozen[@]} -gt 0 ] && kill -CONT "${frozen[@]}" 2>/dev/null
  [ -n "${AUTOSSH_PID:-}" ] && kill "$AUTOSSH_PID" 2>/dev/null
  cleanup
}
trap bench_cleanup EXIT

# Bastion B: its own host key, the same authorized_keys.
mkdir -p sshd2
ssh-keygen -q -t ed25519 -N '' -f sshd2/host_key
sed -e "s/^Port .*/Port $SB/" -e "s|^PidFile .*|PidFile $dir/sshd2/sshd.pid|" \
    -e "s|^HostKey .*|HostKey $dir/sshd2/host_key|" sshd/sshd_config > sshd2/sshd_config
start_b() { /usr/sbin/sshd -f "$dir/sshd2/sshd_config" -E "$dir/sshd2/log"; }
start_b
wait_for 5 port_open $SA && wait_for 5 port_open $SB || { say "bastions did not start"; exit 1; }
$B/pgbench -i -s 5 -q -h 127.0.0.1 -p $PPORT postgres >/dev/null 2>&1
lsql "CREATE EXTENSION tunnel_ssh;" || exit 1

# OpenSSH's client, as autossh runs it: -M 0 (ssh's own keepalive), and a
# restart however soon ssh exits (AUTOSSH_GATETIME=0).
ssh-keygen -q -t ed25519 -N '' -f ossh_key
cat ossh_key.pub >> sshd/authorized_keys
cat > ssh_config <<C
Host *
  StrictHostKeyChecking no
  UserKnownHostsFile $dir/known_hosts
  IdentityFile $dir/ossh_key
  ServerAliveInterval $KA_INTERVAL
  ServerAliveCountMax $KA_COUNT
  ConnectTimeout $CONNECT_TIMEOUT
  ExitOnForwardFailure yes
C

# The bastion side of a client's connections: the processes of the sshd
# listening on SSHD_PORT whose parent is its listener and whose socket's
# peer port is one of CLIENT_PID's (found with ss).
sessions_of() {  # sshd_port listener_pid client_pid
  local port p
  for port in $(ss -Htnp state established "( dport = :$1 )" | grep "pid=$3," | awk '{ n = split($3, a, ":"); print a[n] }'); do
    for p in $(ss -Htnp state established "( sport = :$1 and dport = :$port )" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
      [ "$(awk '{print $4}' /proc/$p/stat 2>/dev/null)" = "$2" ] && echo "$p"
    done
  done | sort -u
}
freeze() { local p; for p in "$@"; do frozen+=($(proc_tree_stopped "$p")); done; }
thaw() { [ ${#frozen[@]} -gt 0 ] && kill -CONT "${frozen[@]}" 2>/dev/null; frozen=(); }
worker_pid() { lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'"; }
ssh_pid() { pgrep -P "$AUTOSSH_PID" -x ssh | head -n 1; }

# Both bastions back to a fresh start between runs: every session ended,
# both listeners running.
reset_bastions() {
  thaw
  kill_sshd_by_config "$dir/sshd/sshd_config"; rm -f sshd/sshd.pid
  kill_sshd_by_config "$dir/sshd2/sshd_config"; rm -f sshd2/sshd.pid
  start_sshd; start_b
  wait_for 5 port_open $SA && wait_for 5 port_open $SB
}

# The load of one run, from T0 for RUN_SECS.
stream() {  # port file
  local rc end=$(( T0 + RUN_SECS * 1000 ))
  while [ "$(now_ms)" -lt $end ]; do
    ( s=$(now_ms)
      psql -X -h 127.0.0.1 -p "$1" -d "dbname=postgres connect_timeout=10" -Atc "SELECT 1" >/dev/null 2>&1
      rc=$?
      echo "$s $(now_ms) $rc" >> "$2" ) &
    sleep 0.1
  done
  wait
}
pgbench_loop() {  # port prefix
  local n=0 left rc
  while :; do
    left=$(( (T0 + RUN_SECS * 1000 - $(now_ms)) / 1000 ))
    [ $left -ge 1 ] || break
    n=$((n+1))
    $B/pgbench -n -S -c 4 -T $left -l --log-prefix="$2.$n" -h 127.0.0.1 -p "$1" postgres > "$2.$n.out" 2>&1
    rc=$?
    echo "$(now_ms) $rc" >> "$2.runs"
    # A run that could not connect is retried after a moment, not in a spin.
    grep -q "aborted while establishing connection\|connection to server .* failed" "$2.$n.out" && sleep 0.2
  done
}

results=()
row() { results+=("$(printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |' "$@")"); }
# One run: the load on PORT; at EVENT_AT the scenario's event.
run() {  # scenario key label port
  local sc=$1 path=$3 port=$4 tag="$1-$2" ev=0 first gap nfail ntx aborted noconn served after_resume=- victims=
  rm -f "$tag".*
  T0=$(now_ms)
  [ "$sc" = dark ] && ev=$T0
  stream "$port" "$tag.stream" & local sp=$!
  pgbench_loop "$port" "$tag.pgb" & local pp=$!
  if [ "$sc" != dark ]; then
    # What to freeze is found 2 s before (ss is slow among 100 clients).
    while [ $(( $(now_ms) - T0 )) -lt $(( EVENT_AT * 1000 - 2000 )) ]; do sleep 0.05; done
    local active=$BA listener client
    [ "$2" = tunnel_ssh ] && active=$(lsql "SELECT bastion FROM tunnel_status() WHERE name = 't'" 2>/dev/null)
    [ -n "$active" ] || active=$BA
    if [ "$active" = "$BB" ]; then listener=$(cat sshd2/sshd.pid); else listener=$(cat sshd/sshd.pid); fi
    if [ "$sc" = session ]; then
      [ "$2" = tunnel_ssh ] && client=$(worker_pid) || client=$(ssh_pid)
      victims=$(sessions_of "${active##*:}" "$listener" "$client" | tr '\n' ' ')
    else
      victims=$listener
    fi
    while [ $(( $(now_ms) - T0 )) -lt $(( EVENT_AT * 1000 )) ]; do sleep 0.05; done
    freeze $victims
    ev=$(now_ms)
    say "$tag: froze $active: ${frozen[*]} at t=$(secs $(( ev - T0 ))) s"
    if [ "$sc" = bastion ]; then
      while [ $(( $(now_ms) - T0 )) -lt $(( RESUME_AT * 1000 )) ]; do sleep 0.05; done
      thaw
      say "$tag: resumed at t=$(since $T0) s"
    fi
  fi
  wait $sp $pp
  local end=$(( T0 + RUN_SECS * 1000 ))
  # Successes' end times; the longest gap between them (from the start
  # and to the end of the run too).
  gap=$(awk -v t0="$T0" -v end="$end" '$3 == 0 { print $2 } END { print t0; print end }' "$tag.stream" | sort -n |
        awk 'NR > 1 && $1 - p > g { g = $1 - p } { p = $1 } END { print g + 0 }')
  nfail=$(awk '$3 != 0' "$tag.stream" | wc -l)
  # Served again: the first success of a connection that started after the event.
  first=$(awk -v e="$ev" '$3 == 0 && $1 >= e { print $2 }' "$tag.stream" | sort -n | head -n 1)
  [ -n "$first" ] && served="$(secs $(( first - ev ))) s" || served=never
  if [ "$sc" = bastion ]; then
    first=$(awk -v e="$(( T0 + RESUME_AT * 1000 ))" '$3 == 0 && $1 >= e { print $2 }' "$tag.stream" | sort -n | head -n 1)
    [ -n "$first" ] && after_resume="$(secs $(( first - T0 - RESUME_AT * 1000 ))) s after SIGCONT" || after_resume="not after SIGCONT either"
  fi
  ntx=$(cat "$tag".pgb.*.[0-9]* 2>/dev/null | awk '$3 != "failed" && $3 != "skipped"' | wc -l)
  aborted=$(cat "$tag".pgb.*.out 2>/dev/null | grep -c "aborted in command" || true)
  noconn=$(cat "$tag".pgb.*.out 2>/dev/null | grep -c "aborted while establishing\|connection to server .* failed" || true)
  [ "$2" = tunnel_ssh ] && say "$tag: tunnel_ssh serves through $(lsql "SELECT coalesce(bastion, 'none') FROM tunnel_status() WHERE name = 't'" 2>/dev/null || echo '? (no bastion column)') at the end"
  say "$tag: longest gap $(secs "$gap") s, $nfail of $(wc -l < "$tag.stream") new connections failed, served again: $served $after_resume; pgbench $ntx transactions, $aborted clients aborted, $noconn connection failures"
  row "$sc" "$path" "$(secs "$gap") s" "$nfail / $(wc -l < "$tag.stream")" "$served" "$after_resume" "$ntx" "$aborted" "$noconn"
}

api=yes
tunnel_up() {  # ssh_host list
  lsql "SELECT tunnel_drop('t')" >/dev/null 2>&1
  if lsql "SELECT tunnel_create('t', '$1', '127.0.0.1', $PPORT, ssh_user => '$me', local_port => $TUN)" > t.line 2>t.err; then
    :
  else
    # Before the bastion list exists: tunnel_ssh on the first bastion alone.
    api=no
    local first=${1%%,*}
    lsql "SELECT tunnel_create('t', '${first%:*}', '127.0.0.1', $PPORT, ssh_port => ${first##*:}, ssh_user => '$me', local_port => $TUN)" > t.line || return 1
  fi
  cat t.line >> sshd/authorized_keys
  # The dark scenario's load starts as soon as it is created.
  [ "$1" = "$DARK:22, $BB" ] && return 0
  wait_for 20 query_ok $TUN
}
autossh_up() {  # host port
  AUTOSSH_GATETIME=0 AUTOSSH_LOGFILE=$dir/autossh.log autossh -M 0 -F ssh_config -N \
    -L 127.0.0.1:$OSSH:127.0.0.1:$PPORT -p "$2" "$1" 2>>autossh.err &
  AUTOSSH_PID=$!
  extra_pids+=($AUTOSSH_PID)
}
autossh_down() { kill "$AUTOSSH_PID" 2>/dev/null; wait "$AUTOSSH_PID" 2>/dev/null; pkill -u "$me" -f "ssh .*-L 127.0.0.1:$OSSH:" 2>/dev/null; AUTOSSH_PID=; }

for sc in ${BENCH_SCENARIOS:-session bastion dark}; do
  for path in ${BENCH_PATHS:-tunnel_ssh autossh}; do
    reset_bastions || { say "bastions did not restart"; exit 1; }
    if [ "$path" = tunnel_ssh ]; then
      lsql "SELECT tunnel_drop('t')" >/dev/null 2>&1
      if [ "$sc" = dark ]; then
        tunnel_up "$DARK:22, $BB" || { say "tunnel_ssh: not up"; continue; }
        # Before the list exists, the dark bastion alone: never served.
      else
        tunnel_up "$BA, $BB" || { say "tunnel_ssh: not up"; continue; }
      fi
      label="tunnel_ssh, A and B"
      [ $api = no ] && label="tunnel_ssh, first bastion only (no bastion list yet)"
      run "$sc" tunnel_ssh "$label" $TUN
      lsql "SELECT tunnel_drop('t')" >/dev/null 2>&1
    else
      if [ "$sc" = dark ]; then autossh_up $DARK 22; else autossh_up 127.0.0.1 $SA; wait_for 20 query_ok $OSSH; fi
      run "$sc" autossh "ssh -L + autossh, A only" $OSSH
      autossh_down
    fi
  done
done
thaw

{
  echo "# Failover between bastions: tunnel_ssh (two bastions) and ssh -L + autossh (bastion A only)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(. /etc/os-release; echo "$PRETTY_NAME"); PostgreSQL $($B/postgres -V | awk '{print $3}');"
  echo "libssh2 $(pkg-config --modversion libssh2); $(ssh -V 2>&1 | cut -d, -f1) (client and bastions); autossh $(autossh -V 2>&1 | awk '{print $2}')."
  echo "Keepalive $KA_INTERVAL s x $KA_COUNT, connect timeout $CONNECT_TIMEOUT s on both paths. Each run $RUN_SECS s: pgbench -S -c 4"
  echo "(restarted when its clients are aborted) and a new connection (psql, libpq connect_timeout 10 s) every 0.1 s."
  echo "session: at t=$EVENT_AT s the per-connection sshd serving the path on the active bastion is frozen (SIGSTOP; listener up)."
  echo "bastion: at t=$EVENT_AT s the active bastion is frozen whole (listener and sessions), resumed at t=$RESUME_AT s."
  echo "dark: the first bastion ($DARK:22) drops SYNs from the start (t=0 is the start of the load)."
  [ $api = no ] && echo "tunnel_ssh here has no bastion list yet (tunnel_create refused it: $(head -n 1 t.err 2>/dev/null)): its rows are the first bastion alone."
  echo
  echo "| scenario | path | longest gap without a new connection | new connections failed | served again after the event | after SIGCONT | pgbench transactions | pgbench clients aborted | pgbench connection failures |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${results[@]}"
} > results.txt
cat results.txt >&2
