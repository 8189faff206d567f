#!/usr/bin/env bash
# The checks of the test harness itself (run-tests.sh, lib.sh), as root:
# a run's last line and exit status must tell the truth about every kind
# of failure.  Each runs the real run-tests.sh, on a copy of this tree with
# the fixture suites of test/harness/ planted in it, and reads what it
# printed.  run-tests.sh runs this as its last "platform", harness.
set -uo pipefail
cd "$(dirname "$0")/.."
n=0 bad=0
ok()    { n=$((n+1)); echo "ok $n - harness: $1"; }
notok() { n=$((n+1)); bad=1; echo "not ok $n - harness: $1"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else notok "$name"; return 1; fi; }
has()   { grep -qxF -- "$2" "$1"; }       # file line: the output has this line
show()  { sed 's/^/#   /' "$1" | tail -n 40; }

top=$(mktemp -d /tmp/tunnel_ssh_harness.XXXXXX)
trap 'rm -rf "$top"' EXIT
copy=$top/tree
mkdir -p "$copy"
tar --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --exclude=./results --exclude=./bench/results -cf - . | tar -C "$copy" -xf -
for f in test/harness/*.sh; do cp "$f" "$copy/test/harness-$(basename "$f")"; done
# A broken expected output: a line pg_regress will not print.
echo "harness: a line the test does not print" >> "$copy/expected/api.out"

# 1. Every kind of failure in one run: a failed pg_regress test, a suite
#    that dies after a passed check, one that hangs, a crash found by
#    suite_end in a cluster logging outside the suite's top directory
#    (with a deliberate kill beside it that must not count), and a skip.
echo "# harness: run 1, every kind of failure (pg_regress, fixtures under test/harness/)"
out1=$top/run1.out
# The timeout is what the hang costs, and every other fixture must end
# well within it: harness-crash (a cluster made, started, a backend killed)
# takes 3 s on an idle machine but went past 10 s in CI with two CPU hogs
# beside it, so 30 s.
(cd "$copy" && PLATFORMS=native TUNNEL_SSH_SUITE_TIMEOUT=30 \
   bash test/run-tests.sh regress harness-early harness-hang harness-skip harness-crash) > "$out1" 2>&1
rc1=$?
check "a broken expected output is a named failure" has "$out1" "not ok - regress api" || show "$out1"
check "a suite that exits early is a named failure" \
  has "$out1" "not ok - harness-early: ended without a failed check (1 passed before it ended)" || show "$out1"
check "a suite that hangs is stopped and named" \
  has "$out1" "not ok - harness-hang: still running after 30 s, stopped" || show "$out1"
crash=$(sed -n '/^=== harness-crash$/,/^=== /p' "$out1")
killed=$(sed -n 's/^# killed on purpose: \([0-9]*\); by accident: \([0-9]*\)$/\1 \2/p' <<<"$crash")
read -r on_purpose by_accident <<<"$killed"
check "a backend killed by accident, in a cluster logging in a subdirectory, is a crash" \
  grep -qE "^not ok [0-9]+ - no server process crashed$" <<<"$crash" || show "$out1"
check "... named by its pid" grep -q "(PID ${by_accident:-none}) was terminated by signal 9" <<<"$crash"
# suite_end lists each crash as "# <log>:<line>" (the log lines it shows
# before one, which may include the deliberate kill, as "#   <log>: ...").
check "... and the deliberate kill beside it is not" \
  bash -c '! grep -q "^# /.*(PID $1) was terminated" <<<"$2"' _ "${on_purpose:-none}" "$crash"
check "a skip is named and counted apart" \
  has "$out1" "ok 2 - a check this platform cannot make # SKIP the fixture says so" || show "$out1"
check "the last line counts every failure and the skip" \
  test "$(tail -n 1 "$out1")" = "total: 4 passed, 4 failed, 1 skipped" || show "$out1"
check "... and the exit status agrees" test "$rc1" -eq 1

# 2. A platform whose packages cannot be installed.
echo "# harness: run 2, a package apt cannot install"
out2=$top/run2.out
(cd "$copy" && PLATFORMS=native TUNNEL_SSH_EXTRA_PACKAGES=tunnel-ssh-no-such-package \
   bash test/run-tests.sh harness-skip) > "$out2" 2>&1
rc2=$?
check "a platform whose packages cannot be installed is a named failure" \
  grep -qE "^not ok - native: failed outside any check \(exit [0-9]+\): .*tunnel-ssh-no-such-package" "$out2" || show "$out2"
check "... counted in the last line" test "$(tail -n 1 "$out2")" = "total: 0 passed, 1 failed, 0 skipped" || show "$out2"
check "... and the exit status agrees" test "$rc2" -eq 1

# 3. The include graph of src/ (test/include_cycles.sh, bash and awk, well
#    under a second): no include circle at all, and in particular none
#    through the settings and the entry file, so that any module can read
#    a setting.
echo "# harness: include circles through the settings and the entry file"
circles=$top/circles.out
# (The redirect inside eval: the check's own "ok" line goes to the log.)
check "no include circle runs through the settings (settings.h)" \
  eval 'bash test/include_cycles.sh settings > "$circles"' || show "$circles"
check "... nor through the entry file (tunnel_ssh.c)" \
  eval 'bash test/include_cycles.sh tunnel_ssh > "$circles"' || show "$circles"
check "... nor anywhere in src/" \
  eval 'bash test/include_cycles.sh > "$circles"' || show "$circles"

echo "1..$n"
exit $bad
