#!/usr/bin/env bash
# Root part of the proxy suite: dante's username method checks the system's
# passwords, so its danted runs as root and checks a system user of its
# own, tunnel_proxy, with a known password.  "setup" creates the user and
# starts that danted on 127.0.0.1:21081 (in the suite's network namespace),
# logging to $dir/proxy/dante_auth.log; "teardown" stops it (by its pid
# file) and removes the user.
set -uo pipefail
action=${1:?setup or teardown} dir=${2:?work directory} user=${3:?user}
proxy_user=tunnel_proxy proxy_password='Pw-7q3zK-dante'
pidfile=$dir/proxy/dante_auth.pid

teardown() {
  local pid
  if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile"
  fi
  id "$proxy_user" >/dev/null 2>&1 && userdel "$proxy_user" 2>/dev/null
  return 0
}

setup() {
  teardown
  # Debian 13 has no dante: the suite runs microsocks instead, unprivileged.
  command -v danted >/dev/null || return 0
  id "$proxy_user" >/dev/null 2>&1 || useradd -M -d /nonexistent -s /usr/sbin/nologin "$proxy_user" || return 1
  echo "$proxy_user:$proxy_password" | chpasswd || return 1
  mkdir -p "$dir/proxy" && chown "$user" "$dir/proxy"
  cat > "$dir/proxy/dante_auth.conf" <<C
logoutput: $dir/proxy/dante_auth.log
internal: 127.0.0.1 port = 21081
external: 127.0.0.1
clientmethod: none
socksmethod: username
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass {
	from: 127.0.0.0/8 to: 127.0.0.0/8
	socksmethod: username
	log: connect error
}
C
  danted -f "$dir/proxy/dante_auth.conf" -D -p "$pidfile" || return 1
  for _ in $(seq 1 50); do [ -s "$pidfile" ] && [ -f "$dir/proxy/dante_auth.log" ] && break; sleep 0.1; done
  chmod 644 "$dir/proxy/dante_auth.log"
  [ -s "$pidfile" ]
}

case $action in
  setup) setup ;;
  teardown) teardown ;;
  *) echo "usage: $0 setup|teardown DIR USER" >&2; exit 2 ;;
esac
