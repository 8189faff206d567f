# Sourced (as root) by test/run-tests.sh and bench/run.sh, from the
# repository's top directory: installs the Debian packages we need (and any
# passed as arguments), waits for its turn on this machine, builds and
# installs the module, and makes the unprivileged user that runs servers;
# in_own_network runs a script in a network namespace of its own.
# PostgreSQL is the one PG_CONFIG names, else the release's default
# (Debian's postgresql and postgresql-server-dev-all packages), the newest
# installed major.  Sets $user, and exports PG_CONFIG for the suites.
prepare_machine() {
  local need=(libssh2-1-dev libssl-dev openssh-server openssh-client procps
              iproute2 make gcc pkg-config gdb strace tinyproxy
              prometheus-postgres-exporter curl "$@")
  # postgres_exporter and curl: test/connections.sh runs
  # test/tunnel_ssh_exporter.yaml with it and scrapes it.
  # SOCKS5 for test/proxy.sh: dante, which Debian 13 dropped; microsocks there.
  if grep -q '^VERSION_CODENAME=trixie$' /etc/os-release; then need+=(microsocks); else need+=(dante-server); fi
  [ -n "${PG_CONFIG:-}" ] || need+=(postgresql postgresql-server-dev-all)
  local missing=() p
  for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    # Quiet apt takes a minute on a fresh machine: say so first, not after.
    echo "# installing ${#missing[@]} Debian packages with apt-get (first run only, about a minute; log in /tmp/tunnel_ssh_apt.log): ${missing[*]}"
    # A run cut short during an install leaves dpkg half-done.
    DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null 2>&1 || true
    # The packages' own services (a PostgreSQL cluster, sshd on port 22,
    # postgres_exporter on 9187) are not ours to start: the suites start
    # what they need on loopback and stop it.  policy-rc.d tells Debian's
    # maintainer scripts not to start them (on a machine that runs systemd).
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\n# tunnel_ssh test/prepare.sh: no service starts while it installs\nexit 101\n' > "$policy"
      chmod 755 "$policy"
    fi
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } > /tmp/tunnel_ssh_apt.log 2>&1; then
      [ -z "$policy" ] || rm -f "$policy"
      tail -n 30 /tmp/tunnel_ssh_apt.log
      return 1
    fi
    [ -z "$policy" ] || rm -f "$policy"
    echo "# installed"
  fi

  # One run at a time per machine: the module is installed system-wide and
  # the suites use fixed loopback ports.
  exec 9>/tmp/tunnel_ssh_tests.lock
  if ! flock -n 9; then
    echo "# waiting for another test run on this machine to finish (/tmp/tunnel_ssh_tests.lock)"
    flock 9
  fi

  if [ -z "${PG_CONFIG:-}" ]; then
    PG_CONFIG=$(ls -d /usr/lib/postgresql/*/bin/pg_config | sort -V | tail -n 1)
  fi
  export PG_CONFIG
  echo "# PostgreSQL $("$PG_CONFIG" --version | sed 's/^PostgreSQL //'), libssh2 $(pkg-config --modversion libssh2), $(ssh -V 2>&1 | cut -d, -f1), $(. /etc/os-release; echo "$PRETTY_NAME")"

  echo "# building and installing tunnel_ssh (make -j$(nproc), make install)"
  make -s clean >/dev/null 2>&1 || true
  make -s -j"$(nproc)"
  make -s install

  # Our servers listen on fixed ports in 50000-59999, inside the kernel's
  # ephemeral range: keep outgoing connections of anything else on this
  # machine off them while we run (restore_machine puts it back).
  reserved_ports=$(cat /proc/sys/net/ipv4/ip_local_reserved_ports)
  echo "${reserved_ports:+$reserved_ports,}50000-59999" > /proc/sys/net/ipv4/ip_local_reserved_ports

  user=tunnel_test
  if ! id "$user" >/dev/null 2>&1; then
    useradd -m -s /bin/bash "$user"
  fi
  mkdir -p /run/sshd
  # sshd with UsePAM no refuses a locked account; '*' unlocks without a password.
  usermod -p '*' "$user"
}

# At exit of whoever called prepare_machine.
restore_machine() {
  [ -n "${reserved_ports+set}" ] && echo "$reserved_ports" > /proc/sys/net/ipv4/ip_local_reserved_ports
  return 0
}

# in_own_network SCRIPT: runs SCRIPT (bash, as root) in a network namespace
# of its own with only a loopback, as every suite and make bench-dark do:
# the ports it picks are free whatever listens on this machine, nothing it
# starts can reach another address, and its set-up (routes, veth pairs)
# leaves the machine's own network untouched.  A new namespace starts with
# no reserved ports (prepare_machine's reservation is the machine's own), so
# the suites' fixed ports in 50000-59999 are reserved here again: otherwise
# an outgoing connection of an earlier section (a client, the worker, sshd)
# may take one as its source port, and a later listen() on it fails.
in_own_network() {
  unshare --net bash -c "trap : TERM INT HUP
ip link set lo up || exit 1
echo 50000-59999 > /proc/sys/net/ipv4/ip_local_reserved_ports || exit 1
$1"
}
