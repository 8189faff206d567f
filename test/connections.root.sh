#!/usr/bin/env bash
# Root part of the connections suite: another OS user of the database host,
# tunnel_peer, whose TCP connections through a tunnel the suite asks for
# (tunnel_connections() must not name their pid), and the postgres_exporter
# queries file, copied into the suite's directory (run-tests.sh copies only
# the suite and lib.sh).  "setup" creates the user and starts, as that user,
# a loop that serves the suite's requests in $dir/peer: a request file req.N
# holds "port role"; the loop connects psql to 127.0.0.1:port as that role
# and holds the connection until the suite creates stop.N, then writes
# psql's output and exit status to res.N.  "teardown" ends the connections,
# stops the loop and removes the user.
set -uo pipefail
action=${1:?setup or teardown} dir=${2:?work directory} user=${3:?user}
peer=tunnel_peer

teardown() {
  local pid n
  if [ -d "$dir/peer" ]; then
    # Each held connection ends when its stop file appears.
    for n in "$dir"/peer/started.*; do
      [ -e "$n" ] && touch "$dir/peer/stop.${n##*.}"
    done
  fi
  if [ -f "$dir/peer/loop.pid" ]; then
    pid=$(cat "$dir/peer/loop.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/peer/loop.pid"
  fi
  # What is left of the user's processes (a psql the loop started) ends on
  # its own once its stop file exists; those still there after 5 s are
  # stopped by pid.
  for _ in $(seq 1 50); do pgrep -u "$peer" >/dev/null 2>&1 || break; sleep 0.1; done
  pid=$(pgrep -u "$peer" 2>/dev/null)
  [ -n "$pid" ] && kill $pid 2>/dev/null
  for _ in $(seq 1 50); do
    id "$peer" >/dev/null 2>&1 || break
    userdel "$peer" 2>/dev/null || sleep 0.1
  done
  return 0
}

setup() {
  teardown
  cp "$(dirname "$0")/tunnel_ssh_exporter.yaml" "$dir/" && chown "$user" "$dir/tunnel_ssh_exporter.yaml" || return 1
  id "$peer" >/dev/null 2>&1 || useradd -M -d /nonexistent -s /bin/bash "$peer" || return 1
  mkdir -p "$dir/peer" && chmod 1777 "$dir/peer"
  cat > "$dir/peer/loop.sh" <<'L'
# As tunnel_peer: for each request file req.N ("port role", written as
# tmp.N and renamed), a psql connected through 127.0.0.1:port, held open
# (its input waits for stop.N) and at most 60 s; started.N says it runs
# (and that req.N was served).
cd "$1" || exit 1
while :; do
  for req in req.*; do
    [ -e "$req" ] || continue
    n=${req#req.}
    # The suite's file, which we cannot remove from this sticky directory:
    # each request is served once.
    [ -e "started.$n" ] && continue
    read -r port role < "$req"
    (
      until [ -e "stop.$n" ]; do sleep 0.1; done |
        timeout 60 psql -X -q -h 127.0.0.1 -p "$port" -U "$role" \
          -d "dbname=postgres application_name=conn_peer_$n connect_timeout=10" > "out.$n" 2>&1
      echo "exit $?" >> "out.$n"
      mv "out.$n" "res.$n"
    ) &
    touch "started.$n"
  done
  sleep 0.1
done
L
  chmod 755 "$dir/peer/loop.sh"
  su "$peer" -c "exec bash $dir/peer/loop.sh $dir/peer" </dev/null >/dev/null 2>&1 &
  echo $! > "$dir/peer/loop.pid"
}

"$action"
