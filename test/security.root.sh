#!/usr/bin/env bash
# Root part of the security suite: another OS user of the database host,
# tunnel_other, whose connection attempts the suite asks for, and
# directories of theirs ($dir/rootmade) that section 7 must refuse as socket
# directories.  "setup"
# creates the user and starts, as that user, a loop that serves the
# suite's requests in $dir/other (one "host port" line per request file,
# answered by psql's output and exit status); "teardown" stops the loop and
# removes the user.
set -uo pipefail
action=${1:?setup or teardown} dir=${2:?work directory} user=${3:?user}
other=tunnel_other

teardown() {
  local pid
  if [ -f "$dir/other/loop.pid" ]; then
    pid=$(cat "$dir/other/loop.pid")
    pkill -P "$pid" 2>/dev/null; kill "$pid" 2>/dev/null
    # userdel refuses a user whose processes are still exiting.
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/other/loop.pid"
  fi
  for _ in $(seq 1 50); do
    id "$other" >/dev/null 2>&1 || break
    userdel "$other" 2>/dev/null || sleep 0.1
  done
  return 0
}

setup() {
  teardown
  # Still there if a process of it outlived a run cut short: reused.
  id "$other" >/dev/null 2>&1 || useradd -M -d /nonexistent -s /bin/bash "$other" || return 1
  mkdir -p "$dir/other" && chmod 1777 "$dir/other"
  # other_owned: tunnel_other's; other_parent/sock: ours, in theirs.
  mkdir -p "$dir/rootmade/other_owned" "$dir/rootmade/other_parent/sock" || return 1
  chmod 755 "$dir/rootmade" "$dir/rootmade/other_owned" "$dir/rootmade/other_parent"
  chown "$other" "$dir/rootmade/other_owned" "$dir/rootmade/other_parent"
  chown "$user" "$dir/rootmade/other_parent/sock" && chmod 700 "$dir/rootmade/other_parent/sock"
  cat > "$dir/other/loop.sh" <<'L'
# As tunnel_other: for each request file req.N ("host port", written as
# tmp.N and renamed), try to log in and write the outcome to res.N.
cd "$1" || exit 1
while :; do
  for req in req.*; do
    [ -e "$req" ] || continue
    n=${req#req.}
    read -r host port < "$req"
    rm -f "$req"
    out=$(timeout 10 psql -X -h "$host" -p "$port" -d 'dbname=postgres connect_timeout=5' -Atc "SELECT 'connected as ' || current_user" 2>&1)
    printf '%s\nexit %s\n' "$out" "$?" > "res.$n.tmp" && mv "res.$n.tmp" "res.$n"
  done
  sleep 0.1
done
L
  chmod 755 "$dir/other/loop.sh"
  su "$other" -c "exec bash $dir/other/loop.sh $dir/other" </dev/null >/dev/null 2>&1 &
  echo $! > "$dir/other/loop.pid"
}

"$action"
