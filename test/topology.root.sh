#!/usr/bin/env bash
# Root part of the topology suite: a private network that the local server
# cannot reach, behind two bastions, made of network namespaces.
#
#   local server (root ns) --10.231.1.0/24-- b1: sshd (jump host)
#                                            b1 --10.231.2.0/24-- b2: sshd, PostgreSQL on b2's own 127.0.0.1
#
# b1 does not route, so b2 is reachable only through b1's sshd.  The servers
# run as the unprivileged user; "teardown" stops them and removes it all.
set -uo pipefail
action=${1:?setup or teardown} dir=${2:?work directory} user=${3:?user}
B=$(${PG_CONFIG:-pg_config} --bindir)
as_user() { local ns=$1; shift; ip netns exec "$ns" su "$user" -c "$*"; }

sshd_config() {  # name address
  mkdir -p "$dir/$1"
  ssh-keygen -q -t ed25519 -N '' -f "$dir/$1/host_key"
  touch "$dir/$1/authorized_keys"; chmod 600 "$dir/$1/authorized_keys"
  cat > "$dir/$1/sshd_config" <<C
ListenAddress $2:2222
HostKey $dir/$1/host_key
PidFile $dir/$1/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile $dir/$1/authorized_keys
StrictModes no
AllowTcpForwarding yes
LogLevel VERBOSE
C
  chown -R "$user" "$dir/$1"
}

teardown() {
  for b in b1 b2; do
    [ -f "$dir/$b/sshd.pid" ] && { pkill -P "$(cat "$dir/$b/sshd.pid")"; kill "$(cat "$dir/$b/sshd.pid")"; } 2>/dev/null
  done
  [ -d "$dir/b2pg" ] && ip netns exec tssh-b2 su "$user" -c "$B/pg_ctl -D $dir/b2pg stop -m immediate" >/dev/null 2>&1
  ip route del unreachable 10.231.2.0/24 2>/dev/null
  ip link del tssh-r0 2>/dev/null
  ip netns del tssh-b1 2>/dev/null
  ip netns del tssh-b2 2>/dev/null
  return 0
}

setup() {
  teardown
  ip netns add tssh-b1 && ip netns add tssh-b2 || return 1
  ip link add tssh-r0 type veth peer name tssh-b1a netns tssh-b1 || return 1
  ip link add tssh-b1b netns tssh-b1 type veth peer name tssh-b2a netns tssh-b2 || return 1
  ip addr add 10.231.1.1/24 dev tssh-r0 && ip link set tssh-r0 up
  # Without this, packets for b2 would follow the default route off the
  # machine; now connecting to it fails here, at once.
  ip route add unreachable 10.231.2.0/24
  ip -n tssh-b1 addr add 10.231.1.2/24 dev tssh-b1a
  ip -n tssh-b1 addr add 10.231.2.1/24 dev tssh-b1b
  ip -n tssh-b2 addr add 10.231.2.2/24 dev tssh-b2a
  for l in tssh-b1a tssh-b1b lo; do ip -n tssh-b1 link set "$l" up; done
  for l in tssh-b2a lo; do ip -n tssh-b2 link set "$l" up; done
  ip netns exec tssh-b1 sysctl -qw net.ipv4.ip_forward=0

  sshd_config b1 10.231.1.2
  sshd_config b2 10.231.2.2
  as_user tssh-b1 "/usr/sbin/sshd -f $dir/b1/sshd_config -E $dir/b1/log" || return 1
  as_user tssh-b2 "/usr/sbin/sshd -f $dir/b2/sshd_config -E $dir/b2/log" || return 1

  # The private database, on b2's own loopback: only b2's sshd reaches it.
  su "$user" -c "$B/initdb -D $dir/b2pg -A trust >/dev/null" || return 1
  cat >> "$dir/b2pg/postgresql.conf" <<C
port = 5432
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/b2pg'
C
  as_user tssh-b2 "$B/pg_ctl -D $dir/b2pg -l $dir/b2pg.log start -w >/dev/null" || return 1
  as_user tssh-b2 "psql -X -q -h 127.0.0.1 -p 5432 -d postgres -c \"CREATE TABLE behind_b2 AS SELECT 'reached b2' AS marker, g FROM generate_series(1, 1000) g\"" || return 1
}

"$action"
