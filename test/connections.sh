#!/usr/bin/env bash
# Who is using the tunnel (issue 29), with real parts: a real sshd bastion,
# a private PostgreSQL, dblink and postgres_fdw on the local server, psql
# over loopback TCP, and a TCP client of another OS user (tunnel_peer, made
# by test/connections.root.sh).
#   1. the settings: tunnel_ssh.log_connections off by default (reload),
#      max_tracked_connections 2000 (restart); with it off, no audit line
#   2. a dblink session on the Unix socket: its backend's pid, joined with
#      pg_stat_activity; bytes each way; its audit lines
#   3. a postgres_fdw query: the backend that ran it
#   4. psql over loopback TCP: psql's pid, address and port; the target's
#      backend terminated: closed_by=target
#   5. a TCP client of another OS user: no pid
#   6. channels not opened: prohibited (permitopen), connect_failed,
#      timeout (a target that never answers; the client waits meanwhile),
#      no_session (a dark bastion); each line with a DETAIL line; counted
#   7. the counters: per tunnel and per forward, reconnects and a failover,
#      kept across tunnel_disable, tunnel_stat_reset
#   8. privileges: pg_monitor reads, cannot reset; a plain role reads nothing
#   9. test/tunnel_ssh_exporter.yaml run by Debian's postgres_exporter
#  10. 100 connections open at once: every one listed with its pid; each
#      psql then ends (Terminate, close): each logged closed_by=client
#  11. max_tracked_connections (a restart): beyond it, connections are
#      served and counted but not listed; the counters start again at 0
# "# " lines print what was seen.  Prints "N passed, N failed" last.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
# Below the ephemeral range: servers 25432/25433, bastions 25222/25223,
# tunnels 25500-25539; each suite has a network namespace of its own.
LPORT=25432 PPORT=25433 SPORT=25222
SPORT2=25223        # bastion B (the failover of section 7)
DARK=25224          # a bastion that never answers (section 6)
HANG=25434          # a target that never answers (section 6)
CLOSED=25435        # a target where nothing listens (section 6)
EXPORTER=25190      # postgres_exporter (section 9)
TA=25501 TA2=25502 TCF=25503 THANG=25504 TDARK=25505 TFO=25506
CONNECT_TIMEOUT=3
LOCAL_CONF="tunnel_ssh.port_range = '25500-25539'
tunnel_ssh.connect_timeout = $CONNECT_TIMEOUT"
. "$(dirname "$0")/lib.sh"
harness_start
me=$(id -un)
suite_t0=$(now_ms)
export PGSSLMODE=disable

psql_priv() { psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -Atc "$1"; }
# psql as a given role, errors with their SQLSTATE ("ERROR:  42501: ...").
as_role() { psql -X -q -h "$dir" -p $LPORT -U "$1" -d postgres -v VERBOSITY=verbose -Atc "$2" 2>&1; }
conns() { lsql "SELECT count(*) FROM tunnel_connections() WHERE $1"; }
no_conns() { test "$(conns "$1")" = 0; }
has_conns() { test "$(conns "$1")" -ge "${2:-1}"; }
# The server log's audit lines (the message part), and whether one matches.
audit() { grep -oE 'tunnel (connection received|channel opened|channel not opened|disconnection): .*' local.log; }
audit_has() { audit | grep -qE -- "$1"; }
audit_count() { audit | grep -cE -- "${1:-.}"; }
bpid_of() { lsql "SELECT pid FROM pg_stat_activity WHERE application_name = '$1'"; }
# A session of that application_name on the private server: its
# connection through the tunnel is open.
remote_app() { test "$(psql_priv "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1'")" = 1; }

# Sessions kept open: psql reading a fifo that we hold open, so it stays
# connected until we close it.  $1 names it; its output goes to $1.out.
# A process started in the background must not hold the write end of
# another session's fifo (that session would never see its end): each
# psql starts with the others' closed, and no other background process is
# started while a session is open.
declare -A SFD SPID
session_open() {  # name conninfo
  local fd close=
  for fd in "${SFD[@]}"; do close+=" $fd>&-"; done
  mkfifo "$1.fifo"
  eval "psql -X -q -At \"\$2\" < \"\$1.fifo\" > \"\$1.out\" 2>&1 $close &"
  SPID[$1]=$!
  exec {fd}> "$1.fifo"
  SFD[$1]=$fd
}
session_sql() { echo "$2" >&"${SFD[$1]}"; }
session_close() { eval "exec ${SFD[$1]}>&-"; unset "SFD[$1]"; wait "${SPID[$1]}" 2>/dev/null; }
# The local port of a TCP connection to 127.0.0.1:$2 held by pid $1 (ss
# shows the processes of our own sockets only).
tcp_port_of() {
  ss -Htnp state established "( dport = :$2 )" | grep "pid=$1," |
    grep -oE '127\.0\.0\.1:[0-9]+ +127\.0\.0\.1:'"$2" | head -n 1 | sed -E 's/^127\.0\.0\.1:([0-9]+) .*/\1/'
}
# The same, for a socket whose process ss does not show (another user's).
tcp_ports_unowned() {
  ss -Htnp state established "( dport = :$1 )" | grep -v 'users:' |
    grep -oE '127\.0\.0\.1:[0-9]+ +127\.0\.0\.1:'"$1" | sed -E 's/^127\.0\.0\.1:([0-9]+) .*/\1/'
}

# A listener that completes no handshake: its accept queue (backlog 0) is
# filled by one connection of its own, so the kernel drops every further
# SYN, as a firewall that drops packets does.  Both the target that never
# answers and the dark bastion are such ports.
perl -MIO::Socket::INET -e '
  my @keep;
  for my $p (@ARGV) {
    my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $p, ReuseAddr => 1, Proto => "tcp")
      or die "bind $p: $!";
    CORE::listen($l, 0) or die "listen $p: $!";   # IO::Socket would make 0 5
    my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $p, Proto => "tcp")
      or die "fill $p: $!";
    push @keep, $l, $c;
  }
  open(my $f, ">", "blackhole.ready") and close($f);
  sleep 3600;' $HANG $DARK 2> blackhole.err &
extra_pids+=($!)
syn_dropped() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; test $? = 124; }
check "setup: the listeners on $HANG and $DARK are up" wait_for 5 test -e blackhole.ready ||
  sed 's/^/# /' blackhole.err
check "setup: ... and take no connection (SYNs dropped)" eval 'syn_dropped $HANG && syn_dropped $DARK'

psql_priv "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g" >/dev/null
lsql "CREATE EXTENSION tunnel_ssh; CREATE EXTENSION dblink; CREATE EXTENSION postgres_fdw;"
lsql "SELECT tunnel_create('a', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => $TA)" \
  >> sshd/authorized_keys
check "setup: tunnel a connects" wait_state a connected 20
check "setup: the extension is version 1.5" \
  test "$(lsql "SELECT extversion FROM pg_extension WHERE extname = 'tunnel_ssh'")" = 1.5
sockdir=$(lsql "SHOW data_directory")/tunnel_ssh
check "setup: a's Unix socket is $sockdir/.s.PGSQL.$TA" test -S "$sockdir/.s.PGSQL.$TA"

echo "# section 1 starts at $(since $suite_t0) s"
# --- 1. the settings; with log_connections off, no audit line ---
check "1. tunnel_ssh.log_connections: off by default, changed by reload" \
  test "$(lsql "SELECT setting || ' ' || context FROM pg_settings WHERE name = 'tunnel_ssh.log_connections'")" = "off sighup"
check "1. tunnel_ssh.max_tracked_connections: 2000 by default, changed at restart" \
  test "$(lsql "SELECT setting || ' ' || context FROM pg_settings WHERE name = 'tunnel_ssh.max_tracked_connections'")" = "2000 postmaster"
check "1. a query through a over TCP, log_connections off" query_ok $TA
lsql "SELECT dblink_connect('off', 'host=$sockdir port=$TA dbname=postgres user=$me');
      SELECT dblink_disconnect('off')" >/dev/null
# Once the worker has let both go, what it logs of them is in the log.
check "1. the worker lets both connections go" wait_for 10 no_conns "local_port = $TA"
check "1. with log_connections off, no audit line at all" test "$(audit_count)" = 0 ||
  audit | head -5 | sed 's/^/# /'

# On by ALTER SYSTEM and reload, as a DBA does: the postmaster says it
# changed; the worker, reloading too, logs the next connection.
n=$(grep -c 'parameter "tunnel_ssh.log_connections" changed' local.log)
lsql "ALTER SYSTEM SET tunnel_ssh.log_connections = on" && lsql "SELECT pg_reload_conf()" >/dev/null
check "1. log_connections on by reload" \
  wait_for 10 bash -c "[ \$(grep -c 'parameter \"tunnel_ssh.log_connections\" changed' local.log) -gt $n ]"
probe_logged() { query_ok $TA; audit_has "^tunnel connection received: tunnel=a "; }
check "1. with it on, the worker logs the next connection" wait_for 10 probe_logged
check "1. the worker lets the probes go" wait_for 10 no_conns "local_port = $TA"

echo "# section 2 starts at $(since $suite_t0) s"
# --- 2. a dblink session on the Unix socket ---
session_open dbl "host=$dir port=$LPORT dbname=postgres application_name=conn_dblink"
session_sql dbl "SELECT dblink_connect('t', 'host=$sockdir port=$TA dbname=postgres user=$me application_name=conn_dblink_remote');"
check "2. dblink is connected through a" wait_for 10 remote_app conn_dblink_remote
bpid=$(bpid_of conn_dblink)
check "2. tunnel_connections() lists one connection of that backend" test "$(conns "client_pid = $bpid")" = 1
row=$(lsql "SELECT concat_ws('|', tunnel, local_port, remote_host, remote_port, coalesce(client_addr::text, 'NULL'), client_port,
                              bastion, lane, state, opened_at <= now(), open_ms >= 0)
              FROM tunnel_connections() WHERE client_pid = $bpid")
echo "# dblink's row: $row"
check "2. its row: tunnel a, its port and target, no address, port -1 (a Unix socket), bastion, lane 0, open" \
  test "$row" = "a|$TA|127.0.0.1|$PPORT|NULL|-1|127.0.0.1:$SPORT|0|open|t|t"
joined=$(lsql "SELECT a.usename || '|' || a.application_name || '|' || a.backend_type
                 FROM tunnel_ssh.connections c JOIN pg_stat_activity a ON a.pid = c.client_pid
                WHERE c.local_port = $TA")
check "2. joined with pg_stat_activity: its user and application_name" \
  test "$joined" = "$me|conn_dblink|client backend" || echo "# joined: $joined"
# 200 kB from the target, then 300 kB to it.
session_sql dbl "SELECT length(x) FROM dblink('t', 'SELECT repeat(''x'', 200000)') AS r(x text);"
bytes_of() { lsql "SELECT $2 FROM tunnel_connections() WHERE client_pid = $1"; }
check "2. bytes_in (target to client) counts the 200 kB reply within a second or two" \
  wait_for 5 eval 'test "$(bytes_of $bpid bytes_in)" -ge 200000'
check "2. bytes_out (client to target) stays small meanwhile" test "$(bytes_of $bpid bytes_out)" -lt 100000
session_sql dbl "SELECT n FROM dblink('t', 'SELECT length(''$(head -c 300000 /dev/zero | tr '\0' y)'')') AS r(n int);"
check "2. bytes_out counts the 300 kB query" wait_for 5 eval 'test "$(bytes_of $bpid bytes_out)" -ge 300000'
check "2. bytes_in did not count it" test "$(bytes_of $bpid bytes_in)" -lt 300000
check "2. audit: connection received, the backend's pid, host=[local]" \
  audit_has "^tunnel connection received: tunnel=a local_port=$TA target=127\.0\.0\.1:$PPORT client_pid=$bpid host=\[local\]$"
check "2. audit: channel opened, bastion, lane 0, the open time in ms" \
  audit_has "^tunnel channel opened: tunnel=a target=127\.0\.0\.1:$PPORT client_pid=$bpid host=\[local\] bastion=127\.0\.0\.1:$SPORT lane=0 open_time=[0-9]+\.[0-9]{3} ms$"
session_sql dbl "SELECT dblink_disconnect('t');"
check "2. dblink_disconnect: the row goes" wait_for 10 no_conns "client_pid = $bpid"
check "2. audit: disconnection, closed by the client, with its session time and bytes" \
  wait_for 5 audit_has "^tunnel disconnection: session time: [0-9]+:[0-9]{2}:[0-9]{2}\.[0-9]{3} tunnel=a target=127\.0\.0\.1:$PPORT client_pid=$bpid host=\[local\] bytes_in=[0-9]{6,} bytes_out=[0-9]{6,} closed_by=client$"
line=$(audit | grep -E "^tunnel disconnection: .* client_pid=$bpid " | tail -n 1)
echo "# $line"
bin=$(sed -nE 's/.* bytes_in=([0-9]+) .*/\1/p' <<<"$line")
bout=$(sed -nE 's/.* bytes_out=([0-9]+) .*/\1/p' <<<"$line")
check "2. ... its bytes are the row's: in >= 200 kB, out >= 300 kB" \
  test "${bin:-0}" -ge 200000 -a "${bin:-0}" -lt 300000 -a "${bout:-0}" -ge 300000
session_close dbl

echo "# section 3 starts at $(since $suite_t0) s"
# --- 3. a postgres_fdw query ---
lsql "SELECT tunnel_server_create('srv_a', 'a', 'postgres');
      CREATE USER MAPPING FOR CURRENT_USER SERVER srv_a OPTIONS (user '$me');
      CREATE FOREIGN TABLE items_remote (id int, v text) SERVER srv_a OPTIONS (table_name 'items');" >/dev/null
check "3. the foreign server is the tunnel's Unix socket" \
  grep -q "host=$sockdir" <<<"$(lsql "SELECT array_to_string(srvoptions, ',') FROM pg_foreign_server WHERE srvname = 'srv_a'")"
session_open fdw "host=$dir port=$LPORT dbname=postgres application_name=conn_fdw"
session_sql fdw "SELECT count(*) FROM items_remote;"
ran() { test "$(lsql "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1' AND state = 'idle' AND query LIKE '$2%'")" = 1; }
check "3. the session ran the query" wait_for 10 ran conn_fdw 'SELECT count(*) FROM items_remote'
fpid=$(bpid_of conn_fdw)
# postgres_fdw keeps its connection for the session: the row stays.
check "3. tunnel_connections() lists the fdw backend's connection" has_conns "client_pid = $fpid"
joined=$(lsql "SELECT concat_ws('|', coalesce(c.client_addr::text, 'NULL'), c.client_port, c.state, a.application_name,
                                 a.query LIKE 'SELECT count(*) FROM items_remote%')
                 FROM tunnel_ssh.connections c JOIN pg_stat_activity a ON a.pid = c.client_pid
                WHERE c.local_port = $TA" | tr '\n' ' ')
echo "# fdw's row joined with pg_stat_activity: $joined"
check "3. joined: Unix socket, open, the session's application_name and last query" \
  test "$joined" = "NULL|-1|open|conn_fdw|t "
session_close fdw
check "3. the query ran through it" grep -qx 1000 fdw.out || sed 's/^/# /' fdw.out
check "3. the session ends: the row goes" wait_for 10 no_conns "client_pid = $fpid"
fdw_audit() {
  audit_has "^tunnel connection received: tunnel=a .* client_pid=$fpid host=\[local\]$" &&
    audit_has "^tunnel channel opened: tunnel=a .* client_pid=$fpid host=\[local\] bastion=" &&
    audit_has "^tunnel disconnection: .* client_pid=$fpid host=\[local\] bytes_in=[0-9]+ bytes_out=[0-9]+ closed_by=client$"
}
check "3. audit: received, opened and closed by the client, all with the backend's pid" wait_for 5 fdw_audit

echo "# section 4 starts at $(since $suite_t0) s"
# --- 4. psql over loopback TCP; the target's backend terminated ---
session_open tcp "host=127.0.0.1 port=$TA dbname=postgres application_name=conn_tcp"
ppid=${SPID[tcp]}
check "4. psql over TCP is connected through a" wait_for 10 remote_app conn_tcp
cport=$(tcp_port_of $ppid $TA)
echo "# psql (pid $ppid) is connected from 127.0.0.1:$cport"
row=$(lsql "SELECT concat_ws('|', client_pid, client_addr, client_port, state) FROM tunnel_connections() WHERE local_port = $TA")
echo "# its row: $row"
check "4. its row: psql's pid, 127.0.0.1 and psql's port (ss agrees), open" \
  test -n "$cport" -a "$row" = "$ppid|127.0.0.1|$cport|open"
# The worker does not walk /proc for a TCP client's pid (it would stall
# every tunnel): the audit names it by address and port.
check "4. audit: received from 127.0.0.1 and psql's port, client_pid=unknown" \
  audit_has "^tunnel connection received: tunnel=a local_port=$TA target=127\.0\.0\.1:$PPORT client_pid=unknown host=127\.0\.0\.1 port=$cport$"
psql_priv "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'conn_tcp'" >/dev/null
# psql waits on its input and does not read the socket: the worker holds
# what is left of the connection until psql closes it.
after=$(lsql "SELECT coalesce(string_agg(state, ','), 'gone') FROM tunnel_connections() WHERE local_port = $TA")
echo "# after the target's backend ended, the row is: $after"
session_close tcp
check "4. psql closed: the row goes" wait_for 10 no_conns "local_port = $TA"
check "4. audit: disconnection closed by the target" \
  wait_for 5 audit_has "^tunnel disconnection: session time: [0-9:.]+ tunnel=a target=127\.0\.0\.1:$PPORT client_pid=unknown host=127\.0\.0\.1 port=$cport bytes_in=[0-9]+ bytes_out=[0-9]+ closed_by=target$"

echo "# section 5 starts at $(since $suite_t0) s"
# --- 5. a TCP client of another OS user ---
if [ -f peer/loop.pid ]; then
  echo "$TA $me" > peer/tmp.1 && mv peer/tmp.1 peer/req.1
  check "5. tunnel_peer's psql is connected through a" wait_for 15 remote_app conn_peer_1 || cat peer/res.1 2>/dev/null | sed 's/^/# /'
  pport=$(tcp_ports_unowned $TA)
  row=$(lsql "SELECT concat_ws('|', coalesce(client_pid::text, 'NULL'), client_addr, client_port, state) FROM tunnel_connections() WHERE local_port = $TA")
  echo "# tunnel_peer's connection from 127.0.0.1:$pport, its row: $row"
  check "5. its row: no pid (another OS user's), 127.0.0.1, its port, open" \
    test -n "$pport" -a "$row" = "NULL|127.0.0.1|$pport|open"
  check "5. audit: received, client_pid=unknown" \
    audit_has "^tunnel connection received: tunnel=a local_port=$TA target=127\.0\.0\.1:$PPORT client_pid=unknown host=127\.0\.0\.1 port=$pport$"
  unknown_closed() { audit_count "^tunnel disconnection: .* tunnel=a .* client_pid=unknown host=127\.0\.0\.1 port=$pport bytes_in=[0-9]+ bytes_out=[0-9]+ closed_by=client$"; }
  n=$(unknown_closed)
  touch peer/stop.1
  check "5. tunnel_peer's psql ends: the row goes" wait_for 10 no_conns "local_port = $TA"
  check "5. audit: its disconnection, closed by the client, client_pid=unknown" \
    wait_for 5 eval 'test "$(unknown_closed)" -gt $n'
else
  skip "5. a TCP client of another OS user" "no test/connections.root.sh set-up (run by test/run-tests.sh as root)"
fi

echo "# section 6 starts at $(since $suite_t0) s"
# --- 6. channels not opened ---
# prohibited: a forward of a to a target its key's permitopen does not name
# ('localhost' is not '127.0.0.1' to sshd); the key line is not pasted again.
lsql "SELECT tunnel_forward_add('a', 'localhost', $PPORT, $TA2)" >/dev/null 2>&1
listening() { test "$(lsql "SELECT listening FROM tunnel_forward_status() WHERE local_port = $1")" = t; }
check "6. the forward to localhost:$PPORT listens" wait_for 10 listening $TA2
check "6. a client through it is refused" \
  bash -c "! psql -X -h 127.0.0.1 -p $TA2 -d 'dbname=postgres connect_timeout=10' -Atc 'SELECT 1' >/dev/null 2>&1"
check "6. audit: not opened, reason=prohibited" \
  wait_for 5 audit_has "^tunnel channel not opened: tunnel=a target=localhost:$PPORT client_pid=[0-9a-z]+ host=[^ ]+( port=[0-9]+)? reason=prohibited$"
# connect_failed: a tunnel to a permitted target where nothing listens.
lsql "SELECT tunnel_create('cf', '127.0.0.1', '127.0.0.1', $CLOSED, ssh_port => $SPORT, ssh_user => '$me', local_port => $TCF)" \
  >> sshd/authorized_keys
# timeout: a tunnel to a permitted target that never answers.
lsql "SELECT tunnel_create('hang', '127.0.0.1', '127.0.0.1', $HANG, ssh_port => $SPORT, ssh_user => '$me', local_port => $THANG)" \
  >> sshd/authorized_keys
# no_session: a tunnel whose bastion never answers.
lsql "SELECT tunnel_create('dark', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $DARK, ssh_user => '$me', local_port => $TDARK)" >/dev/null
check "6. tunnels cf and hang connect" eval 'wait_state cf connected 20 && wait_state hang connected 10'
check "6. a client through cf is refused" \
  bash -c "! psql -X -h 127.0.0.1 -p $TCF -d 'dbname=postgres connect_timeout=10' -Atc 'SELECT 1' >/dev/null 2>&1"
check "6. audit: not opened, reason=connect_failed" \
  wait_for 5 audit_has "^tunnel channel not opened: tunnel=cf target=127\.0\.0\.1:$CLOSED client_pid=[0-9a-z]+ host=[^ ]+( port=[0-9]+)? reason=connect_failed$"
t0=$(now_ms)
psql -X -h 127.0.0.1 -p $THANG -d 'dbname=postgres connect_timeout=20' -Atc 'SELECT 1' > hang.out 2>&1 &
hang_client=$!
# While the bastion tries the target, the client waits for its channel.
hang_row() {
  lsql "SELECT concat_ws('|', state, coalesce(bastion, 'NULL'), coalesce(lane::text, 'NULL'), coalesce(open_ms::text, 'NULL'))
          FROM tunnel_connections() WHERE tunnel = 'hang'"
}
check "6. the client of hang waits for its channel: state waiting, no bastion, lane nor open time" \
  wait_for 5 eval 'test "$(hang_row)" = "waiting|NULL|NULL|NULL"' || echo "# hang's row: $(hang_row)"
wait $hang_client
echo "# the client of hang was closed after $(since $t0) s (connect_timeout $CONNECT_TIMEOUT s)"
check "6. audit: not opened, reason=timeout" \
  wait_for 5 audit_has "^tunnel channel not opened: tunnel=hang target=127\.0\.0\.1:$HANG client_pid=[0-9a-z]+ host=[^ ]+( port=[0-9]+)? reason=timeout$"
check "6. tunnel dark never connects" test "$(state_of dark)" != connected
check "6. a client through dark is closed" \
  bash -c "! psql -X -h 127.0.0.1 -p $TDARK -d 'dbname=postgres connect_timeout=20' -Atc 'SELECT 1' >/dev/null 2>&1"
check "6. audit: not opened, reason=no_session" \
  wait_for 5 audit_has "^tunnel channel not opened: tunnel=dark target=127\.0\.0\.1:$PPORT client_pid=[0-9a-z]+ host=[^ ]+( port=[0-9]+)? reason=no_session$"
# Each "not opened" line is followed by a DETAIL line saying why.
details=$(grep -A1 -E 'tunnel channel not opened: ' local.log | grep -cE '^[^ ]+ [^ ]+ [^ ]+ \[[0-9]+\] DETAIL:  .')
grep -A1 -E 'tunnel channel not opened: ' local.log | grep -oE 'DETAIL: .*' | sort -u | sed 's/^/# /'
check "6. each of the $(audit_count '^tunnel channel not opened: ') lines not opened has a DETAIL line" \
  test "$details" = "$(audit_count '^tunnel channel not opened: ')"
fwd() { lsql "SELECT $2 FROM tunnel_ssh.stat_forwards WHERE local_port = $1"; }
check "6. counted: prohibited on a's forward $TA2" test "$(fwd $TA2 open_failures_prohibited)" -ge 1
check "6. counted: connect_failed on cf" test "$(fwd $TCF open_failures_connect_failed)" -ge 1
check "6. counted: timeout on hang" test "$(fwd $THANG open_failures_timeout)" -ge 1
check "6. counted: no_session on dark" test "$(fwd $TDARK open_failures_no_session)" -ge 1
check "6. a's own forward counted no failure" \
  test "$(fwd $TA "open_failures_prohibited + open_failures_connect_failed + open_failures_timeout + open_failures_no_session + open_failures_other")" = 0

echo "# section 7 starts at $(since $suite_t0) s"
# --- 7. the counters ---
made=$(audit_count "^tunnel connection received: tunnel=a local_port=$TA ")
row=$(lsql "SELECT connections || '|' || bytes_in || '|' || bytes_out FROM tunnel_ssh.stat_forwards WHERE local_port = $TA")
echo "# a's forward $TA: connections|bytes_in|bytes_out = $row; $made connections logged"
IFS='|' read -r c bi bo <<<"$row"
check "7. a's forward counted every connection logged on it, and the 2 made before logging" test "${c:-0}" -ge $((made + 2))
check "7. ... and the bytes each way (>= 200 kB in, >= 300 kB out)" test "${bi:-0}" -ge 200000 -a "${bo:-0}" -ge 300000
check "7. the per-tunnel rows have no connection counters, the per-forward rows no session counters" \
  test "$(lsql "SELECT count(*) FROM tunnel_stat()
                WHERE (local_port IS NULL AND connections + open_failures_prohibited + open_failures_connect_failed
                         + open_failures_timeout + open_failures_no_session + open_failures_other + bytes_in + bytes_out <> 0)
                   OR (local_port IS NOT NULL AND reconnects + failovers + seconds_connected <> 0)")" = 0
check "7. stat_tunnels: a's sums are its forwards'" \
  test "$(lsql "SELECT t.connections = f.c AND t.bytes_in = f.bi AND t.open_failures_prohibited = f.p
                FROM tunnel_ssh.stat_tunnels t,
                     (SELECT sum(connections) c, sum(bytes_in) bi, sum(open_failures_prohibited) p
                        FROM tunnel_ssh.stat_forwards WHERE tunnel = 'a') f WHERE t.tunnel = 'a'")" = t
check "7. a has been connected for some seconds, never lost" \
  test "$(lsql "SELECT seconds_connected > 1 AND reconnects = 0 FROM tunnel_ssh.stat_tunnels WHERE tunnel = 'a'")" = t

# Bastion B beside A; tunnel fo through A, then B.  A stopped with its
# sessions: fo fails over to B; a, once A is back, reconnects.
mkdir -p sshd2
sed -e "s/^Port .*/Port $SPORT2/" -e "s|^PidFile .*|PidFile $dir/sshd2/sshd.pid|" sshd/sshd_config > sshd2/sshd_config
/usr/sbin/sshd -f "$dir/sshd2/sshd_config" -E "$dir/sshd2/log"
lsql "SELECT tunnel_create('fo', '127.0.0.1:$SPORT, 127.0.0.1:$SPORT2', '127.0.0.1', $PPORT, ssh_user => '$me', local_port => $TFO)" \
  >> sshd/authorized_keys
check "7. tunnel fo connects" wait_state fo connected 20
serving() { lsql "SELECT position FROM tunnel_bastion_status() WHERE tunnel = '$1' AND state = 'serving'"; }
check "7. fo serves through A" test "$(serving fo)" = 1
kill_sshd
check "7. A stopped: fo serves through B" wait_for 20 eval 'test "$(serving fo)" = 2'
start_sshd
check "7. A back: a reconnects" wait_state a connected 20
tstat() { lsql "SELECT $2 FROM tunnel_ssh.stat_tunnels WHERE tunnel = '$1'"; }
check "7. a counted a reconnect" wait_for 5 eval 'test "$(tstat a reconnects)" -ge 1'
check "7. fo counted a failover" wait_for 5 eval 'test "$(tstat fo failovers)" -ge 1'
echo "# stat_tunnels: $(lsql "SELECT string_agg(tunnel || ' c=' || connections || ' rc=' || reconnects || ' fo=' || failovers || ' s=' || round(seconds_connected::numeric, 1), '; ' ORDER BY tunnel) FROM tunnel_ssh.stat_tunnels")"

# Kept across tunnel_disable.
lsql "SELECT tunnel_disable('cf')" >/dev/null
check "7. cf disabled: it stops listening" wait_for 10 eval '! port_open $TCF'
check "7. cf's counters are kept while it is disabled" test "$(fwd $TCF open_failures_connect_failed)" -ge 1

# tunnel_stat_reset: one tunnel, then all; an unknown name.
secs_a=$(lsql "SELECT seconds_connected FROM tunnel_ssh.stat_tunnels WHERE tunnel = 'a'")
t_reset=$(lsql "SELECT now()")
lsql "SELECT tunnel_stat_reset('a')" >/dev/null
check "7. tunnel_stat_reset('a') zeroes a's counters and sets stats_reset" \
  test "$(lsql "SELECT bool_and(connections = 0 AND bytes_in = 0 AND bytes_out = 0 AND reconnects = 0 AND failovers = 0
                  AND open_failures_prohibited + open_failures_connect_failed + open_failures_timeout
                      + open_failures_no_session + open_failures_other = 0
                  AND seconds_connected < $secs_a AND stats_reset >= '$t_reset')
                FROM tunnel_stat() WHERE tunnel = 'a'")" = t
check "7. ... and leaves the other tunnels' counters" test "$(fwd $THANG open_failures_timeout)" -ge 1
check "7. a's counters count again after the reset" query_ok $TA
check "7. ... one connection" wait_for 5 eval 'test "$(fwd $TA connections)" = 1'
out=$(as_role "$me" "SELECT tunnel_stat_reset('nope')")
echo "# tunnel_stat_reset('nope'): $(tr '\n' ' ' <<<"$out")"
check "7. tunnel_stat_reset of an unknown tunnel: ERROR 42704" grep -q 'ERROR:  42704' <<<"$out"
lsql "SELECT tunnel_stat_reset()" >/dev/null
check "7. tunnel_stat_reset() zeroes every tunnel" \
  test "$(lsql "SELECT count(*) FROM tunnel_stat() WHERE connections + bytes_in + bytes_out + reconnects + failovers
                 + open_failures_prohibited + open_failures_connect_failed + open_failures_timeout
                 + open_failures_no_session + open_failures_other <> 0")" = 0

echo "# section 8 starts at $(since $suite_t0) s"
# --- 8. privileges ---
lsql "CREATE ROLE plain LOGIN; CREATE ROLE mon LOGIN; GRANT pg_monitor TO mon;" >/dev/null
for v in tunnel_ssh.connections tunnel_ssh.stat_tunnels tunnel_ssh.stat_forwards "tunnel_connections()" "tunnel_stat()"; do
  out=$(as_role mon "SELECT count(*) FROM $v")
  check "8. mon (pg_monitor) reads $v" test "$out" = "$(lsql "SELECT count(*) FROM $v")" || echo "# $out"
  out=$(as_role plain "SELECT count(*) FROM $v")
  check "8. a plain role cannot read $v (42501)" grep -q "ERROR:  42501:" <<<"$out" || echo "# $out"
done
for r in mon plain; do
  out=$(as_role $r "SELECT tunnel_stat_reset()")
  check "8. $r cannot run tunnel_stat_reset() (42501)" grep -q "ERROR:  42501:" <<<"$out" || echo "# $out"
done

echo "# section 9 starts at $(since $suite_t0) s"
# --- 9. postgres_exporter runs test/tunnel_ssh_exporter.yaml ---
exporter=$(command -v prometheus-postgres-exporter)
# Its help read whole (grep -q ending the pipe early would fail it).
exporter_help=$([ -n "$exporter" ] && "$exporter" --help 2>&1)
if [ -z "$exporter" ]; then
  skip "9. postgres_exporter runs the queries file" "prometheus-postgres-exporter is not installed"
elif [ ! -f tunnel_ssh_exporter.yaml ]; then
  skip "9. postgres_exporter runs the queries file" "no test/connections.root.sh set-up (run by test/run-tests.sh as root)"
elif ! grep -q -- '--extend.query-path' <<<"$exporter_help"; then
  skip "9. postgres_exporter runs the queries file" "this exporter ($("$exporter" --version 2>&1 | head -n 1)) has no --extend.query-path"
else
  echo "# $("$exporter" --version 2>&1 | head -n 1)"
  DATA_SOURCE_NAME="postgresql://mon@127.0.0.1:$LPORT/postgres?sslmode=disable" \
    "$exporter" --web.listen-address=127.0.0.1:$EXPORTER --extend.query-path="$dir/tunnel_ssh_exporter.yaml" \
    --disable-default-metrics --disable-settings-metrics --log.level=info > exporter.log 2>&1 &
  exporter_pid=$!
  extra_pids+=($exporter_pid)
  # A connection held open through a, so that a's "open" series counts one.
  session_open held "host=127.0.0.1 port=$TA dbname=postgres application_name=conn_held"
  check "9. a connection held open through a" wait_for 10 has_conns "local_port = $TA AND state = 'open'"
  scrape() { curl -sf --max-time 10 "http://127.0.0.1:$EXPORTER/metrics" > metrics.txt 2>/dev/null && grep -q '^tunnel_ssh_' metrics.txt; }
  check "9. the exporter answers on 127.0.0.1:$EXPORTER with tunnel_ssh_* series" wait_for 15 scrape ||
    { sed 's/^/# exporter: /' exporter.log | tail -n 20; }
  # series METRIC LABEL...: the value of the first series of METRIC with
  # every LABEL (name="value"; the exporter adds its own "server").
  series() {
    local lines l
    lines=$(grep -E "^$1\{" metrics.txt); shift
    for l in "$@"; do lines=$(grep -F -- "$l" <<<"$lines"); done
    awk 'NR == 1 {print $NF}' <<<"$lines"
  }
  echo "# $(grep -c '^tunnel_ssh_' metrics.txt) tunnel_ssh_* series; for example: $(grep -m 3 '^tunnel_ssh_' metrics.txt | tr '\n' ' ')"
  check "9. tunnel_ssh_tunnel_up{tunnel=\"a\"} is 1" test "$(series tunnel_ssh_tunnel_up 'tunnel="a"')" = 1
  check "9. tunnel_ssh_tunnel_up{tunnel=\"dark\"} is 0" test "$(series tunnel_ssh_tunnel_up 'tunnel="dark"')" = 0
  check "9. tunnel_ssh_tunnel_connections_total{tunnel=\"a\"} counts the held connection" \
    test "$(series tunnel_ssh_tunnel_connections_total 'tunnel="a"')" -ge 1
  for m in open_failures_prohibited_total open_failures_connect_failed_total open_failures_timeout_total \
           open_failures_no_session_total open_failures_other_total reconnects_total failovers_total \
           received_bytes_total sent_bytes_total connected_seconds_total; do
    check "9. tunnel_ssh_tunnel_$m{tunnel=\"a\"} is there" test -n "$(series tunnel_ssh_tunnel_$m 'tunnel="a"')"
  done
  check "9. tunnel_ssh_forward_connections_total for a's port $TA, with its target" \
    test "$(series tunnel_ssh_forward_connections_total "local_port=\"$TA\"" "target=\"127.0.0.1:$PPORT\"" 'tunnel="a"')" -ge 1
  check "9. tunnel_ssh_forward_* for the forward $TA2 too" \
    test -n "$(series tunnel_ssh_forward_open_failures_prohibited_total "local_port=\"$TA2\"" "target=\"localhost:$PPORT\"" 'tunnel="a"')"
  check "9. tunnel_ssh_connections_count{state=\"open\",tunnel=\"a\"} is 1" \
    test "$(series tunnel_ssh_connections_count 'state="open"' 'tunnel="a"')" = 1
  check "9. tunnel_ssh_connections_count{state=\"waiting\",tunnel=\"dark\"} is there (0)" \
    test "$(series tunnel_ssh_connections_count 'state="waiting"' 'tunnel="dark"')" = 0
  check "9. tunnel_ssh_connections_oldest_seconds for a's open connection" \
    test -n "$(series tunnel_ssh_connections_oldest_seconds 'state="open"' 'tunnel="a"')"
  errs=$(grep -E '^pg_exporter_(user_queries_load_error|last_scrape_error)[{ ]' metrics.txt | awk '$NF != 0')
  check "9. the exporter loaded the file and scraped without error" \
    eval 'test -z "$errs" && grep -q "^pg_exporter_last_scrape_error 0" metrics.txt' || echo "# $errs"
  # It logs a query that failed at level info ("Error running query").
  errs=$(grep -iE 'error' exporter.log | grep -iE 'tunnel_ssh|queryNamespaceMappings')
  check "9. the exporter logged no error about the tunnel_ssh queries" test -z "$errs" || sed 's/^/# /' <<<"$errs" | head -5
  session_close held
  kill $exporter_pid 2>/dev/null; wait $exporter_pid 2>/dev/null
fi

echo "# section 10 starts at $(since $suite_t0) s"
# --- 10. 100 connections open at once ---
audit_before_many=$(audit | wc -l)
mkfifo many.fifo
exec 7<> many.fifo
many=()
for i in $(seq 1 100); do
  # Each without our write end (fd 7): closing it must end them all.
  psql -X -q -h 127.0.0.1 -p $TA -d "dbname=postgres application_name=conn_many" < many.fifo > /dev/null 2>&1 7>&- &
  many+=($!)
done
open_on() { conns "local_port = $1 AND state = 'open'"; }
check "10. 100 connections through a are open" wait_for 30 eval 'test "$(open_on $TA)" = 100'
pids=$(lsql "SELECT string_agg(client_pid::text, ' ' ORDER BY client_pid) FROM tunnel_connections() WHERE local_port = $TA")
many_ports=$(lsql "SELECT string_agg(client_port::text, '|') FROM tunnel_connections() WHERE local_port = $TA")
check "10. each is listed with its own psql's pid" \
  test "$pids" = "$(printf '%s\n' "${many[@]}" | sort -n | tr '\n' ' ' | sed 's/ $//')"
echo "# tunnel_connections() with 100 connections: $(lsql "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) SELECT * FROM tunnel_connections()" | grep -o 'Execution Time.*')"
echo "# lanes: $(lsql "SELECT string_agg(lane || ':' || n, ' ' ORDER BY lane) FROM (SELECT lane, count(*) n FROM tunnel_connections() WHERE local_port = $TA GROUP BY lane) l")"
# Each psql, at the end of its input, sends Terminate and closes its socket;
# the target's backend closes only once it has read that: the client
# closed each connection first.
exec 7>&-
wait "${many[@]}" 2>/dev/null
check "10. all 100 closed: no row left" wait_for 20 no_conns "local_port = $TA"
# Only this section's lines: an earlier client may have had one of the ports.
many_closed() { audit | tail -n +$((audit_before_many + 1)) | grep -E "^tunnel disconnection: .* client_pid=unknown host=127\.0\.0\.1 port=($many_ports) " | grep -oE 'closed_by=[a-z]+$'; }
check "10. ... 100 disconnections logged" wait_for 5 eval 'test "$(many_closed | wc -l)" = 100'
echo "# their closed_by: $(many_closed | sort | uniq -c | tr '\n' ' ')"
check "10. ... each closed_by=client" test "$(many_closed | grep -cvx closed_by=client)" = 0

echo "# section 11 starts at $(since $suite_t0) s"
# --- 11. max_tracked_connections: beyond it, forwarded and counted, not listed ---
lsql "ALTER SYSTEM SET tunnel_ssh.max_tracked_connections = 5" >/dev/null
$B/pg_ctl -D local -l local.log restart -m fast -w >/dev/null
check "11. restarted with max_tracked_connections 5" test "$(lsql "SHOW tunnel_ssh.max_tracked_connections")" = 5
check "11. a connects again" wait_state a connected 20
fwd_sum() { lsql "SELECT coalesce(sum($2), 0) FROM tunnel_ssh.stat_forwards WHERE local_port = $1"; }
check "11. the counters were lost at the restart" test "$(fwd_sum $TA connections)" = 0
mkfifo cap.fifo
exec 7<> cap.fifo
cap=()
for i in $(seq 1 8); do
  psql -X -q -h 127.0.0.1 -p $TA -d "dbname=postgres application_name=conn_cap" < cap.fifo > /dev/null 2>&1 7>&- &
  cap+=($!)
done
remote_count() { psql_priv "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1'"; }
check "11. 8 connections through a are served" wait_for 20 eval 'test "$(remote_count conn_cap)" = 8'
check "11. 5 of them are listed" test "$(conns "local_port = $TA")" = 5
check "11. all 8 are counted" test "$(fwd_sum $TA connections)" = 8
exec 7>&-
wait "${cap[@]}" 2>/dev/null
check "11. closed: none is listed" wait_for 10 no_conns "local_port = $TA"
check "11. ... and a new one is listed again" eval 'session_open one "host=127.0.0.1 port=$TA dbname=postgres application_name=conn_one" && wait_for 10 remote_app conn_one && test "$(conns "local_port = $TA")" = 1'
session_close one

echo "# suite ran $(since $suite_t0) s after the harness started"
suite_end
