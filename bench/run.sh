#!/usr/bin/env bash
# The benchmark (make bench), as root on Debian 12: installs what it needs,
# builds and installs the module, then runs bench/bench.sh as the
# unprivileged user.  Results go to bench/results/, named by time and
# Debian release.  BENCH_PLATFORM=trixie (make bench BENCH_PLATFORM=...)
# runs it in that release's chroot instead (test/platform.sh).
#   BENCH_ROUNDS=5 BENCH_SECONDS=5 (defaults); BENCH_QUICK=1 for a short run;
#   BENCH_WORKLOADS="copy_out copy_in" for some workloads only ("" for the
#   scale part alone); BENCH_CIPHER=chacha20-poly1305@openssh.com for the
#   worker's tunnel_ssh.ciphers (ssh -L uses what it negotiates).
# "bash bench/run.sh dark" (make bench-dark) runs bench/dark.sh instead: a
# target that drops SYNs beside a healthy one, tunnel_ssh against ssh -L,
# in a network namespace of its own (results named <stamp>-<release>-dark).
# "bash bench/run.sh connections" (make bench-connections) runs syscalls_c1
# and the connections part only: BENCH_CONNECTIONS (500) clients held on one
# tunnel, tunnel_connections()'s time and the worker's memory (results named
# <stamp>-<release>-connections); BENCH_CONNECTIONS=0 leaves that part out
# of a full run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

part=${1:-}
case "$part" in ""|dark|connections) ;; *) echo "usage: bench/run.sh [dark|connections]" >&2; exit 2 ;; esac
if [ -n "${BENCH_PLATFORM:-}" ] && [ -z "${TUNNEL_SSH_PLATFORM:-}" ]; then
  exec bash test/platform.sh "$BENCH_PLATFORM" --bench $part
fi

. test/prepare.sh
prepare_machine openssl strace

work=$(mktemp -d /tmp/tunnel_ssh_bench.XXXXXX)
trap 'rm -rf "$work"; restore_machine' EXIT
chown "$user" "$work"
chmod 755 "$work"
gcc -O2 -Wall -o "$work/latency_relay" bench/latency_relay.c
cp test/lib.sh bench/bench.sh bench/dark.sh "$work/"
chown -R "$user" "$work"
mkdir -p bench/results
stamp=$(date -u +%Y%m%d-%H%M%S)-$(. /etc/os-release; echo "${VERSION_CODENAME:-$ID}")
if [ "$part" = dark ]; then
  # The dark target is a route into a namespace that drops SYNs
  # (test/isolation.root.sh); made inside a network namespace of our own, it
  # leaves the machine's routing table untouched and nothing leaves it.
  in_own_network "bash test/isolation.root.sh setup $work $user || exit 1
rc=0
su $user -c 'bash ${BENCH_TRACE:+-x} $work/dark.sh $work' || rc=1
bash test/isolation.root.sh teardown $work $user
exit \$rc"
  cp "$work/results.csv" "bench/results/$stamp-dark.csv"
  cp "$work/summary.md" "bench/results/$stamp-dark.md"
  echo "results: bench/results/$stamp-dark.md"
  exit 0
fi
suffix=${part:+-$part}
su "$user" -c "BENCH_PART='$part' BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-} BENCH_CIPHER='${BENCH_CIPHER:-}' BENCH_ROUNDS=${BENCH_ROUNDS:-} BENCH_SECONDS=${BENCH_SECONDS:-} BENCH_QUICK=${BENCH_QUICK:-} ${BENCH_WORKLOADS+BENCH_WORKLOADS='$BENCH_WORKLOADS'} bash ${BENCH_TRACE:+-x} $work/bench.sh $work"
cp "$work/results.csv" "bench/results/$stamp$suffix.csv"
cp "$work/summary.md" "bench/results/$stamp$suffix.md"
echo "results: bench/results/$stamp$suffix.csv (every sample), bench/results/$stamp$suffix.md (summary)"
