#!/usr/bin/env bash
# Root part of the isolation suite: a target that drops SYNs, and the relay
# binary.
#
#   root ns: 10.231.9.1 --veth-- tssh-dark ns: 10.231.9.2, forwarding on,
#            route 10.231.10.0/24 via 10.231.9.2     blackhole 10.231.10.0/24
#
# A connect to 10.231.10.5 from this machine (the bastion's sshd) sends SYNs
# into the namespace, which drops them without a word: what a stopped cloud
# instance or a security group that drops looks like.  Nothing leaves the
# machine.  "teardown" removes it all.
set -uo pipefail
action=${1:?setup or teardown} dir=${2:?work directory} user=${3:?user}
repo=$(cd "$(dirname "$0")/.." && pwd)

teardown() {
  ip route del 10.231.10.0/24 2>/dev/null
  ip link del tssh-k0 2>/dev/null
  ip netns del tssh-dark 2>/dev/null
  return 0
}

setup() {
  teardown
  ip netns add tssh-dark || return 1
  ip link add tssh-k0 type veth peer name tssh-k1 netns tssh-dark || return 1
  ip addr add 10.231.9.1/24 dev tssh-k0 && ip link set tssh-k0 up || return 1
  ip -n tssh-dark addr add 10.231.9.2/24 dev tssh-k1 || return 1
  ip -n tssh-dark link set tssh-k1 up && ip -n tssh-dark link set lo up || return 1
  ip netns exec tssh-dark sysctl -qw net.ipv4.ip_forward=1 || return 1
  ip -n tssh-dark route add blackhole 10.231.10.0/24 || return 1
  ip route add 10.231.10.0/24 via 10.231.9.2 || return 1

  # bench/latency_relay: a round trip on the SSH leg.
  gcc -O2 -Wall -o "$dir/latency_relay" "$repo/bench/latency_relay.c" || return 1
  chown "$user" "$dir/latency_relay"
}

"$action"
