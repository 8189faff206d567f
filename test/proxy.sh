#!/usr/bin/env bash
# An outbound proxy for the first hop, against real proxies from Debian:
# dante (SOCKS5: no authentication, and username/password checked against
# a system user made by test/proxy.root.sh), tinyproxy (HTTP CONNECT: open,
# and with BasicAuth), and a port where nothing listens.  Through each, a
# tunnel to the suite's sshd connects and a query runs through it, and the
# proxy's own log (and the socket table) shows the connection went through
# it; wrong credentials, a proxy that is down, a bastion the proxy cannot
# reach each give their own words in last_error, the log and tunnel_test;
# tunnel_alter adds and removes a proxy on a live tunnel; the credentials
# are nowhere a non-superuser reads, nor in the log.  All on 127.0.0.1.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
LOCAL_CONF="tunnel_ssh.connect_timeout = 3"
. "$(dirname "$0")/lib.sh"
harness_start
me=$(id -un)
D1=21080 D2=21081 T1=28888 T2=28889 DOWN=21099 FREE=$((SPORT + 7))
DPASS='Pw-7q3zK-dante' TPASS='Pw-9xR2m-tiny'
mkdir -p proxy

# dante without authentication, tinyproxy open and with BasicAuth: ours,
# unprivileged.  The dante with username/password is proxy.root.sh's.
# Debian 13 dropped dante: there microsocks serves SOCKS5, both with and
# without username/password (it logs nothing: ss shows what it holds).
if command -v danted >/dev/null; then SOCKS=danted; else SOCKS=microsocks; fi
echo "# SOCKS5 server: $SOCKS"
if [ $SOCKS = microsocks ]; then
  microsocks -i 127.0.0.1 -p $D1 >/dev/null 2>&1 & extra_pids+=($!)
  microsocks -i 127.0.0.1 -p $D2 -u tunnel_proxy -P "$DPASS" >/dev/null 2>&1 & extra_pids+=($!)
else
cat > proxy/dante.conf <<C
logoutput: $dir/proxy/dante.log
internal: 127.0.0.1 port = $D1
external: 127.0.0.1
clientmethod: none
socksmethod: none
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 log: connect error }
C
danted -f "$dir/proxy/dante.conf" -D -p "$dir/proxy/dante.pid"
wait_for 5 test -s proxy/dante.pid
extra_pids+=($(cat proxy/dante.pid))
fi
for n in 1 2; do
  port=$T1; [ $n = 2 ] && port=$T2
  cat > proxy/tiny$n.conf <<C
Port $port
Listen 127.0.0.1
Allow 127.0.0.1
ConnectPort $SPORT
ConnectPort $FREE
PidFile "$dir/proxy/tiny$n.pid"
LogFile "$dir/proxy/tiny$n.log"
LogLevel Connect
Timeout 10
C
  [ $n = 2 ] && echo "BasicAuth tunnel_proxy $TPASS" >> proxy/tiny$n.conf
  tinyproxy -c "$dir/proxy/tiny$n.conf"
done
pidof_file() { cat "$dir/proxy/$1.pid" 2>/dev/null; }
wait_for 5 test -s proxy/tiny1.pid; wait_for 5 test -s proxy/tiny2.pid
extra_pids+=($(pidof_file tiny1) $(pidof_file tiny2))
check "setup: the four proxies listen, nothing on the down port" \
  eval "wait_for 5 port_open $D1 && wait_for 5 port_open $D2 && wait_for 5 port_open $T1 && wait_for 5 port_open $T2 && ! port_open $DOWN"

# --- a 1.3 catalog: the new module runs it, then the update adds proxy ---
lsql "CREATE EXTENSION tunnel_ssh VERSION '1.3'"
create() {  # name proxy-sql-expression [more arguments]
  lsql "SELECT tunnel_create('$1', '${HOST:-127.0.0.1}', '127.0.0.1', $PPORT, ssh_port => ${SSHPORT:-$SPORT}, ssh_user => '$me'${2:+, proxy => $2}${3:+, $3})"
}
create old "" "local_port => 54400" >> sshd/authorized_keys
check "a 1.3 catalog (no proxy column) still runs: its tunnel connects" wait_state old connected 15
lsql "ALTER EXTENSION tunnel_ssh UPDATE TO '1.4'"
check "after the update to 1.4 the tunnel stays connected" wait_state old connected 10

# --- validation: clear errors, nothing changed, no credential quoted ---
err() { lsql "$1" 2>&1 >/dev/null; }
e=$(err "SELECT tunnel_create('bad', '127.0.0.1', '127.0.0.1', proxy => 'ftp://u:SeCrEt1@127.0.0.1:1080')")
check "an unknown scheme is refused, naming the schemes, quoting no credential" \
  eval 'grep -q "invalid proxy URL" <<<"$e" && grep -q "socks5://, socks5h:// or http://" <<<"$e" && ! grep -q SeCrEt1 <<<"$e"'
e=$(err "SELECT tunnel_create('bad', '127.0.0.1', '127.0.0.1', proxy => 'socks5://u:SeCrEt1@127.0.0.1')")
check "a URL without port is refused" eval 'grep -q "must end in host:port" <<<"$e" && ! grep -q SeCrEt1 <<<"$e"'
e=$(err "SELECT tunnel_create('bad', '127.0.0.1', '127.0.0.1', proxy => 'http://u:SeCrEt1@127.0.0.1:99999')")
check "a port out of range is refused" eval 'grep -q "from 1 to 65535" <<<"$e" && ! grep -q SeCrEt1 <<<"$e"'
e=$(err "SELECT tunnel_create('bad', '127.0.0.1', '127.0.0.1', proxy => 'socks5://127.0.0.1:1080/path')")
check "a path is refused" grep -q "no path" <<<"$e"
e=$(err "SELECT tunnel_create('bad', '127.0.0.1', '127.0.0.1', proxy => 'socks5://nopass@127.0.0.1:1080')")
check "credentials without a password are refused" grep -q "user:password@" <<<"$e"
check "no tunnel was made by the refused calls" test "$(lsql "SELECT count(*) FROM tunnel_ssh.tunnel WHERE name = 'bad'")" = 0
e=$(err "SELECT tunnel_create('inner', '127.0.0.2', '127.0.0.1', via => 'old', proxy => 'socks5://127.0.0.1:$D1')")
check "a proxy with via is refused: the jump tunnel carries the first hop" \
  eval 'grep -q "a tunnel with via cannot have a proxy" <<<"$e" && grep -q "Give the proxy to tunnel \"old\"" <<<"$e"'
e=$(err "SELECT tunnel_alter('old', proxy => 'socks5h://u:SeCrEt1@127.0.0.1:0')")
check "tunnel_alter refuses a bad URL and changes nothing" \
  eval 'grep -q "invalid proxy URL" <<<"$e" && test -z "$(lsql "SELECT proxy FROM tunnel_ssh.tunnel WHERE name = '"'old'"'")"'

# --- through each proxy: connects, a query runs, the proxy carried it ---
# Does a process of that name (one of ours: ss names only those) hold a
# connection to the bastion?
bastion_conns_of() { ss -tnpH state established "( dport = :$SPORT )" 2>/dev/null | grep -q "((\"$1\","; }
bastion_conns_count() { ss -tnpH state established "( dport = :$SPORT )" 2>/dev/null | grep -c "((\"$1\","; }
through() {  # name url local_port log-file log-pattern proxy-pid-or-empty
  local name=$1 url=$2 port=$3 log=$4 pat=$5 pid=$6 rows
  create "$name" "'$url'" "local_port => $port" >> sshd/authorized_keys
  check "$name: connects through $(sed 's#//[^@]*@#//#' <<<"$url")" wait_state "$name" connected 15 || return
  check "$name: a query runs through the tunnel" query_ok "$port"
  if [ -n "$log" ]; then
    check "$name: the proxy's log shows the connection to the bastion" wait_for 5 grep -qE "$pat" "$log" ||
      tail -n 3 "$log" | sed 's/^/# /'
  fi
  # dante logs the port it connects from: the bastion saw that connection.
  if [[ $log == *dante* ]]; then
    local from
    from=$(grep -oE -- "-> 127\.0\.0\.1\.[0-9]+ 127\.0\.0\.1\.$SPORT" "$log" | tail -n 1 | cut -d' ' -f2)
    check "$name: sshd logged the connection from the proxy's port (${from##*.})" \
      grep -q "Connection from 127.0.0.1 port ${from##*.} " sshd/log
  fi
  [ -n "$pid" ] && check "$name: the bastion's connection is the proxy's (ss: held by $pid)" bastion_conns_of "$pid"
  rows=$(lsql "SELECT string_agg(step || '=' || ok, ' ') FROM tunnel_test('$name')")
  echo "# tunnel_test('$name'): $rows"
  check "$name: tunnel_test shows a proxy row between tcp_connect and ssh_handshake" \
    grep -q "tcp_connect=true proxy=true ssh_handshake=true authenticate=true" <<<"$rows"
}
if [ $SOCKS = danted ]; then
  through s5 "socks5://127.0.0.1:$D1" 54401 proxy/dante.log "127\.0\.0\.1\.$SPORT" danted
  HOST=localhost through s5h "socks5h://tunnel_proxy:$DPASS@127.0.0.1:$D2" 54402 proxy/dante_auth.log "username%tunnel_proxy@127\.0\.0\.1\.[0-9]+ 127\.0\.0\.1\.$D2 -> .*127\.0\.0\.1\.$SPORT" ""
else
  through s5 "socks5://127.0.0.1:$D1" 54401 "" "" microsocks
  # microsocks resolves "localhost" to ::1 first, where sshd does not listen.
  through s5h "socks5h://tunnel_proxy:$DPASS@127.0.0.1:$D2" 54402 "" "" microsocks
fi
through http "http://127.0.0.1:$T1" 54403 proxy/tiny1.log "CONNECT 127\.0\.0\.1:$SPORT" tinyproxy
through httpauth "http://tunnel_proxy:$TPASS@127.0.0.1:$T2" 54404 proxy/tiny2.log "CONNECT 127\.0\.0\.1:$SPORT" tinyproxy
# socks5:// resolves locally: dante is asked for the address, not the name.
HOST=localhost create s5local "'socks5://127.0.0.1:$D1'" "local_port => 54405" >> sshd/authorized_keys
check "socks5:// resolves the bastion's name here and sends the address" \
  eval 'wait_state s5local connected 15 && test "$(lsql "SELECT detail FROM tunnel_test('"'s5local'"') WHERE step = '"'resolve'"'")" = "localhost is 127.0.0.1; proxy 127.0.0.1 is 127.0.0.1"'

# --- failures: the same words in last_error, the log and tunnel_test ---
log_says() {  # name message: the worker's LOG line, its words in the DETAIL
  grep -A1 -F "tunnel \"$1\": could not connect to bastion" local.log | grep -qF "DETAIL:  $2"
}
has_error() { test -n "$(error_of "$1")"; }
fails() {  # name proxy-url expected-message tunnel_test-step [bastion port]
  local name=$1 url=$2 want=$3 step=$4 got row
  SSHPORT=${5:-$SPORT} create "$name" "'$url'" >> sshd/authorized_keys
  # Until the worker's first attempt has failed (asked again at each poll).
  wait_for 15 has_error "$name"
  got=$(error_of "$name")
  # A want of "~ERE" matches a pattern (proxies' versions word some replies differently).
  if [[ $want == "~"* ]]; then
    want=${want#\~}
    [[ $got =~ ^$want$ ]] && want=$got
  fi
  check "$name: last_error is \"$want\"" test "$got" = "$want" || echo "# got: $got"
  check "$name: the log says it" wait_for 5 log_says "$name" "$want"
  row=$(lsql "SELECT step || '=' || ok || ': ' || detail FROM tunnel_test('$name') WHERE NOT ok")
  check "$name: tunnel_test's $step row says it" grep -qF "$step=false: $want" <<<"$row" || echo "# got: $row"
}
fails wrongs5 "socks5h://tunnel_proxy:wrong-pw@127.0.0.1:$D2" "proxy 127.0.0.1:$D2 refused the credentials" proxy
fails nocreds5 "socks5://127.0.0.1:$D2" "proxy 127.0.0.1:$D2 requires a username and password (SOCKS5 method 255): give them in the proxy URL" proxy
fails wronghttp "http://tunnel_proxy:wrong-pw@127.0.0.1:$T2" "~proxy 127\.0\.0\.1:$T2 refused the credentials \(HTTP/1\.0 (401 Unauthorized|407 Proxy Authentication Required)\)" proxy
fails down "socks5://127.0.0.1:$DOWN" "could not connect to proxy 127.0.0.1:$DOWN: Connection refused" tcp_connect
fails unreach5 "socks5://127.0.0.1:$D1" "proxy 127.0.0.1:$D1 refused the connection to 127.0.0.1:$FREE: connection refused (SOCKS5 reply 5)" proxy $FREE
fails unreachhttp "http://127.0.0.1:$T1" "proxy 127.0.0.1:$T1 refused the connection to 127.0.0.1:$FREE: HTTP/1.1 500 Unable to connect" proxy $FREE

# --- tunnel_alter on a live tunnel: the proxy comes, and goes ---
tiny_connects() { grep -c "CONNECT 127\.0\.0\.1:$SPORT" proxy/tiny1.log; }
before=$(tiny_connects)
lsql "SELECT tunnel_alter('old', proxy => 'http://127.0.0.1:$T1')"
# One wait for all three: the state read before the worker acted on the
# change may still be the old session's "connected".
through_tiny() {
  test "$(tiny_connects)" -gt "$before" && bastion_conns_of tinyproxy &&
    test "$(lsql "SELECT state FROM tunnel_status() WHERE name = 'old'")" = connected
}
check "tunnel_alter adds a proxy: the live tunnel reconnects through it" wait_for 20 through_tiny ||
  echo "# CONNECTs $(tiny_connects) (before: $before), state $(lsql "SELECT state || ': ' || coalesce(last_error, '') FROM tunnel_status() WHERE name = 'old'"), tinyproxy's connections to the bastion: $(bastion_conns_count tinyproxy)"
check "the tunnel works through the proxy it was given" query_ok 54400
check "the tunnel's row shows the proxy" test "$(lsql "SELECT proxy FROM tunnel_ssh.tunnel WHERE name = 'old'")" = "http://127.0.0.1:$T1"
lsql "SELECT tunnel_alter('old', ssh_user => '$me')"
check "tunnel_alter without proxy keeps it" test "$(lsql "SELECT proxy FROM tunnel_ssh.secret WHERE tunnel = 'old'")" = "http://127.0.0.1:$T1"
n_tiny=$(bastion_conns_count tinyproxy)
lsql "SELECT tunnel_alter('old', proxy => '')"
# Counted again at each poll: tinyproxy holds one connection fewer once the
# worker has closed the session through it.
fewer_tiny() { test "$(bastion_conns_count tinyproxy)" -lt "$n_tiny"; }
check "tunnel_alter(proxy => '') removes it: the tunnel reconnects directly" \
  eval 'wait_for 15 fewer_tiny && wait_state old connected 15 && query_ok 54400'
check "no proxy left in the catalog" test "$(lsql "SELECT count(proxy) FROM tunnel_ssh.secret WHERE tunnel = 'old'")/$(lsql "SELECT count(proxy) FROM tunnel_ssh.tunnel WHERE name = 'old'")" = 0/0

# A statement with a proxy password that fails for another reason: the error
# says why, and log_min_error_statement does not put the statement in the log.
e=$(err "SELECT tunnel_create('old', '127.0.0.1', '127.0.0.1', proxy => 'http://u:SeCrEt2@127.0.0.1:$T1')")
check "tunnel_create with a proxy password and a taken name: its own error" grep -q 'tunnel "old" already exists' <<<"$e"
e=$(err "SELECT tunnel_alter('old', remote_port => 0, proxy => 'socks5://u:SeCrEt3@127.0.0.1:$D1')")
check "tunnel_alter with a proxy password and a bad port: its own error" grep -q 'remote_port' <<<"$e"
check "neither statement is in the server log" eval '! grep -qE "SeCrEt2|SeCrEt3" local.log'
check "the tunnel kept its proxy-less row" test "$(lsql "SELECT count(proxy) FROM tunnel_ssh.secret WHERE tunnel = 'old'")" = 0

# --- the credentials: nowhere a non-superuser reads, nowhere in the log ---
lsql "CREATE ROLE watcher LOGIN; GRANT pg_monitor TO watcher"
wsql() { psql -X -q -h "$dir" -p $LPORT -d postgres -U watcher -Atc "$1" 2>&1; }
seen=$(wsql "SELECT * FROM tunnel_status(); SELECT * FROM tunnel_ssh.tunnels; SELECT * FROM tunnel_ssh.status")
check "pg_monitor sees the proxies without credentials" \
  eval 'grep -qF "socks5h://127.0.0.1:$D2" <<<"$seen" && grep -qF "http://127.0.0.1:$T2" <<<"$seen"'
check "tunnel_status() names the proxy, without credentials" \
  test "$(wsql "SELECT proxy FROM tunnel_status() WHERE name = 'httpauth'")" = "http://127.0.0.1:$T2"
check "pg_monitor sees no password in status or views" eval '! grep -qE "$DPASS|$TPASS|wrong-pw" <<<"$seen"'
check "pg_monitor cannot read tunnel_ssh.secret" grep -q "permission denied" <<<"$(wsql "SELECT proxy FROM tunnel_ssh.secret")"
check "pg_monitor cannot read tunnel_ssh.tunnel either" grep -q "permission denied" <<<"$(wsql "SELECT proxy FROM tunnel_ssh.tunnel")"
check "the stored URL keeps the credentials (for the worker)" \
  test "$(lsql "SELECT proxy FROM tunnel_ssh.secret WHERE tunnel = 'httpauth'")" = "http://tunnel_proxy:$TPASS@127.0.0.1:$T2"
check "no password in the server log" eval '! grep -qE "$DPASS|$TPASS|wrong-pw|SeCrEt[0-9]" local.log'
check "no password in any last_error" eval '! lsql "SELECT last_error FROM tunnel_status()" | grep -qE "$DPASS|$TPASS|wrong-pw"'

suite_end
