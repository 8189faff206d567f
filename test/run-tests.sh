#!/usr/bin/env bash
# Run the tunnel_ssh test suites (or, with "demo", the demo) as root on a
# Debian machine: installs what it needs, builds, installs, then runs each
# suite as an unprivileged user (PostgreSQL refuses to run as root).
#   bash test/run-tests.sh            every suite here (Debian 12), then the
#                                     chroot suites on Debian 13 and testing
#   bash test/run-tests.sh e2e faults only these, on every platform
#   bash test/run-tests.sh demo       the demo, here
# PLATFORMS selects platforms: "native" is this machine, "harness" the
# checks of this script itself (test/harness.sh), any other word a Debian
# release run in a chroot by test/platform.sh (default: "native trixie forky
# harness").  PG_CONFIG selects the PostgreSQL installation.
set -euo pipefail
SUITES="e2e topology day2 cert faults failover isolation security dba proxy connections durability scale soak"
# What the chroots run by default: the long durability, scale and soak
# suites run here only.  Debian testing has the same libssh2 as Debian 13
# (1.11.1), so it runs only the suites whose checks depend on what differs
# there, PostgreSQL (18) and OpenSSH (10.6): the API and the catalog,
# the key line and host keys against sshd, penalties, privileges and logs.
# Topology, faults and isolation exercise libssh2 and the kernel, the same
# on both.
CHROOT_SUITES="regress e2e topology day2 cert faults failover isolation security dba proxy"
chroot_suites() {  # release
  case $1 in
    forky) echo "regress e2e day2 cert security dba proxy connections" ;;
    *) echo "$CHROOT_SUITES" ;;
  esac
}
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ -z "${TUNNEL_SSH_PLATFORM:-}" ] && [ "${1:-}" != demo ]; then
  results=() bad=0
  out=$(mktemp /tmp/tunnel_ssh_run.XXXXXX)
  trap 'rm -f "$out"' EXIT
  for platform in ${PLATFORMS:-native trixie forky harness}; do
    start=$(date +%s)
    mark=$(grep -c '^not ok ' "$out" || true)
    if [ "$platform" = native ]; then
      TUNNEL_SSH_PLATFORM=native bash test/run-tests.sh "$@" 2>&1 | tee -a "$out" && rc=0 || rc=$?
    elif [ "$platform" = harness ]; then
      # Not a platform: the checks of this script itself (test/harness.sh).
      bash test/harness.sh 2>&1 | tee -a "$out" && rc=0 || rc=$?
    else
      bash test/platform.sh "$platform" ${@:-$(chroot_suites "$platform")} 2>&1 | tee -a "$out" && rc=0 || rc=$?
    fi
    # A platform that failed where no check did (debootstrap, apt, a mount,
    # the build) is a failure too, with its name.
    if [ $rc -ne 0 ] && [ "$(grep -c '^not ok ' "$out" || true)" -eq "$mark" ]; then
      echo "not ok - $platform: failed outside any check (exit $rc): $(grep -v '^#' "$out" | tail -n 1)" | tee -a "$out"
    fi
    [ $rc -eq 0 ] && word=passed || { word=FAILED; bad=1; }
    results+=("$platform: $word in $(( $(date +%s) - start )) s")
  done
  echo "=== platforms"
  printf '%s\n' "${results[@]}"
  # Every check of every suite prints "ok N - what" or "not ok N - what"
  # (pg_regress too: regress() below), a skip "ok N - what # SKIP why".
  skipped=$(grep -ci '^ok .*# SKIP' "$out" || true)
  passed=$(( $(grep -c '^ok ' "$out" || true) - skipped ))
  failed=$(grep -c '^not ok ' "$out" || true)
  # The exit status and the last line agree: a failed check fails the run.
  [ "$failed" -eq 0 ] || bad=1
  if [ "$skipped" -gt 0 ]; then
    echo "=== skipped"
    grep -i '^ok .*# SKIP' "$out" | sed 's/^ok [0-9]* - /  /'
  fi
  if [ "$failed" -gt 0 ]; then
    echo "=== failed"
    grep '^not ok ' "$out" | sed 's/^not ok [0-9]* *- */  /'
  fi
  echo "total: $passed passed, $failed failed, $skipped skipped"
  exit $bad
fi

. test/prepare.sh
# TUNNEL_SSH_EXTRA_PACKAGES: more Debian packages to install (the harness's
# own check of a platform whose packages cannot be installed).
prepare_machine ${TUNNEL_SSH_EXTRA_PACKAGES:-}

work=$(mktemp -d /tmp/tunnel_ssh_test.XXXXXX)
chown "$user" "$work"
chmod 755 "$work"
# A suite that needs root for its set-up (network namespaces) has a
# test/<suite>.root.sh, run as root with "setup" before it and "teardown"
# after it, or at exit if the run is cut short.
root_teardown=
cleanup() {
  [ -n "$root_teardown" ] && bash $root_teardown || true
  rm -rf "$work"
  restore_machine
}
trap cleanup EXIT
# Cut short, it cleans up once the running suite has stopped its servers
# (bash runs the trap when its foreground child ends), not under it.
trap 'exit 143' TERM INT HUP
[ $# -gt 0 ] || set -- regress $SUITES

# Every suite runs in a network namespace of its own (in_own_network,
# test/prepare.sh).
regress() {
  # SQL behaviour, in a temporary instance with the module preloaded.
  # pg_regress of PostgreSQL 15 prints "test api ... ok" (16+ print TAP):
  # each test becomes an "ok"/"not ok" line either way, so it is counted.
  local rc=0
  mkdir -p "$work/regress"
  cp -r "$repo/Makefile" "$repo/tunnel_ssh.control" "$repo/sql" "$repo/expected" "$repo/test" "$work/regress/"
  chown -R "$user" "$work/regress"
  in_own_network "su $user -c \"cd $work/regress && make -s installcheck NO_PGXS_BUILD=1 REGRESS_OPTS='--inputdir=. --outputdir=results --temp-instance=$work/regress/tmp --temp-config=test/regress.conf --port=55499 --dbname=contrib_regression'\"" 2>&1 |
    sed -E 's/^test +([^ ]+) +\.\.\. +ok\b.*/ok - regress \1/; s/^test +([^ ]+) +\.\.\. +FAILED\b.*/not ok - regress \1/' || rc=$?
  if [ $rc -ne 0 ]; then
    cat "$work/regress/results/regression.diffs" 2>/dev/null || true
    return 1
  fi
}

failed=()
# A suite that fails with no failed check (it died, hung, or its set-up
# failed) is a failed check of its own, named.
suite_failed() {  # suite log
  failed+=("$1")
  grep -q '^not ok ' "$2" ||
    echo "not ok - $1: ended without a failed check ($(grep -c '^ok ' "$2") passed before it ended)"
}
# A suite that hangs is stopped (its servers with it: it traps TERM).
suite_timeout=${TUNNEL_SSH_SUITE_TIMEOUT:-1500}
for suite in "$@"; do
  echo "=== $suite"
  log=$work/$suite.log
  suite_start=$(date +%s)
  if [ "$suite" = regress ]; then
    regress 2>&1 | tee "$log" || suite_failed regress "$log"
    echo "# $suite took $(( $(date +%s) - suite_start )) s"
    continue
  fi
  case "$suite" in lib|run-tests) suite=none ;; esac
  [ -f "$repo/test/$suite.sh" ] || { echo "no such suite: $suite" >&2; exit 2; }
  mkdir -p "$work/$suite"
  chown "$user" "$work/$suite"
  cp "$repo/test/lib.sh" "$repo/test/$suite.sh" "$work/$suite/"
  setup=: teardown=:
  if [ -f "$repo/test/$suite.root.sh" ]; then
    root_teardown="$repo/test/$suite.root.sh teardown $work/$suite $user"
    setup="bash $repo/test/$suite.root.sh setup $work/$suite $user"
    teardown="bash $root_teardown"
  fi
  in_own_network "if ! $setup; then $teardown; exit 1; fi
rc=0
timeout -k 30 $suite_timeout su $user -c 'bash $work/$suite/$suite.sh $work/$suite' || rc=\$?
# What the stopped suite started may live on, holding our pipe open.
[ \$rc -eq 124 ] && { pkill -KILL -u $user; echo 'not ok - $suite: still running after $suite_timeout s, stopped'; }
[ \$rc -eq 0 ] || rc=1
$teardown || true
exit \$rc" 2>&1 | tee "$log" || suite_failed "$suite" "$log"
  echo "# $suite took $(( $(date +%s) - suite_start )) s"
  root_teardown=
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED suites: ${failed[*]}"
  exit 1
fi
echo "all suites passed: $*"
