#!/usr/bin/env bash
# Run test suites on another Debian release, in a chroot that this script
# builds with debootstrap from the package archive apt already uses (as root).
#   bash test/platform.sh trixie             regress and every suite there
#   bash test/platform.sh forky e2e day2     only these
#   bash test/platform.sh trixie --bench     the benchmark (bench/run.sh)
#   bash test/platform.sh trixie --valgrind day2   suites under valgrind
# trixie is Debian 13 (PostgreSQL 17, libssh2 1.11, OpenSSH 10.0), forky is
# Debian testing (PostgreSQL 18, OpenSSH 10.6).  Inside, test/run-tests.sh
# runs as it does on Debian 12: it installs that release's packages itself.
#
# The chroot is kept in $TUNNEL_SSH_CHROOTS (default /var/cache/tunnel_ssh)
# and reused while its base is whole; TUNNEL_SSH_FRESH_CHROOT=1 rebuilds it.
# Servers in the chroot share this machine's loopback, so the run holds the
# same machine-wide lock as test/run-tests.sh.
set -euo pipefail
release=${1:?usage: platform.sh RELEASE [suite ...]}
shift
cd "$(dirname "$0")/.."
repo=$(pwd)

top=${TUNNEL_SSH_CHROOTS:-/var/cache/tunnel_ssh}
root=$top/$release
mkdir -p "$top"

if ! command -v debootstrap >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
fi

# The archive apt uses here (deb822 or one-line sources).
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || { echo "platform.sh: no Debian archive found in apt's sources" >&2; exit 2; }

mounted=()
unmount_all() {
  local i
  # Anything the suites left running inside is stopped before unmounting.
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -l "${mounted[$i]}" 2>/dev/null || true
  done
  mounted=()
}

# Wait for our turn first: another run may be using the chroot.  Only then
# may our clean-up touch it: a run stopped while it waits must leave the
# chroot, and whatever runs in it, alone.
exec 8>/tmp/tunnel_ssh_tests.lock
flock 8
trap unmount_all EXIT

# A run killed before its clean-up leaves its mounts (/dev among them):
# take them down before anything here is removed or mounted again.
awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r |
  while read -r m; do umount -l "$m" || true; done
if awk -v r="$root" '$2 == r || index($2, r "/") == 1 { f = 1 } END { exit !f }' /proc/mounts; then
  echo "platform.sh: $root still has mounts; not touching it" >&2
  exit 1
fi

if [ -n "${TUNNEL_SSH_FRESH_CHROOT:-}" ] || [ ! -f "$root/.tunnel_ssh_base" ]; then
  rm -rf --one-file-system "$root"
  echo "== debootstrap $release from $mirror"
  start=$(date +%s)
  # Debian 12's debootstrap has no script for releases named after it;
  # unstable's serves them.
  script=/usr/share/debootstrap/scripts/$release
  [ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid
  debootstrap --variant=minbase --include=ca-certificates "$release" "$root" "$mirror" "$script" \
    > "$top/$release.debootstrap.log" 2>&1 \
    || { tail -n 30 "$top/$release.debootstrap.log"; exit 1; }
  # The archive's Release file of testing can be past its Valid-Until.
  cp /etc/apt/apt.conf.d/99* "$root/etc/apt/apt.conf.d/" 2>/dev/null || true
  echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99tunnel-ssh-valid-until"
  touch "$root/.tunnel_ssh_base"
  echo "== $release base ready in $(( $(date +%s) - start )) s"
fi

# ip netns needs the chroot's root to be a mount point (mount --make-rslave).
mount --bind "$root" "$root"; mounted+=("$root")
mount -t proc proc "$root/proc"; mounted+=("$root/proc")
mount -t sysfs sys "$root/sys"; mounted+=("$root/sys")
mount --bind /dev "$root/dev"; mounted+=("$root/dev")
mount --bind /dev/pts "$root/dev/pts"; mounted+=("$root/dev/pts")
mkdir -p "$root/run/netns" "$root/tmp"
chmod 1777 "$root/tmp"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

# A copy of the work tree (no build products), so the chroot's build cannot
# disturb this one.
rm -rf "$root/build"
mkdir -p "$root/build/tunnel_ssh"
tar -C "$repo" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --exclude=./results --exclude=./bench/results -cf - . | tar -C "$root/build/tunnel_ssh" -xf -

# --bench: the benchmark instead of test suites (bench/run.sh); its results
# file comes back to this tree's bench/results.
# --valgrind: the suites under valgrind (test/valgrind.sh).
command=test/run-tests.sh
if [ "${1:-}" = --bench ]; then
  shift
  command=bench/run.sh
elif [ "${1:-}" = --valgrind ]; then
  shift
  command=test/valgrind.sh
fi
mapfile -t bench_env < <(env | grep -E '^BENCH_[A-Z_]+=' | grep -v '^BENCH_PLATFORM=' || true)
echo "== $release: bash $command $*"
start=$(date +%s)
rc=0
chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 TERM=dumb ${CI:+CI=$CI} TUNNEL_SSH_PLATFORM="$release" \
  "${bench_env[@]}" \
  bash -c 'cd /build/tunnel_ssh && bash "$0" "$@"' "$command" "$@" || rc=$?
if [ "$command" = bench/run.sh ] && [ -d "$root/build/tunnel_ssh/bench/results" ]; then
  mkdir -p "$repo/bench/results"
  cp -n "$root/build/tunnel_ssh/bench/results/"* "$repo/bench/results/" 2>/dev/null || true
fi
echo "== $release finished in $(( $(date +%s) - start )) s, exit $rc"
exit $rc
