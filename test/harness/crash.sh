#!/usr/bin/env bash
# Harness fixture: a cluster whose backend dies of SIGKILL, once by accident
# and once on purpose (deliberate_kill).  suite_end must name the first
# death, and only it, as a crash, even though the cluster logs in a
# directory of its own.
set -euo pipefail
dir=$1; cd "$dir"
. "$dir/lib.sh"
port=55399
# -N: a throwaway cluster need not wait for fsync.
$B/initdb -N -D crashdb -A trust >/dev/null
mkdir -p logs
$B/pg_ctl -D crashdb -o "-p $port -k $dir -c listen_addresses=''" -l logs/crashdb.log -w start >/dev/null
trap '$B/pg_ctl -D "$dir/crashdb" stop -m immediate >/dev/null 2>&1 || true' EXIT
# Is the waiting backend there yet?  A function: each poll asks again.
sleeping() { test "$(psql -X -h "$dir" -p $port -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")" -ge 1; }
backend() {  # a backend that waits, and its pid
  psql -X -h "$dir" -p $port -d postgres -Atc "SELECT pg_sleep(60)" >/dev/null 2>&1 &
  wait_for 10 sleeping
  psql -X -h "$dir" -p $port -d postgres -Atc "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'"
}
# The postmaster restarts after each death: wait until it takes connections.
up() { wait_for 20 psql -X -h "$dir" -p $port -d postgres -Atc "SELECT 1" >/dev/null 2>&1; }
on_purpose=$(backend)
deliberate_kill KILL "$on_purpose"
up
by_accident=$(backend)
kill -KILL "$by_accident"
up
echo "# killed on purpose: $on_purpose; by accident: $by_accident"
$B/pg_ctl -D crashdb stop -m fast >/dev/null
suite_end
