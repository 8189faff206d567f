#!/usr/bin/env bash
# The end-to-end suite (default: e2e) with the local server -- postmaster,
# backends and the tunnel_ssh worker -- under valgrind's memcheck, then a
# summary of what valgrind reported about our code.  As root on Debian 12,
# like test/run-tests.sh, which it runs.
#   bash test/valgrind.sh              (make valgrind)
#   bash test/valgrind.sh e2e topology
# Fails if the suite fails, or if valgrind reports an error or a definite
# leak with a frame in tunnel_ssh.  PostgreSQL leaves memory to process exit
# by design, and writes padding bytes it never set into WAL and statistics
# files; reports without a frame of ours are counted but not held against
# us.  The raw logs stay in $VALGRIND_DIR (printed).
#
# Why not AddressSanitizer: on this platform (glibc 2.36, kernel 6.x) any
# process with libasan preloaded and libp11-kit loaded (psql, postgres)
# hangs on a glibc lock at start or exit; valgrind has no such problem.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- e2e

if ! command -v valgrind >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind
fi

log=$(mktemp -d /tmp/tunnel_ssh_valgrind.XXXXXX)
chmod 1777 "$log"
export VALGRIND_DIR=$log
# pg_ctl -p runs this instead of postgres; the server's children are forks,
# so valgrind follows them without exec, one log file per process.
cat > "$log/postgres" <<W
#!/bin/sh
exec valgrind --quiet --leak-check=full --show-leak-kinds=definite \\
  --errors-for-leak-kinds=definite --num-callers=30 \\
  --log-file=$log/vg.%p $(${PG_CONFIG:-pg_config} --bindir)/postgres "\$@"
W
chmod 755 "$log/postgres"
export TUNNEL_SSH_POSTGRES=$log/postgres

start=$(date +%s)
# Here only: the chroots run without valgrind (test/platform.sh --valgrind
# runs this script in one).
PLATFORMS=native bash test/run-tests.sh "$@" 2>&1 | tee "$log/suite.out"
suite_rc=${PIPESTATUS[0]}
elapsed=$(( $(date +%s) - start ))

# --- summary: one record per report block ---
ours_re="tunnel_ssh\\.so|\\((($(cd src && ls *.c | sed 's/\.c$//' | paste -sd'|'))\\.c):"
blocks=$log/blocks.tsv
: > "$blocks"
for f in "$log"/vg.*; do
  [ -s "$f" ] || continue
  awk -v ours="$ours_re" -v file="$(basename "$f")" '
    function flush() {
      if (kind != "")
        printf "%s\t%d\t%d\t%s\t%s\n", kind, mine, bytes, file, stack
      kind = ""; stack = ""; mine = 0; bytes = 0; nframes = 0; frames = 0
    }
    # "==PID== Kind" heads a report, "==PID==    at/by 0x..: fn (file.c:N)"
    # are its frames, "==PID== " alone ends it.  Only the first stack (where
    # it happened, not where the block came from) is kept for the summary.
    # Ours: a report with a frame of ours among the innermost frames of a
    # stack: six for an error, eight for a leak (OpenSSL and libssh2 add a
    # few between malloc and us).  Deeper down we are only the caller: the
    # worker is the outermost frame of all PostgreSQL does in it (writing
    # its relcache init file, whose padding valgrind reports), and
    # tunnel_server_create of postgres_fdw validating its options (its
    # libpq option cache shows as lost).
    { sub(/^==[0-9]+==/, ""); line = $0; sub(/^ +/, "", line) }
    line == "" { flush(); next }
    line ~ /^(at|by) 0x/ {
      if (kind == "") next
      if (line ~ /^at /) { frames++; depth = 0 }
      depth++
      if (line ~ ours && depth <= (kind == "leak" ? 8 : 6)) mine = 1
      s = line; sub(/^(at|by) 0x[0-9A-Fa-f]+: /, "", s)
      if (frames == 1 && nframes < 10) { stack = stack (nframes ? " <- " : "") s; nframes++ }
      next
    }
    kind == "" && line ~ /definitely lost/ { kind = "leak"; bytes = $1; gsub(/,/, "", bytes); next }
    kind == "" && /^ [A-Z]/ && line !~ /^(HEAP SUMMARY|LEAK SUMMARY|For lists|For counts|Use --|ERROR SUMMARY|Warning:|Reachable|To see|Rerun)/ {
      kind = line; next
    }
    END { flush() }
' "$f" >> "$blocks"
done

summary=$log/summary.txt
{
  echo "tunnel_ssh under valgrind memcheck: suites $* (exit $suite_rc, ${elapsed}s)"
  echo "logs: $log ($(ls "$log" | grep -c '^vg\.') process logs)"
  errors_all=$(awk -F'\t' '$1 != "leak"' "$blocks" | wc -l)
  errors_ours=$(awk -F'\t' '$1 != "leak" && $2 == 1' "$blocks" | wc -l)
  leaks_all=$(awk -F'\t' '$1 == "leak"' "$blocks" | wc -l)
  leaks_ours=$(awk -F'\t' '$1 == "leak" && $2 == 1' "$blocks" | wc -l)
  bytes_ours=$(awk -F'\t' '$1 == "leak" && $2 == 1 { s += $3 } END { print s + 0 }' "$blocks")
  echo "memcheck errors: $errors_all (with a tunnel_ssh frame: $errors_ours)"
  echo "definite leaks: $leaks_all (with a tunnel_ssh frame: $leaks_ours, $bytes_ours bytes)"
  if [ $((errors_all + leaks_all)) -gt 0 ]; then
    echo "distinct reports (count x kind [ours]: stack):"
    awk -F'\t' '{ n[$1 "\t" $2 "\t" $5]++ }
      END { for (k in n) { split(k, p, "\t"); printf "%d x %s%s\n    %s\n", n[k], p[1], p[2] == 1 ? " [ours]" : "", p[3] } }' "$blocks" |
      sed 's/ <- /\n      <- /g' | head -200
  fi
} > "$summary"
echo "=== valgrind summary"
cat "$summary"
[ "$suite_rc" = 0 ] && [ "$errors_ours" = 0 ] && [ "$leaks_ours" = 0 ]
