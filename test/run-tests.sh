#!/usr/bin/env bash
# Run the tunnel_ssh test suite (or, with "demo", the demo) on a Debian 12
# machine, as root: installs what it needs, builds, installs, then runs the
# script as an unprivileged user (PostgreSQL refuses to run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

need=(postgresql-15 postgresql-server-dev-15 libssh2-1-dev
      libssl-dev openssh-server openssh-client procps make gcc pkg-config)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

make -s clean >/dev/null 2>&1 || true
make -s
make -s install

user=tunnel_test
if ! id "$user" >/dev/null 2>&1; then
  useradd -m -s /bin/bash "$user"
fi
mkdir -p /run/sshd
# sshd with UsePAM no refuses a locked account; '*' unlocks without a password.
usermod -p '*' "$user"

work=$(mktemp -d /tmp/tunnel_ssh_test.XXXXXX)
chown "$user" "$work"
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
script=${1:-e2e}
if [ "$script" = e2e ]; then
  # pg_regress: SQL behaviour, in a temporary instance with the module preloaded.
  mkdir -p "$work/regress"
  cp -r "$repo/Makefile" "$repo/tunnel_ssh.control" "$repo/sql" "$repo/expected" "$repo/test" "$work/regress/"
  chown -R "$user" "$work/regress"
  if ! su "$user" -c "cd $work/regress && make -s installcheck NO_PGXS_BUILD=1 REGRESS_OPTS='--inputdir=. --outputdir=results --temp-instance=$work/regress/tmp --temp-config=test/regress.conf --port=55499 --dbname=contrib_regression'"; then
    cat "$work/regress/results/regression.diffs" 2>/dev/null || true
    echo "0 passed, 1 failed"
    exit 1
  fi
fi
case "$script" in e2e|demo) ;; *) echo "usage: $0 [demo]" >&2; exit 2 ;; esac
cp "$repo/test/lib.sh" "$repo/test/$script.sh" "$work/"
su "$user" -c "bash $work/$script.sh $work"
