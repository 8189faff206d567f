#!/usr/bin/env bash
# Build the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined)
# and run each for FUZZ_SECONDS (default 60; 0 only replays the corpus),
# then merge the new inputs that add coverage into corpus/<target>/
# (seed-* files are always kept).  Exits non-zero if any target crashed;
# the reproducer is left in test/fuzz/build/crash-<target>-*.
#   bash test/fuzz/run.sh                   all targets
#   FUZZ_SECONDS=300 bash test/fuzz/run.sh host private_key
set -uo pipefail
cd "$(dirname "$0")"
fuzz=$(pwd)
src=$(cd ../../src && pwd)
seconds=${FUZZ_SECONDS:-60}
max_corpus=${FUZZ_MAX_CORPUS:-199}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(host bastions user port_range fingerprint private_key)

declare -A max_len=([host]=300 [bastions]=600 [user]=80 [port_range]=32 [fingerprint]=80 [private_key]=12000)

if ! command -v clang >/dev/null || ! command -v pg_config >/dev/null ||
   ! pkg-config --exists libcrypto; then
  [ "$(id -u)" = 0 ] || { echo "need clang, postgresql-server-dev-15, libssl-dev (run as root to install)" >&2; exit 2; }
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    clang libclang-rt-dev postgresql-server-dev-15 libssl-dev pkg-config
fi
pg_config=${PG_CONFIG:-pg_config}
server=$($pg_config --includedir-server)

mkdir -p build
flags=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=all -Wall -Wno-ignored-attributes -Wno-unused-function)
build() {  # target
  local extra=()
  case $1 in
    fingerprint|private_key) extra=("$src/keys.c" "$fuzz/pg_stub.c" -I"$server") ;;
  esac
  clang "${flags[@]}" -I"$src" -o "build/fuzz_$1" "fuzz_$1.c" "$src/validate.c" \
    "${extra[@]}" $(pkg-config --cflags --libs libcrypto)
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${targets[@]}"; do
  [ -f "fuzz_$t.c" ] || { echo "no such target: $t" >&2; exit 2; }
  echo "=== fuzz_$t"
  build "$t" || { failed+=("$t(build)"); continue; }
  mkdir -p "corpus/$t"
  dict=(); [ -f "dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
  common=(-max_len="${max_len[$t]}" -timeout=10 -rss_limit_mb=2048
          -artifact_prefix="build/crash-$t-" "${dict[@]}")
  if [ "$seconds" = 0 ]; then
    # Replay the committed corpus once: a quick regression check.
    if ! "build/fuzz_$t" "${common[@]}" -runs=0 "corpus/$t" > "build/$t.log" 2>&1; then
      failed+=("$t"); tail -n 40 "build/$t.log"
    fi
    echo "# $t: replayed $(ls "corpus/$t" | wc -l) inputs"
    continue
  fi
  rm -rf "build/new-$t" "build/merged-$t"
  mkdir -p "build/new-$t" "build/merged-$t"
  start=$(date +%s)
  if ! "build/fuzz_$t" "${common[@]}" -max_total_time="$seconds" -print_final_stats=1 \
       "build/new-$t" "corpus/$t" > "build/$t.log" 2>&1; then
    failed+=("$t")
    echo "# $t: CRASH after $(( $(date +%s) - start ))s; reproducer: $(ls build/crash-$t-* 2>/dev/null | tail -n 1)"
    grep -E -A 30 '^==[0-9]+==ERROR|runtime error|FUZZ_CHECK failed|ereport\(' "build/$t.log" | head -n 50
    continue
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "build/$t.log")
  cov=$(grep -E '^#[0-9]+[[:space:]]+DONE' "build/$t.log" | grep -oE 'cov: [0-9]+ ft: [0-9]+' | tail -n 1)
  # Keep the seeds, add what covers more, drop the rest.
  cp corpus/$t/seed-* "build/merged-$t/" 2>/dev/null
  "build/fuzz_$t" "${common[@]}" -merge=1 "build/merged-$t" "corpus/$t" "build/new-$t" \
    > "build/$t.merge.log" 2>&1 || { failed+=("$t(merge)"); continue; }
  count=$(ls "build/merged-$t" | wc -l)
  if [ "$count" -le "$max_corpus" ]; then
    find "corpus/$t" -type f ! -name 'seed-*' -delete
    cp -n "build/merged-$t"/* "corpus/$t/"
  else
    echo "# $t: merged corpus has $count files (> $max_corpus), corpus left as it was"
  fi
  echo "# $t: ${seconds}s, $execs runs, $cov, new inputs $(ls "build/new-$t" | wc -l), corpus $(ls "corpus/$t" | wc -l) files"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: no crash in ${targets[*]}"
