#!/usr/bin/env bash
# Run the tunnel_ssh test suites (or, with "demo", the demo) as root on a
# Debian machine: installs what it needs, builds, installs, then runs each
# suite as an unprivileged user (PostgreSQL refuses to run as root).
#   bash test/run-tests.sh            every suite here (Debian 12), then the
#                                     chroot suites on Debian 13 and testing
#   bash test/run-tests.sh e2e faults only these, on every platform
#   bash test/run-tests.sh demo       the demo, here
# PLATFORMS selects platforms: "native" is this machine, any other word a
# Debian release run in a chroot by test/platform.sh (default: "native
# trixie forky").  PG_CONFIG selects the PostgreSQL installation.
set -euo pipefail
SUITES="e2e topology day2 faults isolation security durability scale soak"
# What the chroots run by default: the long durability, scale and soak
# suites run here only.
CHROOT_SUITES="regress e2e topology day2 faults isolation security"
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ -z "${TUNNEL_SSH_PLATFORM:-}" ] && [ "${1:-}" != demo ]; then
  results=() bad=0
  out=$(mktemp /tmp/tunnel_ssh_run.XXXXXX)
  trap 'rm -f "$out"' EXIT
  for platform in ${PLATFORMS:-native trixie forky}; do
    start=$(date +%s)
    if [ "$platform" = native ]; then
      TUNNEL_SSH_PLATFORM=native bash test/run-tests.sh "$@" 2>&1 | tee -a "$out" && rc=0 || rc=$?
    else
      bash test/platform.sh "$platform" ${@:-$CHROOT_SUITES} 2>&1 | tee -a "$out" && rc=0 || rc=$?
    fi
    [ $rc -eq 0 ] && word=passed || { word=FAILED; bad=1; }
    results+=("$platform: $word in $(( $(date +%s) - start )) s")
  done
  echo "=== platforms"
  printf '%s\n' "${results[@]}"
  # Every check of every suite (and pg_regress) prints "ok N" or "not ok N".
  echo "total: $(grep -c '^ok ' "$out") passed, $(grep -c '^not ok ' "$out") failed"
  exit $bad
fi

. test/prepare.sh
prepare_machine

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
  mkdir -p "$work/regress"
  cp -r "$repo/Makefile" "$repo/tunnel_ssh.control" "$repo/sql" "$repo/expected" "$repo/test" "$work/regress/"
  chown -R "$user" "$work/regress"
  if ! in_own_network "su $user -c \"cd $work/regress && make -s installcheck NO_PGXS_BUILD=1 REGRESS_OPTS='--inputdir=. --outputdir=results --temp-instance=$work/regress/tmp --temp-config=test/regress.conf --port=55499 --dbname=contrib_regression'\""; then
    cat "$work/regress/results/regression.diffs" 2>/dev/null || true
    return 1
  fi
}

failed=()
for suite in "$@"; do
  echo "=== $suite"
  if [ "$suite" = regress ]; then
    regress || failed+=("$suite")
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
su $user -c 'bash $work/$suite/$suite.sh $work/$suite' || rc=1
$teardown || true
exit \$rc" || failed+=("$suite")
  root_teardown=
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED suites: ${failed[*]}"
  exit 1
fi
echo "all suites passed: $*"
