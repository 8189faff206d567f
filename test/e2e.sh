#!/usr/bin/env bash
# End-to-end tests with real parts: a local PostgreSQL with tunnel_ssh
# preloaded, a real sshd as bastion and a second PostgreSQL as the private
# database, all on 127.0.0.1, run as an unprivileged user.  Every process
# started here is stopped on exit.  Prints "N passed, N failed" last.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
# debug1: the worker says at start whether it computes AES-CTR in bulk
# (bulk_keystream is off by default; on here, where it exists, to test it).
LOCAL_CONF="log_min_messages = debug1
tunnel_ssh.bulk_keystream = on"
. "$(dirname "$0")/lib.sh"
harness_start
# A stock bastion has Ed25519, ECDSA and RSA host keys: the one recorded
# must be the one "ssh" shows (ssh-ed25519), host_key.pub here.
kill_sshd
ssh-keygen -q -t ecdsa -N '' -f sshd/host_key_ecdsa
ssh-keygen -q -t rsa -b 3072 -N '' -f sshd/host_key_rsa
sed -i "s#^HostKey .*#&\nHostKey $dir/sshd/host_key_ecdsa\nHostKey $dir/sshd/host_key_rsa#" sshd/sshd_config
# LogLevel DEBUG1: sshd logs each channel request (the worker's keepalive)
# and the cipher each session negotiates.
sed -i 's/^LogLevel .*/LogLevel DEBUG1/' sshd/sshd_config
start_sshd
psql_priv() { psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -v ON_ERROR_STOP=1 -Atc "$1"; }
more_than() { [ "$("${@:2}")" -gt "$1" ]; }   # N cmd...: cmd prints more than N
psql_priv "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g;
   CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, 200000) g;" >/dev/null
$B/pgbench -i -s 2 -q -h 127.0.0.1 -p $PPORT postgres >/dev/null 2>&1
# Every comparison below is against these tables: an empty or missing one
# would make two empty streams "equal".
check "setup: the private database's tables are built (items 100000, big 200000, pgbench_accounts 200000 rows)" \
  test "$(psql_priv "SELECT (SELECT count(*) FROM items) || ' ' || (SELECT count(*) FROM big) || ' ' || (SELECT count(*) FROM pgbench_accounts)" 2>&1)" = "100000 200000 200000"

lsql "CREATE EXTENSION tunnel_ssh; CREATE EXTENSION postgres_fdw; CREATE EXTENSION dblink;"

# --- keys and catalog ---
line=$(lsql "SELECT tunnel_create('main', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$(id -un)', local_port => 54321)")
echo "$line" > main.pub
check "tunnel_create returns one authorized_keys line, restricted to the target, no listen, with a forced command" \
  grep -qE "^restrict,port-forwarding,permitopen=\"127.0.0.1:$PPORT\",permitlisten=\"NONE:1\",command=\"[^\"]+\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]+=* tunnel_ssh:main\$" main.pub
check "restricted => false gives the bare line" \
  grep -qE '^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]+=* tunnel_ssh:main$' <<<"$(lsql "SELECT tunnel_public_key('main', restricted => false)")"
check "ssh-keygen fingerprint of the line equals the catalog's" \
  test "$(ssh-keygen -l -f main.pub | awk '{print $2}')" = "$(lsql "SELECT key_fingerprint FROM tunnel_ssh.tunnels WHERE name = 'main'")"
check "tunnel_public_key returns the same line" test "$(lsql "SELECT tunnel_public_key('main')")" = "$line"
check "tunnels view has no private key column" \
  test "$(lsql "SELECT count(*) FROM information_schema.columns WHERE table_name = 'tunnels' AND column_name ~ 'private'")" = 0
for kt in ecdsa rsa; do
  l=$(lsql "SELECT tunnel_create('k_$kt', '127.0.0.1', '127.0.0.1', ssh_port => 9, key_type => '$kt')" 2>/dev/null)
  echo "$l" > "k_$kt.pub"
  check "$kt key line matches its fingerprint" \
    test "$(ssh-keygen -l -f "k_$kt.pub" | awk '{print $2}')" = "$(lsql "SELECT key_fingerprint FROM tunnel_ssh.tunnels WHERE name = 'k_$kt'")"
  lsql "SELECT tunnel_drop('k_$kt')" >/dev/null
done

# --- bad input: clear error, nothing changed ---
before=$(lsql "SELECT count(*) FROM tunnel_ssh.tunnel")
# arguments | the error that names what is wrong with them
bad_inputs=(
  "NULL, '127.0.0.1', 'db'|tunnel name must not be null"
  "'', '127.0.0.1', 'db'|invalid tunnel name \"\""
  "'a b', '127.0.0.1', 'db'|invalid tunnel name \"a b\""
  "'main', '127.0.0.1', 'db'|tunnel \"main\" already exists"
  "'x', '999.1.1.1', 'db'|invalid ssh_host \"999.1.1.1\""
  "'x', '127.0.0.1', 'bad_host!'|invalid remote_host \"bad_host!\""
  "'x', '127.0.0.1', 'db', remote_port => 70000|invalid remote_port: 70000"
  "'x', '127.0.0.1', 'db', local_port => 54321|local port 54321 is already used by tunnel \"main\""
  "'x', '127.0.0.1', 'db', local_port => 80|invalid local_port: 80"
  "'x', '127.0.0.1', 'db', key_type => 'dsa'|unknown key_type \"dsa\""
  "'x', '127.0.0.1', 'db', host_key_fingerprint => 'SHA256:nope'|invalid host_key_fingerprint \"SHA256:nope\""
)
for b in "${bad_inputs[@]}"; do
  err=$(lsql "SELECT tunnel_create(${b%%|*})" 2>&1 >/dev/null)
  check "bad input refused: tunnel_create(${b%%|*}): ${b#*|}" grep -qxF "ERROR:  ${b#*|}" <<<"$err" ||
    echo "# got: $err"
done
check "bad input changed nothing" test "$(lsql "SELECT count(*) FROM tunnel_ssh.tunnel")" = "$before"
lsql "CREATE ROLE plain LOGIN" >/dev/null
err=$(psql -X -q -h "$dir" -p $LPORT -U plain -d postgres -Atc "SELECT tunnel_public_key('main')" 2>&1)
check "non-superuser cannot read keys" grep -q "permission denied" <<<"$err"
err=$(psql -X -q -h "$dir" -p $LPORT -U plain -d postgres -Atc "SELECT * FROM tunnel_ssh.secret" 2>&1)
check "non-superuser cannot read the secret table" grep -q "permission denied" <<<"$err"

# --- the worker ---
check "unknown key: state auth_failed" wait_state main auth_failed 10
check "auth_failed message says what to do" \
  grep -q "authorized_keys" <<<"$(lsql "SELECT last_error FROM tunnel_status() WHERE name = 'main'")"
cat main.pub >> sshd/authorized_keys
check "key added on the bastion: connected without any SQL" wait_state main connected 15
check "recorded host key is the bastion's Ed25519 key, the one ssh shows" test \
  "$(lsql "SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'main'")" = "$(ssh-keygen -l -f sshd/host_key.pub | awk '{print $2}')"
check "its algorithm is recorded with it" \
  test "$(lsql "SELECT host_key_algorithms FROM tunnel_ssh.tunnel WHERE name = 'main'")" = ssh-ed25519
methods=$(lsql "SELECT kex || ' ' || host_key_algorithm || ' ' || cipher || ' ' || mac FROM tunnel_status() WHERE name = 'main'")
echo "# negotiated (libssh2 $(pkg-config --modversion libssh2)): $methods"
if libssh2_11; then
  check "libssh2 1.11: AES-GCM negotiated, its MAC implicit" \
    test "$methods" = "curve25519-sha256 ssh-ed25519 aes128-gcm@openssh.com <implicit>"
else
  check "libssh2 1.10: AES-CTR with HMAC-SHA2-256 negotiated" \
    test "$methods" = "curve25519-sha256 ssh-ed25519 aes128-ctr hmac-sha2-256"
fi

# --- the restricted line against sshd ---
# Keepalive works with it: the worker's probe is an "env" request on a
# session channel it keeps open, which sshd (LogLevel DEBUG1) logs, and
# answers (a refusal is an answer).  main is the only session on this sshd
# now.  Four probes at keepalive_interval 2 s span more than the 6 s
# (interval x keepalive_count 3) after which a session whose probes went
# unanswered is declared dead: still connected on the same session means
# they were answered.  No probe at all fails the wait, whatever the state.
env_requests() { grep -c "server_input_channel_req: channel [0-9]* request env reply 1" sshd/log; }
attempts=$(attempts_of main) env0=$(env_requests)
t0=$(now_ms)
check "restricted line: the idle session is probed (4 keepalive requests logged by sshd within 15 s)" \
  wait_for 15 more_than $((env0 + 3)) env_requests
echo "# $(( $(env_requests) - env0 )) keepalive requests in $(since $t0) s"
check "... answered: still connected on the same session" \
  test "$(lsql "SELECT state || ' ' || connect_attempts FROM tunnel_status() WHERE name = 'main'")" = "connected $attempts"
check "restricted line: tunnel_test passes every step" \
  test "$(lsql "SELECT bool_and(ok) FROM tunnel_test('main')")" = t

# --- tunnel_ssh.ciphers changed by reload: new sessions and tunnel_test
# negotiate the new list, the established session keeps its cipher ---
kex_cipher() { grep -c "kex: client->server cipher: $1 " sshd/log; }
cipher_of() { lsql "SELECT cipher FROM tunnel_status() WHERE name = '$1'"; }
# The postmaster logs the change, then signals the worker.
set_ciphers() {  # value, or DEFAULT
  local n
  n=$(grep -c 'parameter "tunnel_ssh.ciphers"' local.log)
  if [ "$1" = DEFAULT ]; then lsql "ALTER SYSTEM RESET tunnel_ssh.ciphers"
  else lsql "ALTER SYSTEM SET tunnel_ssh.ciphers = '$1'"; fi
  lsql "SELECT pg_reload_conf()" >/dev/null
  wait_for 10 more_than "$n" grep -c 'parameter "tunnel_ssh.ciphers"' local.log
}
# Ends main's session on the bastion (the only one there): the worker logs in again.
new_session_of_main() {
  local a
  a=$(attempts_of main)
  kill $(pgrep -P "$(cat sshd/sshd.pid)") 2>/dev/null
  wait_for 15 sql_is "SELECT state = 'connected' AND connect_attempts > $a FROM tunnel_status() WHERE name = 'main'" t
}
sql_is() { test "$(lsql "$1")" = "$2"; }
c0=$(cipher_of main) attempts=$(attempts_of main) n256=$(kex_cipher aes256-ctr)
check "tunnel_ssh.ciphers = 'aes256-ctr' by ALTER SYSTEM and reload" set_ciphers aes256-ctr
r=$(lsql "SELECT bool_and(ok) FROM tunnel_test('main')")
check "... tunnel_test negotiates it (sshd logs aes256-ctr) and passes" \
  bash -c '[ "$1" = t ] && [ "$2" -gt "$3" ]' _ "$r" "$(kex_cipher aes256-ctr)" "$n256"
check "... the established session is kept, with its cipher ($c0)" \
  test "$(lsql "SELECT state || ' ' || connect_attempts || ' ' || cipher FROM tunnel_status() WHERE name = 'main'")" = "connected $attempts $c0"
n256=$(kex_cipher aes256-ctr)
check "... a new session of the tunnel logs in" new_session_of_main
check "... and negotiates aes256-ctr, which tunnel_status() shows and sshd logs" \
  bash -c '[ "$1" = aes256-ctr ] && [ "$2" -gt "$3" ]' _ "$(cipher_of main)" "$(kex_cipher aes256-ctr)" "$n256"
check "tunnel_ssh.ciphers reset by reload" set_ciphers DEFAULT
new_session_of_main
check "... a new session negotiates the default again ($c0)" test "$(cipher_of main)" = "$c0"
# The key itself, used by OpenSSH's ssh: an ECDSA tunnel (ssh reads its PEM
# key; Ed25519 in PKCS#8 only since OpenSSH 9.6), exported here from the
# catalog as the superuser, kept in a 600 file and removed at once after.
lsql "SELECT tunnel_create('sh', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$(id -un)', local_port => 54322, key_type => 'ecdsa')" >> sshd/authorized_keys
check "a second tunnel with a restricted ECDSA line connects" wait_state sh connected 15
(umask 077; lsql "SELECT private_key FROM tunnel_ssh.secret WHERE tunnel = 'sh'" > sh.key)
ssh_key() { ssh -F /dev/null -i sh.key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p $SPORT "$(id -un)@127.0.0.1" "$@" 2>&1; }
out=$(ssh_key id); rc=$?
echo "# ssh KEY id: rc $rc: $out"
check "exec request runs only the forced command" \
  bash -c '[ "$1" != 0 ] && grep -q "tunnel_ssh: this key only forwards" <<<"$2" && ! grep -q "uid=" <<<"$2"' _ $rc "$out"
out=$(ssh_key -T </dev/null); rc=$?
echo "# ssh -T KEY (shell): rc $rc: $out"
check "shell request runs only the forced command" \
  bash -c '[ "$1" != 0 ] && grep -q "tunnel_ssh: this key only forwards" <<<"$2"' _ $rc "$out"
out=$(ssh_key -W 127.0.0.1:$PPORT </dev/null); rc=$?
check "ssh -W to the permitted target is let through" test "$rc" = 0 || echo "# rc $rc: $out"
denied() { grep -c "to connect to host $1 port $2, but the request was denied" sshd/log; }
out=$(ssh_key -W 127.0.0.1:$LPORT </dev/null); rc=$?
echo "# ssh -W KEY 127.0.0.1:$LPORT: rc $rc: $out; sshd: $(grep -m1 "port $LPORT, but the request was denied" sshd/log | sed 's/^.*\]: //')"
check "ssh -W to another host:port is refused by sshd" \
  bash -c '[ "$1" != 0 ] && [ "$2" -ge 1 ]' _ $rc "$(denied 127.0.0.1 $LPORT)"
out=$(ssh_key -W 127.0.0.2:$PPORT </dev/null); rc=$?
check "... and so is the same port on another address" \
  bash -c '[ "$1" != 0 ] && [ "$2" -ge 1 ]' _ $rc "$(denied 127.0.0.2 $PPORT)"
# The key cannot listen on the bastion: each form of ssh -R is refused by
# sshd's permission check (its log says so: not the kernel refusing port 1
# to a user, which root or a lowered ip_unprivileged_port_start would allow),
# and no session of sshd listens meanwhile.  -L carries a query; a Unix
# socket on the bastion (the private PostgreSQL's) is out of reach.
key_ssh() {  # port ssh-args...: exec'd, so the caller's $! is ssh's own pid
  exec timeout 20 ssh -F /dev/null -i sh.key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ExitOnForwardFailure=yes -p "$1" "$(id -un)@127.0.0.1" "${@:2}"
}
# Listening sockets (TCP or Unix) of the sessions of the sshd whose pid file is $1.
session_listeners() {
  local pids
  pids=$(proc_tree "$(cat "$1")" | tail -n +2 | paste -sd '|')
  [ -z "$pids" ] || ss -Hlnp -A tcp,unix 2>/dev/null | grep -E "pid=($pids)," || true
}
# ssh -N -R SPEC with the key against the sshd of port $1 (pid file $2, log $3):
# "refused ..." once ssh gives up on the forward (ExitOnForwardFailure),
# "listening: ..." as soon as one of that sshd's sessions listens.
denied_rfwd() { grep -c "to remote forward to .*, but the request was denied" "$1"; }
remote_fwd() {
  local port=$1 pidf=$2 log=$3 spec=$4 p l= rc before
  before=$(denied_rfwd "$log")
  (key_ssh "$port" -N -R "$spec" </dev/null >rfwd.out 2>&1) & p=$!
  while kill -0 $p 2>/dev/null; do
    l=$(session_listeners "$pidf"); [ -n "$l" ] && break
    sleep 0.1
  done
  if kill -0 $p 2>/dev/null; then kill $p; wait $p; echo "listening: $l"; return; fi
  wait $p; rc=$?
  l=$(session_listeners "$pidf")
  wait_for 5 more_than "$before" denied_rfwd "$log" &&
    echo "refused: rc $rc: $(tr '\n' ' ' < rfwd.out)${l:+; but listening: $l}" ||
    echo "refused, not by sshd's permission check: rc $rc: $(tr '\n' ' ' < rfwd.out); sshd: $(tail -n 3 "$log" | sed 's/^.*\]: //' | tr '\n' ' ')"
}
RP=54390
for spec in "127.0.0.1:$RP:127.0.0.1:$PPORT" "$RP" "0:127.0.0.1:$PPORT" "127.0.0.1:1:127.0.0.1:$PPORT" "NONE:1:127.0.0.1:$PPORT"; do
  r=$(remote_fwd $SPORT sshd/sshd.pid sshd/log "$spec"); echo "# ssh -R $spec: $r"
  check "ssh -R $spec with the tunnel's key: refused by sshd, nothing listens" \
    bash -c '[[ "$1" == "refused: rc 255: "*"remote port forwarding failed"* && "$1" != *listening* ]]' _ "$r"
done
(key_ssh $SPORT -N -L 127.0.0.1:54391:127.0.0.1:$PPORT </dev/null >/dev/null 2>&1) & p=$!
wait_for 10 bash -c "kill -0 $p && (exec 3<>/dev/tcp/127.0.0.1/54391)"
check "ssh -L to the permitted target carries a query" test "$(psql_via 54391 "SELECT count(*) FROM items" 2>&1)" = 100000
kill $p 2>/dev/null; wait $p 2>/dev/null
# direct-streamlocal: sshd checks the path against the permitopen list,
# where no path is (no authorized_keys option names one).
# (By the permitopen list, or by AllowStreamLocalForwarding: two messages.)
denied_path() { grep -cE "(Received request to connect to path $dir/.s.PGSQL.$PPORT, but the request was denied|refused streamlocal port forward: .*target $dir/.s.PGSQL.$PPORT)" "$1"; }
sl_local() {  # port log: "refused" if sshd denied -L to the private server's socket
  local p before r
  before=$(denied_path "$2"); mkdir -p lsock; rm -f lsock/.s.PGSQL.$PPORT
  (key_ssh "$1" -N -L "$dir/lsock/.s.PGSQL.$PPORT:$dir/.s.PGSQL.$PPORT" </dev/null >/dev/null 2>&1) & p=$!
  wait_for 10 bash -c "kill -0 $p && test -S lsock/.s.PGSQL.$PPORT"
  r=$(psql -X -h "$dir/lsock" -p $PPORT -d postgres -Atc "SELECT 'reached'" 2>&1)
  kill $p 2>/dev/null; wait $p 2>/dev/null
  wait_for 5 more_than "$before" denied_path "$2" && [ "$r" != reached ] && echo refused || echo "not refused: $r"
}
r=$(sl_local $SPORT sshd/log); echo "# ssh -L to $dir/.s.PGSQL.$PPORT: $r"
check "ssh -L to a Unix socket on the bastion (the private server's) is denied by sshd" test "$r" = refused
# ssh -W takes a socket path since OpenSSH 9.4.
if [ "$(printf '%s\n9.4\n' "$(ssh -V 2>&1 | sed -n 's/^OpenSSH_\([0-9]*\.[0-9]*\).*/\1/p')" | sort -V | head -n 1)" = 9.4 ]; then
  before=$(denied_path sshd/log)
  out=$( (key_ssh $SPORT -W "$dir/.s.PGSQL.$PPORT" </dev/null) 2>&1); rc=$?
  echo "# ssh -W $dir/.s.PGSQL.$PPORT: rc $rc: $out"
  w_refused() { [ "$1" != 0 ] && wait_for 5 more_than "$2" denied_path sshd/log; }
  check "ssh -W to that socket is denied by sshd" w_refused $rc "$before"
else
  skip "ssh -W to that socket is denied by sshd" "OpenSSH $(ssh -V 2>&1 | sed -n 's/^OpenSSH_\([^ ,]*\).*/\1/p'): ssh -W takes a socket path since 9.4"
fi
# A remote forward to a Unix socket (streamlocal-forward): sshd checks it
# against no list, so no authorized_keys line can refuse it while it
# permits -L; README says so and gives the sshd_config that closes it.
# With the stock sshd here, the key can listen at a path the account can
# write; with README's Match block, not, and -L/-W still work.
rm -f "$dir/r.sock"
r=$(remote_fwd $SPORT sshd/sshd.pid sshd/log "$dir/r.sock:127.0.0.1:$PPORT"); echo "# ssh -R $dir/r.sock: $r"
check "ssh -R to a Unix socket path: the line alone does not refuse it (README's documented state)" \
  bash -c '[[ "$1" == listening:*"$2"* ]]' _ "$r" "$dir/r.sock"
rm -f "$dir/r.sock"
SLPORT=$((SPORT + 2))
# At LogLevel VERBOSE, as before: suite_end reads *.log files for crashes,
# and sshd at DEBUG1 logs a session it ends as "terminated by signal 15".
sed -e "s/^Port .*/Port $SLPORT/" -e "s#sshd.pid#sshd_sl.pid#" -e "s/^LogLevel .*/LogLevel VERBOSE/" sshd/sshd_config > sshd/sl.conf
cat >> sshd/sl.conf <<C
Match User $(id -un)
    AllowTcpForwarding local
    AllowStreamLocalForwarding no
    PermitTunnel no
C
/usr/sbin/sshd -f "$dir/sshd/sl.conf" -E "$dir/sshd/sl.log"
wait_for 10 test -s sshd/sshd_sl.pid && extra_pids+=("$(cat sshd/sshd_sl.pid)")
wait_for 10 port_open $SLPORT || echo "# sshd with the Match block did not start: $(tail -n 3 sshd/sl.log)"
r=$(remote_fwd $SLPORT sshd/sshd_sl.pid sshd/sl.log "$dir/r.sock:127.0.0.1:$PPORT"); echo "# README's Match block: ssh -R $dir/r.sock: $r"
check "with README's sshd_config block, ssh -R to a Unix socket path is refused, nothing listens" \
  bash -c '[[ "$1" == refused*"remote port forwarding failed"* && "$1" != *listening* ]] && [ ! -e "$2" ]' _ "$r" "$dir/r.sock"
out=$( (key_ssh $SLPORT -W 127.0.0.1:$PPORT </dev/null) 2>&1); rc=$?
check "... while ssh -W to the permitted target still works there" test "$rc" = 0 || echo "# rc $rc: $out"
r=$(sl_local $SLPORT sshd/sl.log); echo "# README's Match block: ssh -L to $dir/.s.PGSQL.$PPORT: $r"
check "... and so is ssh -L to a Unix socket there" test "$r" = refused
kill $(proc_tree "$(cat sshd/sshd_sl.pid)") 2>/dev/null
rm -f sh.key
# A forward added later: the line on the bastion does not permit it yet.
# Meanwhile a client of the first forward stays connected (psql fed by a
# fifo): nothing below may break it.
extra_of() { lsql "SELECT extra_sessions FROM tunnel_status() WHERE name = '$1'"; }
rm -f held.in; mkfifo held.in
psql -X -q -At -h 127.0.0.1 -p 54322 -d postgres < held.in > held.out 2>&1 &
held_psql=$!; extra_pids+=($held_psql)
exec 7>held.in
echo "SELECT 'pid', pg_backend_pid();" >&7
held_line() { grep -q "^$1" held.out; }
check "a client holds a connection on the first forward" wait_for 10 held_line "pid|"
held_backend=$(sed -n 's/^pid|//p' held.out)
attempts0=$(attempts_of sh)
p=$(lsql "SELECT tunnel_forward_add('sh', '127.0.0.1', $LPORT, local_port => 54323)" 2>fwd.err)
check "forward_add says the line changed and gives the new one" \
  grep -q "HINT:  Replace the tunnel's line in authorized_keys on the bastion with: restrict,port-forwarding,permitopen=\"127.0.0.1:$LPORT\",permitopen=\"127.0.0.1:$PPORT\",permitlisten=\"NONE:1\",command=" fwd.err
r=$(lsql "SELECT step || '|' || detail FROM tunnel_test('sh') WHERE NOT ok LIMIT 1"); echo "# $r"
check "tunnel_test: the line on the bastion does not permit the new target" \
  grep -qF "open_channel|the authorized_keys line on the bastion does not permit 127.0.0.1:$LPORT: replace it with tunnel_public_key('sh')" <<<"$r"
repaste sh sshd/authorized_keys
check "line replaced: tunnel_test passes" test "$(lsql "SELECT bool_and(ok) FROM tunnel_test('sh')")" = t
# sshd grants a key's permitopen list at login: the running session logged
# in before the forward was added, so the worker logs in again for it, and
# the first client of the new forward waits for that login.
t0=$(now_ms)
first=$(psql -X -h 127.0.0.1 -p 54323 -d postgres -Atc "SELECT 'first'" 2>&1)
echo "# first client of the added forward: '$first' after $(since $t0) s; sh: $(lsql "SELECT 'attempts ' || connect_attempts || ', extra sessions ' || extra_sessions || ', last_error ' || coalesce(nullif(last_error, ''), '-') FROM tunnel_status() WHERE name = 'sh'")"
check "line replaced: the first client of the added forward is served, no reconnect forced" test "$first" = first
check "... by one new login of the tunnel's session" test "$(attempts_of sh)" = $((attempts0 + 1))
echo "SELECT 'still', pg_backend_pid();" >&7
check "the first forward's client is unbroken: a query answers, same backend" wait_for 10 held_line "still|$held_backend\$"
check "... carried meanwhile by the previous login (extra_sessions 1)" test "$(extra_of sh)" = 1
check "... and the old target through a new connection too" test "$(psql_via 54322 "SELECT count(*) FROM items")" = 100000
exec 7>&-
wait $held_psql
no_extra() { test "$(extra_of sh)" = 0; }
check "the previous login is closed with its last connection" wait_for 10 no_extra
# A forward whose line is not pasted yet: one login for it, refused there as
# before; once the line is pasted, another login after a backoff (5 s).
banner() { timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; head -c 7 <&3" 2>/dev/null | grep -q '^SSH-2.0'; }
attempts0=$(attempts_of sh)
lsql "SELECT tunnel_forward_add('sh', '127.0.0.1', $SPORT, local_port => 54324)" >/dev/null 2>&1
no_banner() { ! banner "$1"; }
check "a forward not in the line yet is refused (the bastion's sshd as the target)" no_banner 54324
check "... after one new login" test "$(attempts_of sh)" = $((attempts0 + 1))
check "... and its status says why" \
  grep -q "does not permit 127.0.0.1:$SPORT" <<<"$(lsql "SELECT last_error FROM tunnel_forward_status() WHERE local_port = 54324")"
repaste sh sshd/authorized_keys
t0=$(now_ms)
check "line pasted: the forward works after the backoff, nothing restarted by hand" wait_for 20 banner 54324
echo "# served $(since $t0) s after the line was pasted; attempts $(attempts_of sh) (were $attempts0)"
check "... with one more login, not one per client" test "$(attempts_of sh)" = $((attempts0 + 2))
check "... and the first forwards still work" test "$(psql_via 54323 "SELECT 1")$(psql_via 54322 "SELECT 1")" = 11
lsql "SELECT tunnel_drop('sh')" >/dev/null

# --- host key pins, against a bastion with RSA, ECDSA and Ed25519 host keys ---
# A second sshd with the same three host keys and accounts takes the
# deliberate mismatches; on OpenSSH 9.8+ it exempts us from its penalties.
PINPORT=$((SPORT + 1))
sed -e "s/^Port .*/Port $PINPORT/" -e "s#sshd.pid#sshd_pins.pid#" -e "s/^LogLevel .*/LogLevel VERBOSE/" sshd/sshd_config > sshd/pins.conf
sshd_penalises && echo "PerSourcePenaltyExemptList 127.0.0.1" >> sshd/pins.conf
# libssh2 1.10 verifies RSA host keys with ssh-rsa (SHA-1) signatures only,
# which OpenSSH 8.8+ offers only when told to.
libssh2_11 || echo "HostKeyAlgorithms +ssh-rsa" >> sshd/pins.conf
start_pins() { /usr/sbin/sshd -f "$dir/sshd/pins.conf" -E "$dir/sshd/pins.log"; }
kill_pins() { kill_sshd_by_config "$dir/sshd/pins.conf"; }
trap 'kill_pins; cleanup' EXIT
start_pins
kl() { ssh-keygen -l -f "sshd/$1.pub"; }           # "256 SHA256:... comment (ED25519)"
fp_of() { kl "$1" | awk '{print $2}'; }
pin() {  # tunnel local_port pin
  lsql "SELECT tunnel_create('$1', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $PINPORT, ssh_user => '$(id -un)', local_port => $2, host_key_fingerprint => \$pin\$$3\$pin\$)" >> sshd/authorized_keys
}
st() { lsql "SELECT $2 FROM tunnel_status() WHERE name = '$1'"; }
ED=$(fp_of host_key) EC=$(fp_of host_key_ecdsa) RS=$(fp_of host_key_rsa)
pin pin_ed 54331 "$ED"
pin pin_ec 54332 "$(kl host_key_ecdsa)"
pin pin_rs 54333 "ssh-rsa $RS"
# A bare pin of the ECDSA key: the first attempt sees Ed25519, the retry (5-10
# s later) asks for ECDSA, and the algorithm is then recorded.  Made now, so
# that its backoff runs while the other pins are checked.
pin pin_ec_bare 54334 "$EC"
wait_state pin_ec_bare host_key_mismatch 15 >/dev/null
err_bare=$(st pin_ec_bare last_error); echo "# pin_ec_bare first: $err_bare"
check "pin Ed25519 (bare, as ssh -v shows it first): connected" wait_state pin_ed connected 15
check "pin ECDSA as ssh-keygen -l prints it: connected" wait_state pin_ec connected 15
check "pin RSA with its algorithm: connected" wait_state pin_rs connected 15
for t in pin_ed pin_ec pin_rs; do echo "# $t: $(st $t "host_key_fingerprint || ' | ' || host_key_algorithm || ' | attempts ' || connect_attempts")"; done
check "status shows each key with its type" test \
  "$(st pin_ed host_key_fingerprint)|$(st pin_ec host_key_fingerprint)|$(st pin_rs host_key_fingerprint)" = \
  "ssh-ed25519 $ED|ecdsa-sha2-nistp256 $EC|ssh-rsa $RS"
check "the pinned algorithm was negotiated at once, no mismatch first" \
  test "$(lsql "SELECT string_agg(host_key_algorithm || ':' || connect_attempts, ' ' ORDER BY name) FROM tunnel_status() WHERE name IN ('pin_ec', 'pin_rs')")" = \
       "ecdsa-sha2-nistp256:1 $(libssh2_11 && echo rsa-sha2-512 || echo ssh-rsa):1"
check "tunnel_test negotiates the pinned key too" \
  grep -q "^host key ecdsa-sha2-nistp256 $EC matches" <<<"$(lsql "SELECT detail FROM tunnel_test('pin_ec') WHERE step = 'ssh_handshake'")"
check "bare pin of another key: the mismatch says the next attempt asks for ECDSA" \
  grep -q "bastion presented ssh-ed25519 $ED; the pin names no algorithm, so the next attempt asks for the bastion's ECDSA key" <<<"$err_bare"
# tunnel_test walks the families as the worker does (on a tunnel the worker
# leaves alone, so that nothing was learned): both find the ECDSA key.
pin pin_ec_walk 54336 "$EC"
lsql "SELECT tunnel_disable('pin_ec_walk')" >/dev/null
r=$(lsql "SELECT detail FROM tunnel_test('pin_ec_walk') WHERE step = 'ssh_handshake'"); echo "# tunnel_test: $r"
check "tunnel_test agrees with the worker on a bare pin of the second family: it asks for the next, and the ECDSA key matches" \
  grep -q "^host key ecdsa-sha2-nistp256 $EC matches; the pin names no algorithm and the bastion presents ssh-ed25519 $ED first" <<<"$r"
# Two pins: the bastion rotates from Ed25519 to RSA.
pin pin_two 54335 "$(kl host_key)
$(kl host_key_rsa)"
check "two pins: connected (Ed25519)" wait_state pin_two connected 15
check "both pins stored with their algorithms" test "$(lsql "SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'pin_two'")" = "ssh-ed25519 $ED, ssh-rsa $RS"
check "bare ECDSA pin: connected on the retry" wait_state pin_ec_bare connected 30
check "... with its algorithm recorded for next time" \
  test "$(lsql "SELECT host_key_algorithms FROM tunnel_ssh.tunnel WHERE name = 'pin_ec_bare'")" = ecdsa-sha2-nistp256
kill_pins
sed -i "\#^HostKey $dir/sshd/host_key\$#d" sshd/pins.conf      # the Ed25519 key retired
start_pins
check "two pins, Ed25519 retired on the bastion: connected with the RSA pin" wait_state pin_two connected 20
check "... which status shows" test "$(st pin_two host_key_fingerprint)" = "ssh-rsa $RS"
# Change one: the bastion's ECDSA key replaced.
kill_pins
ssh-keygen -q -t ecdsa -N '' -f sshd/host_key_ecdsa2
NEWEC=$(fp_of host_key_ecdsa2)
sed -i "s#^HostKey $dir/sshd/host_key_ecdsa\$#HostKey $dir/sshd/host_key_ecdsa2#" sshd/pins.conf
start_pins
check "ECDSA key changed: the ECDSA pin refuses it" wait_state pin_ec host_key_mismatch 20
err=$(st pin_ec last_error); echo "# pin_ec: $err"
check "the mismatch names both algorithms and fingerprints" \
  grep -qF "expected ecdsa-sha2-nistp256 $EC, bastion presented ecdsa-sha2-nistp256 $NEWEC" <<<"$err"
check "... and does not guess that the bastion was rebuilt" bash -c '! grep -qi "rebuilt" <<<"$1"' _ "$err"
r=$(lsql "SELECT detail FROM tunnel_test('pin_ec') WHERE step = 'ssh_handshake'"); echo "# tunnel_test: $r"
check "tunnel_test names both too, in the worker's words" grep -qF "host key of 127.0.0.1 port $PINPORT does not match: expected ecdsa-sha2-nistp256 $EC, bastion presented ecdsa-sha2-nistp256 $NEWEC" <<<"$r"
check "the RSA pin is not disturbed" wait_state pin_rs connected 20
check "no client gets through the changed key" bash -c "! psql -X -h 127.0.0.1 -p 54332 -d 'dbname=postgres connect_timeout=5' -Atc 'SELECT 1' >/dev/null 2>&1"
for t in pin_ed pin_ec pin_rs pin_ec_bare pin_ec_walk pin_two; do lsql "SELECT tunnel_drop('$t')" >/dev/null; done
kill_pins

lsql "CREATE SERVER priv FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '54321', dbname 'postgres');
      CREATE USER MAPPING FOR CURRENT_USER SERVER priv OPTIONS (user '$(id -un)');
      CREATE SCHEMA remote; IMPORT FOREIGN SCHEMA public LIMIT TO (items, pgbench_accounts) FROM SERVER priv INTO remote;" >/dev/null
check "foreign server points at the tunnel port, not the private one" \
  test "$(lsql "SELECT srvoptions::text FROM pg_foreign_server WHERE srvname = 'priv'")" = "{host=127.0.0.1,port=54321,dbname=postgres}"
check "postgres_fdw join through the tunnel" test \
  "$(lsql "SELECT count(*) FROM remote.items i JOIN remote.pgbench_accounts a ON a.aid = i.id")" = 100000
check "dblink through the tunnel" test \
  "$(lsql "SELECT s FROM dblink('host=127.0.0.1 port=54321 dbname=postgres', 'SELECT sum(id) FROM items') AS t(s bigint)")" = 5000050000

# "md5 lines" of a stream: equal digests of two empty or cut-short streams
# prove nothing, so each comparison also wants the table's row count.
digest() { perl -MDigest::MD5 -e 'my ($m, $n) = (Digest::MD5->new, 0); while (<STDIN>) { $m->add($_); $n++ } print $m->hexdigest, " $n\n"'; }
copy_out() { psql -X -h 127.0.0.1 -p "$1" -d postgres -v ON_ERROR_STOP=1 -Atc "$2" | digest; }
same_rows() {  # expected-rows digest digest
  echo "# $2 | $3 (want $1 rows)"
  [ "${2#* }" = "$1" ] && [ "$2" = "$3" ]
}
sum_direct=$(copy_out $PPORT "COPY big TO STDOUT")
sum_tunnel=$(copy_out 54321 "COPY big TO STDOUT")
check "large COPY (~53 MB, 200000 rows) through the tunnel arrives byte-exact" same_rows 200000 "$sum_direct" "$sum_tunnel"
# libssh2 1.10 crypts block by block, so the worker serves AES-CTR from a
# keystream computed in bulk (src/keystream.c); 1.11 and later need not.
if ! libssh2_11; then
  check "AES-CTR keystream computed in bulk with libssh2 < 1.11" \
    grep -q "AES-CTR keystream computed in bulk" local.log
else
  check "no bulk keystream with libssh2 >= 1.11" \
    bash -c "! grep -q 'AES-CTR keystream computed in bulk' local.log"
fi
check "the keystream passed its check against OpenSSL's AES-CTR" \
  bash -c "! grep -q 'AES-CTR is computed one block at a time' local.log"

# Rekeying replaces every cipher context mid-stream: sshd renews the keys
# after each 1 MB, both ways, during a COPY out and a COPY in (more than 50
# rekeys over the two COPYs, ~53 MB and ~26 MB).  Not under
# make valgrind: libssh2 1.10 drops the previous exchange's 51-byte buffer at
# every re-key (its leak, allocated inside libssh2_session_handshake and
# lost at the next exchange), which would be reported against our frames.
if [ -z "${TUNNEL_SSH_POSTGRES:-}" ]; then
  kill_sshd
  cp sshd/sshd_config sshd/sshd_config.orig
  sed -i 's/^LogLevel .*/LogLevel DEBUG1/' sshd/sshd_config
  echo "RekeyLimit 1M" >> sshd/sshd_config
  start_sshd
  wait_state main connected 15 >/dev/null
  rekeys0=$(grep -c "ssh_set_newkeys: rekeying" sshd/log)
  cipher=$(lsql "SELECT cipher || ' MAC: ' || mac FROM tunnel_status() WHERE name = 'main'")
  check "sshd agrees on the cipher and MAC tunnel_status() shows ($cipher)" \
    grep -qF "kex: client->server cipher: $cipher" sshd/log

  sum_tunnel=$(copy_out 54321 "COPY big TO STDOUT")
  check "COPY out byte-exact while sshd rekeys every 1 MB" same_rows 200000 "$sum_direct" "$sum_tunnel"
  psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -Atc "COPY (SELECT * FROM big WHERE id <= 100000) TO STDOUT" > big_in.copy
  psql -X -q -h 127.0.0.1 -p 54321 -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE TABLE big_in (id int, v text)" -c "COPY big_in FROM STDIN" < big_in.copy
  check "COPY in (~26 MB, 100000 rows) through the tunnel: psql reports success" test $? = 0
  check "COPY in byte-exact while sshd rekeys" same_rows 100000 \
    "$(digest < big_in.copy)" "$(copy_out $PPORT "COPY (SELECT * FROM big_in ORDER BY id) TO STDOUT")"
  rekeys=$(( $(grep -c "ssh_set_newkeys: rekeying" sshd/log) - rekeys0 ))
  echo "# sshd rekeyed $rekeys times during the two COPYs"
  check "sshd did rekey (more than 50 times)" test "$rekeys" -gt 50
  rm -f big_in.copy
  kill_sshd
  mv sshd/sshd_config.orig sshd/sshd_config
  start_sshd
  wait_state main connected 15 >/dev/null
else
  skip "COPY out and in byte-exact while sshd rekeys every 1 MB" "under valgrind: libssh2 1.10 leaks a buffer at every re-key"
fi

# Strict key exchange (Terrapin, CVE-2023-48795): libssh2 1.11.1 offers
# kex-strict-c-v00@openssh.com; sshd says at debug3 that both ends use it.
if libssh2_11; then
  kill_sshd
  cp sshd/sshd_config sshd/sshd_config.orig
  sed -i 's/^LogLevel .*/LogLevel DEBUG3/' sshd/sshd_config
  start_sshd
  wait_state main connected 15 >/dev/null
  echo "# sshd: $(grep -m1 'strict KEX' sshd/log | sed 's/^.*\]: //')"
  check "libssh2 1.11: strict key exchange in use, per sshd" grep -q "will use strict KEX ordering" sshd/log
  kill_sshd
  mv sshd/sshd_config.orig sshd/sshd_config
  start_sshd
  wait_state main connected 15 >/dev/null
else
  skip "strict key exchange in use, per sshd" "libssh2 $(pkg-config --modversion libssh2) has none (1.11.1 and later)"
fi

out=$($B/pgbench -n -S -c 50 -j 2 -t 40 -h 127.0.0.1 -p 54321 postgres 2>&1)
check "50 concurrent clients through one tunnel, no failure" \
  grep -q "number of transactions actually processed: 2000/2000" <<<"$out"
out=$($B/pgbench -n -S -C -c 8 -j 2 -t 25 -h 127.0.0.1 -p 54321 postgres 2>&1)
check "a new connection per transaction, 8 at once, no failure" \
  grep -q "actually processed: 200/200" <<<"$out"
# bytes_in: at least the two COPYs of big out (2 x 53 MB).
check "status counts connections and bytes" \
  test "$(lsql "SELECT total_connections >= 250 AND bytes_in > 100000000 FROM tunnel_status() WHERE name = 'main'")" = t

# --- faults ---
kill_sshd
check "bastion down: state leaves connected" wait_state main unreachable 20
start_sshd
check "bastion back: connected again on its own" wait_state main connected 15
check "new queries work after the bastion returns" test "$(psql_via 54321 "SELECT count(*) FROM items")" = 100000

pid=$(lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'")
t_kill=$(lsql "SELECT now()")
kill -TERM "$pid"
check "worker stopped by SIGTERM comes back with its tunnels" wait_for 20 sql_is \
  "SELECT t.state = 'connected' AND t.state_since > '$t_kill' AND a.pid <> $pid FROM tunnel_status() t, pg_stat_activity a WHERE t.name = 'main' AND a.backend_type = 'tunnel_ssh worker'" t

mv sshd/host_key sshd/host_key.orig; mv sshd/host_key.pub sshd/host_key.pub.orig
ssh-keygen -q -t ed25519 -N '' -f sshd/host_key
swap_sshd start_sshd
check "changed bastion host key: host_key_mismatch" wait_state main host_key_mismatch 20
check "no connection forwarded through an impostor" bash -c "! psql -X -h 127.0.0.1 -p 54321 -d postgres -Atc 'SELECT 1' >/dev/null 2>&1"
check "mismatch logged as WARNING" grep -q "WARNING:.*host key of" local.log
kill_sshd
mv sshd/host_key.orig sshd/host_key; mv sshd/host_key.pub.orig sshd/host_key.pub
start_sshd
# The loss and the mismatch make two failures (swap_sshd: no third for a
# port with nothing on it): main's next attempt is 10-20 s after the
# mismatch (sshd penalises refused host keys).  The key types
# below need no main meanwhile: main's return is checked after them.

# --- each key type against OpenSSH 9 ---
for kt in ecdsa rsa; do
  lsql "SELECT tunnel_create('auth_$kt', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$(id -un)', key_type => '$kt')" \
    >> sshd/authorized_keys 2>/dev/null
done
check "ecdsa key authenticates against a default sshd" wait_state auth_ecdsa connected 15
if libssh2_11; then
  # libssh2 1.11 signs with rsa-sha2-512/256, which a default sshd takes.
  check "libssh2 1.11: rsa key authenticates against a default sshd" wait_state auth_rsa connected 15
  check "... and tunnel_create said nothing about ssh-rsa" \
    bash -c "! grep -q 'uses ssh-rsa (SHA-1)' local.log"
else
  check "libssh2 1.10: tunnel_create warned that RSA signs with ssh-rsa (SHA-1)" \
    grep -q 'NOTICE:  RSA authentication from this server uses ssh-rsa (SHA-1)' local.log
  check "libssh2 1.10: rsa key is refused by a default sshd: auth_failed" wait_state auth_rsa auth_failed 15
  check "rsa refusal names the sshd setting" \
    grep -q "PubkeyAcceptedAlgorithms +ssh-rsa" <<<"$(lsql "SELECT last_error FROM tunnel_status() WHERE name = 'auth_rsa'")"
  kill_sshd
  echo "PubkeyAcceptedAlgorithms +ssh-rsa" >> sshd/sshd_config
  start_sshd
  # auth_failed retries in 10 s, 20 s, ...: not at once (PerSourcePenalties).
  check "rsa key authenticates where sshd allows ssh-rsa" wait_state auth_rsa connected 45
fi
check "query through the rsa tunnel" test "$(psql_via "$(lsql "SELECT local_port FROM tunnel_ssh.tunnels WHERE name = 'auth_rsa'")" "SELECT count(*) FROM items")" = 100000
lsql "SELECT tunnel_drop('auth_ecdsa'), tunnel_drop('auth_rsa')" >/dev/null
t0=$(now_ms)
check "bastion's own host key back: main connects again on its own (retry 10-20 s after the mismatch)" \
  wait_state main connected 45
echo "# main back $(since $t0) s after the key types were checked"

# --- a local port held by another process ---
lsql "SELECT tunnel_create('taken', '127.0.0.1', '127.0.0.1', ssh_port => 9, local_port => $PPORT)" >/dev/null
check "local port taken by another process: bind_failed" wait_state taken bind_failed 10
check "bind error is shown" grep -q "could not listen" <<<"$(lsql "SELECT last_error FROM tunnel_status() WHERE name = 'taken'")"
check "other tunnels keep working meanwhile" test "$(psql_via 54321 "SELECT count(*) FROM items")" = 100000
lsql "SELECT tunnel_drop('taken')" >/dev/null

lsql "BEGIN; SELECT tunnel_create('rolled', '127.0.0.1', '127.0.0.1', local_port => 54400); ROLLBACK;" >/dev/null
# The worker reads catalog changes in commit order: once it has acted on the
# drop committed after the rollback, it would have opened 54400 before.
lsql "SELECT tunnel_drop('main')" >/dev/null
port_closed() { ! port_open "$1"; }
check "tunnel_drop closes the port" wait_for 10 port_closed 54321
check "rolled-back tunnel_create never opens a port" port_closed 54400

# --- a clean shutdown says goodbye to the bastion ---
lsql "SELECT tunnel_create('bye', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$(id -un)', local_port => 54323)" >> sshd/authorized_keys
check "tunnel bye connected" wait_state bye connected 15
before=$(grep -c 'Received disconnect.*tunnel closed' sshd/log)
$B/pg_ctl -D local stop -m fast -w >/dev/null
bye() { [ "$(grep -c 'Received disconnect.*tunnel closed' sshd/log)" -gt "$before" ]; }
check "server stopped (SIGTERM to the worker): sshd logs the tunnel's disconnect message" wait_for 5 bye
grep -m1 "tunnel_ssh worker shutting down" -A1 local.log | sed 's/^/# log: /'
check "the worker logged its shutdown" grep -q "tunnel_ssh worker shutting down" local.log

echo "# worker log lines with key material: $(grep -c 'PRIVATE KEY' local.log)"
check "no private key in the server log" test "$(grep -c 'PRIVATE KEY' local.log)" = 0
suite_end
