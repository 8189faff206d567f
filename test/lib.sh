# The harness of every suite, the demo and the benchmark: helpers, and
# harness_start, which makes a throwaway private database, a local server
# with tunnel_ssh preloaded and a real sshd bastion, all on 127.0.0.1 under
# $dir, run as the calling (unprivileged) user; cleanup stops them all.
# Sourcing it defines and starts nothing.  The caller sets dir and cd's
# there first; it may set LPORT, PPORT and SPORT and LOCAL_CONF (extra
# settings for the local server) before harness_start.
B=$(${PG_CONFIG:-pg_config} --bindir)
# TAP: every check prints "ok N - what" or "not ok N - what"; a check that
# cannot be made here (on this platform) is a named skip, "ok N - what #
# SKIP why", counted apart and never as a pass.
pass=0 fail=0 skipped=0
ok()   { pass=$((pass+1)); echo "ok $((pass+fail+skipped)) - $1"; }
notok(){ fail=$((fail+1)); echo "not ok $((pass+fail+skipped)) - $1"; }
skip() { skipped=$((skipped+1)); echo "ok $((pass+fail+skipped)) - $1 # SKIP $2"; }
# Returns non-zero on failure, so "check ... || show details" works.
check(){ local name=$1; shift; if "$@"; then ok "$name"; else notok "$name"; return 1; fi; }

LPORT=${LPORT:-55432} PPORT=${PPORT:-55433} SPORT=${SPORT:-52222}
lsql() { psql -X -q -h "$dir" -p $LPORT -d postgres -v ON_ERROR_STOP=1 -Atc "$1"; }
psql_via() { psql -X -q -h 127.0.0.1 -p "$1" -d postgres -Atc "$2"; }

start_sshd() { /usr/sbin/sshd -f "$dir/sshd/sshd_config" -E "$dir/sshd/log"; }
# A process and all its descendants (sshd's sessions are grandchildren).
proc_tree() {
  local p
  echo "$1"
  for p in $(pgrep -P "$1"); do proc_tree "$p"; done
}
# Stopping the listener leaves its sessions running, as a real sshd restart
# does; kill_sshd also ends the sessions (its children, so not another suite's).
stop_sshd()  { [ -f "$dir/sshd/sshd.pid" ] && kill "$(cat "$dir/sshd/sshd.pid")" 2>/dev/null; rm -f "$dir/sshd/sshd.pid"; sleep 0.5; }
kill_sshd()  {
  # By its config, not only its pid file, which a just-started sshd may not
  # have written yet.
  kill_sshd_by_config "$dir/sshd/sshd_config"
  rm -f "$dir/sshd/sshd.pid"
}
# Each process of the tree is stopped as it is found, so none can fork a
# child we miss: a session the listener forks while we list its children
# would otherwise live on, serving with the keys and settings we meant to
# replace.  Then all are ended, and we wait until they have.
proc_tree_stopped() {
  local p
  kill -STOP "$1" 2>/dev/null || return 0
  echo "$1"
  for p in $(pgrep -P "$1"); do proc_tree_stopped "$p"; done
}
kill_tree() {  # pid...
  local p all=() i
  for p in "$@"; do all+=($(proc_tree_stopped "$p")); done
  [ ${#all[@]} -gt 0 ] || return 0
  kill "${all[@]}" 2>/dev/null || true
  kill -CONT "${all[@]}" 2>/dev/null || true
  for i in $(seq 100); do
    alive "${all[@]}" || return 0
    sleep 0.05
  done
  kill -KILL "${all[@]}" 2>/dev/null || true
}
# True while one of the pids is a process that has not ended (a zombie has).
alive() {
  local p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && return 0
  done
  return 1
}
kill_sshd_by_config() { kill_tree $(pgrep -f "sshd -f $1( |\$)"); }
# What a suite starts beyond these servers: pids in extra_pids, and a
# second sshd under $dir/sshd2; cleanup stops them too.
extra_pids=()
# Safe under set -e: a process that already ended must not cut it short.
cleanup() {
  local p
  for p in "${extra_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  kill_sshd_by_config "$dir/sshd2/sshd_config"
  kill_sshd
  # Under valgrind a fast shutdown, so every process reports its leaks.
  if [ -n "${TUNNEL_SSH_POSTGRES:-}" ]; then
    $B/pg_ctl -D "$dir/local" stop -m fast -t 120 >/dev/null 2>&1 || true
  fi
  $B/pg_ctl -D "$dir/local" stop -m immediate >/dev/null 2>&1 || true
  $B/pg_ctl -D "$dir/private" stop -m immediate >/dev/null 2>&1 || true
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }   # ms -> "1.2"
since() { secs $(( $(now_ms) - $1 )); }
# wait_for SECONDS CMD...: poll every 0.1 s until CMD succeeds.
wait_for() {
  local end=$(( $(now_ms) + $1 * 1000 )); shift
  until "$@" 2>/dev/null; do
    [ "$(now_ms)" -ge "$end" ] && return 1
    sleep 0.1
  done
}
error_of() { lsql "SELECT last_error FROM tunnel_status() WHERE name = '$1'"; }
attempts_of() { lsql "SELECT connect_attempts FROM tunnel_status() WHERE name = '$1'"; }
query_ok() { test "$(psql_via "$1" "SELECT 1")" = 1; }
state_of() { lsql "SELECT state FROM tunnel_status() WHERE name = '$1'"; }
wait_state() {  # tunnel state seconds
  for _ in $(seq 1 $(( $3 * 5 ))); do
    [ "$(state_of "$1")" = "$2" ] && return 0; sleep 0.2
  done
  echo "# tunnel $1 is '$(state_of "$1")', wanted '$2'; last_error: $(lsql "SELECT last_error FROM tunnel_status() WHERE name = '$1'")"
  return 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# libssh2 1.11 and later (AEAD ciphers, rsa-sha2 signatures, strict kex).
libssh2_11() { pkg-config --atleast-version=1.11 libssh2; }
# Does this sshd penalise failed logins (OpenSSH 9.8+ PerSourcePenalties)?
sshd_penalises() {
  local v
  v=$(ssh -V 2>&1 | sed -n 's/^OpenSSH_\([0-9]*\.[0-9]*\).*/\1/p')
  [ -n "$v" ] && [ "$(printf '%s\n9.8\n' "$v" | sort -V | head -n 1)" = 9.8 ]
}
# Replace a tunnel's line in an authorized_keys file with the one
# tunnel_public_key returns now, as a DBA does after the NOTICE that says
# the line changed (sshd uses the first line that has the key).
repaste() {  # tunnel file [psql function, default lsql]
  local blob sql=${3:-lsql}
  blob=$($sql "SELECT split_part(public_key, ' ', 2) FROM tunnel_ssh.tunnel WHERE name = '$1'")
  { grep -vF -- "$blob" "$2"; $sql "SELECT tunnel_public_key('$1')"; } > "$2.new"
  cat "$2.new" > "$2"; rm -f "$2.new"
}
# sshd's penalty lines in a log or stdin (LogLevel VERBOSE shows them):
# penalties enforced ("activating", connections dropped), or all of them.
penalty_lines() { grep -E 'activating .*penalty|drop connection .*penalty' "${1:--}" 2>/dev/null || true; }
penalty_all() { grep -E 'penalty' "${1:--}" 2>/dev/null || true; }

# --- set up: private database, local server, bastion ---
# Sourcing this file only defines; a suite calls harness_start, which starts
# the servers under $dir and arranges for cleanup to stop them at exit.
harness_start() {
# The machine-wide lock of run-tests.sh and platform.sh (fds 9 and 8) is
# the root shell's to hold: a server started here must not inherit it, or
# one left running would block every later run.
exec 8>&- 9>&-
trap cleanup EXIT
# A run cut short (CI's timeout, ^C) stops them too: an untrapped signal
# would end the shell without its EXIT trap.
trap 'exit 143' TERM INT HUP
# A server process that crashes leaves a core in its data directory (where
# the kernel's core_pattern is the default), for suite_end's backtrace.
ulimit -c unlimited 2>/dev/null || true
$B/initdb -D private -A trust >/dev/null
$B/initdb -D local -A trust >/dev/null
cat >> private/postgresql.conf <<C
port = $PPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 120
C
cat >> local/postgresql.conf <<C
port = $LPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'tunnel_ssh'
tunnel_ssh.keepalive_interval = 2
tunnel_ssh.reconnect_max_delay = 2
${LOCAL_CONF:-}
C
$B/pg_ctl -D private -l private.log start -w >/dev/null
# TUNNEL_SSH_POSTGRES (test/valgrind.sh: postgres under valgrind) runs the
# local server only, the one that loads the module.
$B/pg_ctl -D local -l local.log ${TUNNEL_SSH_POSTGRES:+-p "$TUNNEL_SSH_POSTGRES" -t 300} start -w >/dev/null
mkdir -p sshd
ssh-keygen -q -t ed25519 -N '' -f sshd/host_key
touch sshd/authorized_keys; chmod 600 sshd/authorized_keys
cat > sshd/sshd_config <<C
ListenAddress 127.0.0.1
Port $SPORT
HostKey $dir/sshd/host_key
PidFile $dir/sshd/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile $dir/sshd/authorized_keys
StrictModes no
AllowTcpForwarding yes
LogLevel VERBOSE
MaxStartups 200
C
start_sshd
}

# deliberate_kill SIGNAL PID: a server process a suite kills on purpose;
# suite_end excuses its death (by pid), and only its.
deliberate_kill() {
  echo "$2" >> "$dir/deliberate_kills"
  kill -"$1" "$2"
}

# The end of every suite: no server process of any cluster the suite
# started (every *.log beside and one level below $dir: local, private,
# standby, restored...) may have died of a signal, OOM kills included,
# except the processes the suite killed itself (deliberate_kill).  A crash
# the postmaster recovered from can leave every later check green, so this
# check says what crashed, what the log said just before, and the
# backtrace of any core; then the TAP plan and the summary.
suite_end() {
  local crashes core line pid logs f
  logs=$(find "$dir" -maxdepth 2 -name '*.log' -type f 2>/dev/null | sort)
  # The postmaster's words for a child that died of a signal; sshd's own
  # "terminated by signal" (a session it ended) is not a crash of ours.
  crashes=$(for f in $logs; do
    grep -H -E '\(PID [0-9]+\) was terminated by signal' "$f" 2>/dev/null | while IFS= read -r line; do
      pid=$(sed -n 's/.*(PID \([0-9]*\)).*/\1/p' <<<"$line")
      [ -n "$pid" ] && grep -qx "$pid" "$dir/deliberate_kills" 2>/dev/null && continue
      echo "$line"
    done
  done)
  if ! check "no server process crashed" test -z "$crashes"; then
    printf '%s\n' "$crashes" | head -5 | sed 's/^/# /'
    # What the log said before the first crash that is not excused.
    line=$(head -n 1 <<<"$crashes")
    f=${line%%:*}
    grep -B 30 -m 1 -F -- "${line#*:}" "$f" 2>/dev/null | sed "s|^|#   ${f##*/}: |" | head -80
    for core in "$dir"/*/core*; do
      [ -f "$core" ] && command -v gdb >/dev/null || continue
      echo "# backtrace of $core:"
      gdb -batch -q -ex 'bt 30' "$B/postgres" "$core" 2>&1 | grep -E '^#' | sed 's/^/#   /'
    done
  fi
  echo "1..$((pass+fail+skipped))"
  echo "$pass passed, $fail failed, $skipped skipped"
  [ "$fail" -eq 0 ]
}

# swap_sshd CMD...: the bastion on $SPORT replaced with no moment in which
# nothing listens there: its listener stops (its sessions stay), CMD starts
# the replacement, then the old sessions end, so that the tunnels' next
# attempt meets the replacement.  (An attempt that finds nothing listening
# is one more failure: after a host key mismatch it doubles the backoff.)
swap_sshd() {
  local listener sessions
  listener=$(cat "$dir/sshd/sshd.pid")
  # Stopped while its sessions are listed, so it forks none we miss.
  kill -STOP "$listener"
  sessions=$(proc_tree "$listener" | grep -vx "$listener")
  kill "$listener"; kill -CONT "$listener"; rm -f "$dir/sshd/sshd.pid"
  wait_for 5 bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$SPORT) 2>/dev/null"
  "$@"
  wait_for 5 port_open "$SPORT"
  kill $sessions 2>/dev/null || true
}
