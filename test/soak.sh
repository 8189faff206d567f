#!/usr/bin/env bash
# Soak: SOAK_CYCLES (default 8) kills of the bastion's sshd, with its
# sessions, each followed by a restart, under pgbench (TPC-B-like, writes)
# through one tunnel, run back to back in short runs.  A cycle ends on its
# events: the tunnel reconnected (a new connect attempt, state connected),
# then a pgbench run begun after the reconnect finished clean.  Checks that
# no client hangs, that every transaction either commits or fails with an
# error (the bank's balances agree and the history holds every counted
# transaction, plus at most one per aborted client), that transactions
# commit through the new session after every restart, and that the
# worker's memory and open files do not grow.  Real parts only, on
# 127.0.0.1; every process started here is stopped on exit.  A longer run
# (the default was 20 until 2026-12): SOAK_CYCLES=20 bash
# test/run-tests.sh soak.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
# The smallest backoff the GUC allows: a reconnect waits for the worker's
# first retry, not for the test's settings.
LOCAL_CONF="tunnel_ssh.reconnect_max_delay = 1"
. "$(dirname "$0")/lib.sh"
harness_start

SOAK_CYCLES=${SOAK_CYCLES:-8}
TPORT=21500
RUN_SECONDS=2               # each pgbench run
RUN_BOUND=60                # a run still going after this has hung
now_ms() { date +%s%3N; }
psql_priv() { psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -Atc "$1"; }

$B/pgbench -i -s 4 -q -h 127.0.0.1 -p $PPORT postgres >/dev/null 2>&1
lsql "CREATE EXTENSION tunnel_ssh" >/dev/null
lsql "SELECT tunnel_create('soak', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$(id -un)', local_port => $TPORT)" \
  >> sshd/authorized_keys
check "tunnel connected" wait_state soak connected 20
wpid=$(lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'")
mem() { awk '/^VmRSS|^VmHWM/{printf "%s ", $2}' /proc/$wpid/status; ls /proc/$wpid/fd | wc -l; }
attempts() { lsql "SELECT connect_attempts FROM tunnel_status() WHERE name = 'soak'"; }

# --- the load: pgbench runs back to back until told to stop.  Run n
# writes runs/n.out when it starts and runs/n.rc when it ends. ---
mkdir -p runs
(
  n=0
  while [ -d runs ] && [ ! -f runs/stop ]; do
    n=$((n+1))
    # -n: no vacuum, which would truncate pgbench_history.
    timeout $RUN_BOUND $B/pgbench -n -c 4 -j 2 -T $RUN_SECONDS -h 127.0.0.1 -p $TPORT postgres \
      > runs/$n.out 2>&1
    echo $? > runs/$n.rc
    sleep 0.1
  done
) &
loader=$!
# Stop the load too if the run is cut short.
trap 'touch runs/stop 2>/dev/null; kill $loader 2>/dev/null; cleanup' EXIT
last_started() { ls runs | sed -n 's/^\([0-9]*\)\.out$/\1/p' | sort -n | tail -n 1; }
# A run numbered above $1 that ended with exit 0 and processed transactions.
clean_run_after() {
  local rcf n
  for rcf in runs/*.rc; do
    n=$(basename "$rcf" .rc)
    [ "$n" -gt "$1" ] && [ "$(cat "$rcf")" = 0 ] &&
      grep -qE '^number of transactions actually processed: [1-9]' "runs/$n.out" && { echo "$n"; return 0; }
  done
  return 1
}
reconnected_since() { [ "$(attempts)" -gt "$1" ] && [ "$(state_of soak)" = connected ]; }

echo "# soak: $SOAK_CYCLES cycles of sshd killed and restarted, pgbench -c 4 -T $RUN_SECONDS runs back to back"
# The load is under way before the first kill.
wait_for 30 clean_run_after 0 >/dev/null
rss=() fds=() reconnect_ms=() reconnected=0 served_cycles=0 missed=()
for m in $(seq 1 "$SOAK_CYCLES"); do
  read -r r h f <<<"$(mem)"
  rss+=("$r") fds+=("$f")
  a0=$(attempts)
  kill_sshd
  start_sshd
  t0=$(now_ms)
  if wait_for 60 reconnected_since "$a0"; then
    t1=$(now_ms)
    reconnected=$((reconnected+1))
    reconnect_ms+=($(( t1 - t0 )))
  else
    reconnect_ms+=(none)
    echo "# cycle $m: no reconnect; state $(state_of soak), last_error: $(error_of soak)"
  fi
  # Transactions through the new session: a run that started only after
  # the reconnect, so none of its connections used the killed session.
  first=$(last_started)
  if wait_for 30 clean_run_after "$first" >/dev/null; then
    run=$(clean_run_after "$first")
    served_cycles=$((served_cycles+1))
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "runs/$run.out")
  else
    missed+=("$m") tx=none run=none
  fi
  echo "# cycle $m: worker VmRSS $r kB, VmHWM $h kB, open files $f; reconnected ${reconnect_ms[-1]} ms after sshd started (attempts $a0 -> $(attempts)); first clean run after it: ${run:-none} ($tx transactions)"
done
touch runs/stop
wait $loader
# The last clients' channels close as the worker reads their EOF.
active_is_0() { test "$(lsql "SELECT active_connections FROM tunnel_status() WHERE name = 'soak'")" = 0; }
wait_for 10 active_is_0
read -r r_end h_end f_end <<<"$(mem)"
echo "# after the soak (load stopped): worker VmRSS $r_end kB, VmHWM $h_end kB, open files $f_end"
echo "# reconnect times (ms after sshd started): ${reconnect_ms[*]}"
echo "# worker VmRSS samples (kB, one a cycle, before each kill): ${rss[*]}"
echo "# worker open-files samples: ${fds[*]}"

# --- the pgbench runs ---
runs=0 clean=0 aborted_runs=0 connfail_runs=0 hung=0 silent=0 processed=0 aborted_clients=0
for rcf in runs/*.rc; do
  n=$(basename "$rcf" .rc); out=runs/$n.out; rc=$(cat "$rcf")
  runs=$((runs+1))
  p=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
  processed=$((processed + ${p:-0}))
  ac=$(grep -cE '^pgbench: error: client [0-9]+ aborted|^client [0-9]+ aborted' "$out")
  aborted_clients=$((aborted_clients + ac))
  case "$rc" in
    0) clean=$((clean+1)) ;;
    124|137) hung=$((hung+1)); echo "# run $n hung (killed by timeout)" ;;
    *) if [ "$ac" -gt 0 ]; then aborted_runs=$((aborted_runs+1)); else connfail_runs=$((connfail_runs+1)); fi
       # A failed run must say why.
       grep -qiE 'error|abort|fatal' "$out" || { silent=$((silent+1)); echo "# run $n exit $rc without an error message"; } ;;
  esac
done
echo "# pgbench runs: $runs ($clean clean, $aborted_runs with aborted clients, $connfail_runs failed to connect, $hung hung); transactions processed: $processed; clients aborted: $aborted_clients"
grep -hE 'error|abort' runs/*.out | sed -E 's/client [0-9]+/client N/; s/command [0-9]+/command N/; s/^pgbench: error: //' \
  | sort | uniq -c | sort -rn | head -6 | sed 's/^/#   /'
check "no pgbench run hung (bound: $RUN_BOUND s each)" test "$hung" = 0
check "every failed run reported an error" test "$silent" = 0
check "transactions committed through the new session after each of the $SOAK_CYCLES restarts (a clean run begun after each reconnect; missed: ${missed[*]:-none})" \
  test "$served_cycles" = "$SOAK_CYCLES"

# --- every transaction committed whole or not at all ---
history=$(psql_priv "SELECT count(*) FROM pgbench_history")
sums=$(psql_priv "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT sum(tbalance) FROM pgbench_tellers) || ' ' || (SELECT sum(bbalance) FROM pgbench_branches) || ' ' || (SELECT coalesce(sum(delta), 0) FROM pgbench_history)")
echo "# history rows: $history (processed $processed, aborted clients $aborted_clients); balances accounts/tellers/branches/history: $sums"
check "history holds every counted transaction, and at most one more per aborted client" \
  test "$history" -ge "$processed" -a "$history" -le $((processed + aborted_clients))
read -r sa st sb sh <<<"$sums"
check "balances agree: no transaction half applied" test "$sa" = "$st" -a "$st" = "$sb" -a "$sb" = "$sh"

# --- the tunnel and the worker ---
check "the tunnel reconnected after each of the $SOAK_CYCLES sshd restarts (bound: 60 s each)" \
  test "$reconnected" = "$SOAK_CYCLES"
check "tunnel connected at the end" wait_state soak connected 20
check "a query through the tunnel at the end" test "$(psql_via $TPORT 'SELECT count(*) FROM pgbench_branches')" = 4
check "worker is the same process (no crash, no restart)" \
  test "$(lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'")" = "$wpid"
check "worker VmRSS does not grow (last sample ${rss[-1]} kB <= first ${rss[0]} kB + 4 MB)" \
  test "${rss[-1]}" -le $(( rss[0] + 4096 ))
check "worker open files do not grow (after the load $f_end <= first sample ${fds[0]})" test "$f_end" -le "${fds[0]}"
check "active connections back to 0" active_is_0
echo "# worker log lines: $(grep -c 'tunnel "soak"' local.log) about the tunnel; WARNING/ERROR/terminated: $(grep -cE 'WARNING|ERROR|terminated by signal' local.log)"
grep 'tunnel "soak"' local.log | sed 's/^[^]]*\] //' | sort | uniq -c | sort -rn | head -5 | sed 's/^/#   /'
grep -E 'WARNING|ERROR|terminated by signal' local.log | head -5 | sed 's/^/# /'
suite_end
