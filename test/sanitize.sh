#!/usr/bin/env bash
# The end-to-end suite (default: e2e) with tunnel_ssh built with
# AddressSanitizer, in a local server started with libasan preloaded and
# LeakSanitizer on; then a summary of what the sanitizer reported about our
# code.  As root on Debian 12, like test/run-tests.sh, which it runs.
#   bash test/sanitize.sh              (make asan)
#   bash test/sanitize.sh e2e topology
# Fails if the suite fails, if any process of the local server hit an
# AddressSanitizer error, or if a leak has a frame in tunnel_ssh.  PostgreSQL
# itself leaves memory unfreed at exit by design, so leaks without a frame of
# ours are counted but ignored.  The raw logs stay in $ASAN_DIR (printed).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
[ $# -gt 0 ] || set -- e2e

libasan=$(readlink -f "$(gcc -print-file-name=libasan.so)")
[ -f "$libasan" ] || { echo "no libasan for gcc: apt-get install libasan8" >&2; exit 2; }
symbolizer=$(command -v llvm-symbolizer || ls /usr/lib/llvm-*/bin/llvm-symbolizer 2>/dev/null | tail -n 1)

log=$(mktemp -d /tmp/tunnel_ssh_asan.XXXXXX)
chmod 1777 "$log"
export ASAN_DIR=$log
export TUNNEL_SSH_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1"
export TUNNEL_SSH_LD_PRELOAD=$libasan
# fast_unwind_on_malloc=0: libssh2, libcrypto and postgres are built without
# frame pointers, and a leak allocated inside them must still show our frame.
export ASAN_OPTIONS="detect_leaks=1:log_path=$log/asan:fast_unwind_on_malloc=0:malloc_context_size=40:quarantine_size_mb=64:detect_odr_violation=0:print_suppressions=0"
[ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH=$symbolizer

start=$(date +%s)
bash test/run-tests.sh "$@" 2>&1 | tee "$log/suite.out"
suite_rc=${PIPESTATUS[0]}
elapsed=$(( $(date +%s) - start ))

# Leave the ordinary module installed for whoever runs next (under the same
# lock as the suites, so never under someone else's run).
unset TUNNEL_SSH_CFLAGS TUNNEL_SSH_LD_PRELOAD ASAN_OPTIONS
( flock 9; make -s clean >/dev/null 2>&1; make -s >/dev/null && make -s install >/dev/null ) \
  9>/tmp/tunnel_ssh_tests.lock || echo "# could not reinstall the ordinary build" >&2

# --- summary: one record per report block ---
ours_re="tunnel_ssh\\.so|src/($(cd src && ls *.c | sed 's/\.c$//' | paste -sd'|'))\\.c:"
summary=$log/summary.txt
blocks=$log/blocks.tsv
: > "$blocks"
for f in "$log"/asan.*; do
  [ -f "$f" ] || continue
  awk -v ours="$ours_re" -v file="$(basename "$f")" '
    function clean(line,   s) {
      s = line
      sub(/^ *#[0-9]+ 0x[0-9a-f]+ /, "", s)
      sub(/^in /, "", s)
      sub(/ \(BuildId: [0-9a-f]+\)/, "", s)
      gsub(/\/[^ ():]*\//, "", s)        # directories
      return s
    }
    function flush() {
      if (kind != "")
        printf "%s\t%d\t%d\t%s\t%s\n", kind, mine, bytes, file, stack
      kind = ""; stack = ""; mine = 0; bytes = 0; nframes = 0; stacks = 0
    }
    /^==[0-9]+==ERROR: AddressSanitizer:/ {
      flush(); kind = $3; sub(/:$/, "", kind); inerr = 1; next
    }
    /^==[0-9]+==ERROR: LeakSanitizer:/ { flush(); inerr = 0; next }
    /^(Direct|Indirect) leak of/ { flush(); kind = $1 "-leak"; bytes = $4; next }
    /^ *#[0-9]+ / {
      if (kind == "") next
      if ($0 ~ ours) mine = 1
      if ($1 == "#0") stacks++
      if (stacks == 1 && nframes < 14) { stack = stack (nframes ? " <- " : "") clean($0); nframes++ }
      next
    }
    /^SUMMARY:/ { flush(); inerr = 0 }
    END { flush() }
  ' "$f" >> "$blocks"
done

{
  echo "tunnel_ssh under AddressSanitizer: suites $* (exit $suite_rc, ${elapsed}s)"
  echo "logs: $log ($(ls "$log" | grep -c '^asan\.') sanitizer log files)"
  errors_all=$(awk -F'\t' '$1 !~ /-leak$/' "$blocks" | wc -l)
  errors_ours=$(awk -F'\t' '$1 !~ /-leak$/ && $2 == 1' "$blocks" | wc -l)
  leaks_all=$(awk -F'\t' '$1 ~ /-leak$/' "$blocks" | wc -l)
  leaks_ours=$(awk -F'\t' '$1 ~ /-leak$/ && $2 == 1' "$blocks" | wc -l)
  bytes_ours=$(awk -F'\t' '$1 ~ /-leak$/ && $2 == 1 { s += $3 } END { print s + 0 }' "$blocks")
  echo "AddressSanitizer errors: $errors_all (with a tunnel_ssh frame: $errors_ours)"
  echo "leak reports: $leaks_all (with a tunnel_ssh frame: $leaks_ours, $bytes_ours bytes; the others are PostgreSQL's and tools')"
  if [ $((errors_all + leaks_ours)) -gt 0 ]; then
    echo "distinct stacks (count, kind, bytes in total):"
    awk -F'\t' '$1 !~ /-leak$/ || $2 == 1 { n[$1 "\t" $5]++; b[$1 "\t" $5] += $3 }
      END { for (k in n) { split(k, p, "\t"); printf "%d x %s, %d bytes\n    %s\n", n[k], p[1], b[k], p[2] } }' "$blocks" |
      sed 's/ <- /\n      <- /g'
  fi
} > "$summary"
echo "=== sanitizer summary"
cat "$summary"
[ "$suite_rc" = 0 ] && [ "$errors_all" = 0 ] && [ "$leaks_ours" = 0 ]
