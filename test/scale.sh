#!/usr/bin/env bash
# Scale: 200 tunnels to one real sshd bastion, then 500 concurrent clients
# spread over the 200 tunnel ports, all connected at once, then more
# clients than the worker has open files for; all with real parts on
# 127.0.0.1.  Measures (and prints with "# ") the time for all tunnels to
# connect, the worker's memory (VmRSS/VmHWM) and open files before, at peak
# and after the load.  The clients are opened by one process (clients.pl
# below, the PostgreSQL wire protocol over IO::Select): starting hundreds of
# pgbench or psql processes took a minute on a busy machine, longer than
# the clients were meant to overlap.  Every wait ends on its event (a
# count, a file, a state); every process started here is stopped on exit.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
. "$(dirname "$0")/lib.sh"
harness_start

NTUNNELS=${NTUNNELS:-200}
NCLIENTS=${NCLIENTS:-500}
BASE_PORT=21000             # local ports 21001..21200, outside the ephemeral range
# Seconds the 500 clients send queries once all are connected at once.
LOAD_SECONDS=${LOAD_SECONDS:-10}
RSS_LIMIT_KB=$((64 * 1024))
now_ms() { date +%s%3N; }
user=$(id -un)

# --- the bastion takes 200 sessions at once, the private server 500+ clients ---
# sshd keeps the first value of a keyword, so replace lib.sh's MaxStartups.
kill_sshd
sed -i 's/^MaxStartups .*/MaxStartups 1000/' sshd/sshd_config
echo "MaxSessions 100" >> sshd/sshd_config
start_sshd
psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -c "ALTER SYSTEM SET max_connections = 800" >/dev/null
$B/pg_ctl -D private -l private.log restart -w >/dev/null
check "private server takes 800 connections" \
  test "$(psql -X -h 127.0.0.1 -p $PPORT -d postgres -Atc 'SHOW max_connections')" = 800
$B/pgbench -i -s 10 -q -h 127.0.0.1 -p $PPORT postgres >/dev/null 2>&1

# One process, many clients.  clients.pl MODE N BASE NTUNNELS USER BOUND:
# client i connects to port BASE + 1 + i % NTUNNELS, logs in (trust) and
# waits; "connected C of N" goes to file "connected" once every client is
# ready for a query (or has failed, or BOUND seconds passed).
#  load: once file "go" exists, every client sends select-only queries
#        (pgbench -S's) for LOAD_SECONDS; then all log out.
#  hold: first takes advisory lock 42 over a direct connection (port PPORT);
#        every client asks for SELECT 'held' after a shared lock 42 (it
#        waits on the private server, holding its tunnel connection);
#        once file "release" exists the lock is released, and a client
#        counts as served when its row and the ReadyForQuery after it come.
# Prints "served S of N, queries Q, errors E, unfinished U" and the first
# errors.  Nothing here retries: a client that fails is counted.
cat > clients.pl <<'PERL'
use strict; use warnings; use IO::Socket::INET; use IO::Select; use Time::HiRes qw(time sleep);
my ($mode, $n, $base, $ntunnels, $user, $bound, $secs, $pport) = @ARGV;
my $end = time + $bound;
my (%st, %buf, @errs); my $sel = IO::Select->new;
my ($ready, $failed, $queries, $served) = (0, 0, 0, 0);
sub msg { my ($t, $body) = @_; return $t . pack('N', 4 + length($body)) . $body; }
sub query { my ($c, $q) = @_; syswrite $c, msg('Q', "$q\0"); }
sub startup {
  my $params = "user\0$user\0database\0postgres\0\0";
  return pack('NN', 8 + length($params), 196608) . $params;
}
sub fail { my ($c, $why) = @_; push @errs, $why if @errs < 5; $st{$c} = 'failed'; $failed++; $sel->remove($c); close $c; }
my $holder;
if ($mode eq 'hold') {
  $holder = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $pport) or die "holder: $!\n";
  syswrite $holder, startup() . msg('Q', "SELECT pg_advisory_lock(42)\0");
  my $b = '';
  while ($b !~ /Z\0\0\0\x05I/) { sysread($holder, my $x, 65536) or die "holder: closed\n"; $b .= $x; }
}
my $q = $mode eq 'hold' ? "SELECT 'held' FROM pg_advisory_xact_lock_shared(42)" : undef;
for my $i (1 .. $n) {
  my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $base + 1 + $i % $ntunnels)
    or do { push @errs, "connect $i: $!" if @errs < 5; $failed++; next };
  syswrite $c, startup() . ($q ? msg('Q', "$q\0") : '');
  $st{$c} = 'startup'; $buf{$c} = ''; $sel->add($c);
}
my ($go, $stop, $announced) = (0, 0, 0);
sub next_query { my $c = shift; query($c, 'SELECT abalance FROM pgbench_accounts WHERE aid = ' . (1 + int(rand(1000000)))); $st{$c} = 'query'; }
sub on_ready {
  my $c = shift;
  if ($st{$c} eq 'startup') { $ready++; $st{$c} = $mode eq 'hold' ? 'held' : 'idle'; return; }
  if ($st{$c} eq 'held') {
    if ($buf{"r$c"}) { $served++; $st{$c} = 'done'; syswrite $c, msg('X', ''); $sel->remove($c); close $c; }
    return;
  }
  if ($st{$c} eq 'query') { $queries++; if (time < $stop) { next_query($c) } else { $st{$c} = 'done'; $served++; syswrite $c, msg('X', ''); $sel->remove($c); close $c; } }
}
while (time < $end) {
  my $open = grep { $st{$_} ne 'done' && $st{$_} ne 'failed' } keys %st;
  last if !$open;
  if (!$announced && ($ready + $failed + $served >= $n)) {
    open my $f, '>', 'connected.tmp'; print $f "connected $ready of $n\n"; close $f; rename 'connected.tmp', 'connected';
    $announced = 1;
  }
  # hold: the clients beyond the limit wait in the backlog, not ready yet.
  if (!$go && ($announced || $mode eq 'hold') && -e ($mode eq 'hold' ? 'release' : 'go')) {
    $go = 1; $stop = time + ($secs || 0);
    if ($mode eq 'hold') { syswrite $holder, msg('Q', "SELECT pg_advisory_unlock(42)\0"); }
    else { next_query($_) for grep { $st{$_} eq 'idle' } $sel->handles; }
  }
  for my $c ($sel->can_read(0.1)) {
    my $r = sysread($c, my $chunk, 65536);
    if (!$r) { fail($c, "connection closed in state $st{$c}"); next; }
    $buf{$c} .= $chunk;
    while (length($buf{$c}) >= 5) {
      my ($t, $len) = unpack('a N', $buf{$c});
      last if length($buf{$c}) < 1 + $len;
      my $m = substr($buf{$c}, 0, 1 + $len, '');
      if ($t eq 'E') { my ($text) = $m =~ /M([^\0]*)\0/; fail($c, "error in state $st{$c}: " . ($text // '?')); last; }
      elsif ($t eq 'R' && unpack('N', substr($m, 5, 4)) != 0) { fail($c, 'authentication asked for'); last; }
      elsif ($t eq 'D' && $m =~ /\0\0\0\x04held/) { $buf{"r$c"} = 1; }
      elsif ($t eq 'Z') { on_ready($c); last if !defined $st{$c} || $st{$c} eq 'done'; }
    }
  }
}
if (!$announced) { open my $f, '>', 'connected'; print $f "connected $ready of $n\n"; close $f; }
my $unfinished = grep { $st{$_} ne 'done' && $st{$_} ne 'failed' } keys %st;
printf "served %d of %d, queries %d, errors %d, unfinished %d\n", $served, $n, $queries, $failed, $unfinished;
print "error: $_\n" for @errs;
PERL

lsql "CREATE EXTENSION tunnel_ssh" >/dev/null
wpid=$(lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'")
# kB of VmRSS and VmHWM, and open files, of the worker.
mem() { awk '/^VmRSS|^VmHWM/{printf "%s ", $2}' /proc/$wpid/status; ls /proc/$wpid/fd | wc -l; }
nfds() { ls /proc/$wpid/fd | wc -l; }
read -r rss0 hwm0 fds0 <<<"$(mem)"
echo "# worker pid $wpid, no tunnel: VmRSS ${rss0} kB, VmHWM ${hwm0} kB, open files $fds0"
fd_limit=$(awk '/^Max open files/{print $4}' /proc/$wpid/limits)
echo "# worker open-files limit (soft): $fd_limit"

# --- 200 tunnels, created in one transaction but disabled, so that the clock
# starts when they are enabled with their keys already on the bastion ---
psql -X -q -h "$dir" -p $LPORT -d postgres -v ON_ERROR_STOP=1 -At > keys.pub <<SQL
BEGIN;
SELECT tunnel_create('s' || g, '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT,
                     ssh_user => '$user', local_port => $BASE_PORT + g)
  FROM generate_series(1, $NTUNNELS) g;
UPDATE tunnel_ssh.tunnel SET enabled = false WHERE name ~ '^s[0-9]+\$';
COMMIT;
SQL
check "tunnel_create made $NTUNNELS authorized_keys lines" \
  test "$(grep -cE '^restrict,port-forwarding,permitopen="127.0.0.1:[0-9]+",permitlisten="NONE:1",command="[^"]+" ssh-ed25519 [A-Za-z0-9+/=]+ tunnel_ssh:s[0-9]+$' keys.pub)" = "$NTUNNELS"
cat keys.pub >> sshd/authorized_keys
count_state() { lsql "SELECT count(*) FROM tunnel_status() WHERE state = '$1'"; }
all_in_state() { test "$(count_state "$1")" = "$NTUNNELS"; }
check "disabled tunnels report disabled" wait_for 10 all_in_state disabled

connected() { count_state connected; }
t0=$(now_ms)
lsql "UPDATE tunnel_ssh.tunnel SET enabled = true WHERE name ~ '^s[0-9]+\$'" >/dev/null
wait_for 120 all_in_state connected
n=$(connected)
t1=$(now_ms)
echo "# $n of $NTUNNELS tunnels connected $(( t1 - t0 )) ms after being enabled"
echo "# connect attempts: $(lsql "SELECT sum(connect_attempts) FROM tunnel_status()"), states: $(lsql "SELECT string_agg(state || ' ' || c, ', ') FROM (SELECT state, count(*) c FROM tunnel_status() GROUP BY 1) s")"
check "all $NTUNNELS tunnels connected (bound: 120 s)" test "$n" = "$NTUNNELS"
if [ "$n" != "$NTUNNELS" ]; then
  lsql "SELECT name, state, last_error FROM tunnel_status() WHERE state <> 'connected' LIMIT 5" | sed 's/^/# /'
fi
check "one sshd session per tunnel" \
  test "$(grep -c 'Accepted publickey' sshd/log)" -ge "$NTUNNELS"
check "a query through the last tunnel" \
  test "$(psql_via $((BASE_PORT + NTUNNELS)) 'SELECT count(*) FROM pgbench_branches')" = 10
active() { lsql "SELECT sum(active_connections) FROM tunnel_status()"; }
no_active() { test "$(active)" = 0; }
fds_at_most() { test "$(nfds)" -le "$1"; }
fds_at_least() { test "$(nfds)" -ge "$1"; }
wait_for 10 no_active
read -r rss1 hwm1 fds1 <<<"$(mem)"
echo "# before load ($NTUNNELS tunnels connected): VmRSS ${rss1} kB, VmHWM ${hwm1} kB, open files $fds1"

# --- 500 concurrent clients over the 200 tunnels (2 or 3 each), all
# connected at once, then select-only queries for LOAD_SECONDS ---
echo "# $NCLIENTS clients over $NTUNNELS tunnels (one process), then select-only queries for $LOAD_SECONDS s"
tb=$(now_ms)
perl clients.pl load "$NCLIENTS" "$BASE_PORT" "$NTUNNELS" "$user" 120 "$LOAD_SECONDS" > load.out 2>&1 &
loader=$!
extra_pids+=($loader)
wait_for 120 test -f connected
tc=$(now_ms)
# Every client is logged in and idle: each holds its tunnel connection now
# (the worker's count may take a moment to show the last ones).
active_ge() { test "$(active)" -ge "$1"; }
wait_for 10 active_ge "$NCLIENTS"
peak_active=$(active)
echo "# $(cat connected 2>/dev/null) clients $(( tc - tb )) ms after the first; active tunnel connections: $peak_active"
touch go
# Sample the worker while the clients run.
peak_rss=0 peak_fds=0
while kill -0 $loader 2>/dev/null; do
  if read -r r h f <<<"$(mem 2>/dev/null)" && [ -n "${r:-}" ]; then
    [ "$r" -gt "$peak_rss" ] && peak_rss=$r
    [ "$f" -gt "$peak_fds" ] && peak_fds=$f
  fi
  sleep 0.5
done
wait $loader; load_rc=$?
te=$(now_ms)
read -r rss2 hwm2 fds2 <<<"$(mem)"
echo "# load took $(( te - tb )) ms: $(head -n 1 load.out)"
grep '^error' load.out | head -3 | sed 's/^/#   /'
echo "# peak: VmRSS ${peak_rss} kB (sampled every 0.5 s), VmHWM ${hwm2} kB, open files $peak_fds (limit $fd_limit), active tunnel connections $peak_active"
read -r served queries errors unfinished < <(sed -n 's/^served \([0-9]*\) of [0-9]*, queries \([0-9]*\), errors \([0-9]*\), unfinished \([0-9]*\)$/\1 \2 \3 \4/p' load.out)
echo "# queries answered: ${queries:-0}, $(( ${queries:-0} * 1000 / (te - tc) )) a second overall"
check "all $NCLIENTS clients were connected at once" test "${peak_active:-0}" -ge "$NCLIENTS"
check "every client ran its queries and logged out, no error" \
  test "$load_rc" = 0 -a "${served:-0}" = "$NCLIENTS" -a "${errors:-1}" = 0
check "no client hung (bound: 120 s)" test "${unfinished:-1}" = 0
check "queries were answered (more than one per client)" test "${queries:-0}" -gt "$NCLIENTS"
check "worker open files stayed below its limit" test "$peak_fds" -lt "$fd_limit"
accept_errors=$(grep -c 'could not accept' local.log)
echo "# 'could not accept' lines in the server log: $accept_errors"
grep 'could not accept' local.log | sort | uniq -c | head -3 | sed 's/^/# /'
check "no accept error in the server log" test "$accept_errors" = 0

# --- after: clients gone, tunnels up, memory and files back ---
wait_for 10 no_active
check "active connections back to 0" test "$(active)" = 0
check "total connections counted: $NCLIENTS" \
  test "$(lsql "SELECT sum(total_connections) FROM tunnel_status()")" -ge "$NCLIENTS"
check "all tunnels still connected after the load" test "$(connected)" = "$NTUNNELS"
# Lanes started for the burst close when idle (10 s): their files with them.
wait_for 30 fds_at_most "$fds1"
read -r rss3 hwm3 fds3 <<<"$(mem)"
echo "# after load: VmRSS ${rss3} kB, VmHWM ${hwm3} kB, open files $fds3"
check "worker is the same process (no crash, no restart)" \
  test "$(lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'")" = "$wpid"
check "worker VmHWM < 64 MB (${hwm3} kB)" test "$hwm3" -lt "$RSS_LIMIT_KB"
check "worker peak VmRSS < 64 MB (${peak_rss} kB)" test "$peak_rss" -lt "$RSS_LIMIT_KB"
check "worker open files back to the idle count ($fds3 vs $fds1)" test "$fds3" -le "$fds1"
check "queries through every tunnel after the load" \
  bash -c "for g in \$(seq 1 $NTUNNELS); do psql -X -h 127.0.0.1 -p \$(( $BASE_PORT + g )) -d postgres -Atc 'SELECT 1' >/dev/null || exit 1; done"

# --- beyond the worker's open-files limit: more clients than it has files
# for.  The ones it cannot accept yet wait in the listen backlog; the worker
# must neither spin on the readable listener nor flood the log meanwhile, and
# every client must be served once files are free again.  The worker raises
# its soft limit to the hard one (often a million), so the server restarts
# under a hard limit of 1024 for this, and the tunnels come back first. ---
$B/pg_ctl -D local -l local.log stop -m fast >/dev/null
(ulimit -n 1024 && $B/pg_ctl -D local -l local.log start -w >/dev/null)
t0=$(now_ms)
wait_for 120 all_in_state connected
echo "# server restarted under ulimit -n 1024: $(connected) of $NTUNNELS tunnels connected after $(( $(now_ms) - t0 )) ms"
check "all tunnels back after the restart" test "$(connected)" = "$NTUNNELS"
wpid=$(lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'")
fd_limit=$(awk '/^Max open files/{print $4}' /proc/$wpid/limits)
wait_for 10 no_active
fds3=$(nfds)
echo "# worker pid $wpid, open-files limit $fd_limit, open files $fds3"
accept_re='could not accept|no file descriptor left'
over=40
nhold=$(( fd_limit - fds3 + over ))
echo "# beyond the limit: $nhold clients held on the private server (the worker has files for $(( fd_limit - fds3 )))"
log0=$(grep -cE "$accept_re" local.log)
rm -f connected go release
th=$(now_ms)
perl clients.pl hold "$nhold" "$BASE_PORT" "$NTUNNELS" "$user" 120 0 "$PPORT" > hold.out 2>&1 &
holder=$!
extra_pids+=($holder)
# Until the worker has no file left (bound: 60 s).
wait_for 60 fds_at_least $(( fd_limit - 2 )) && full=1 || full=0
# Two seconds at the limit, measured: the worker's CPU and its log lines.
c0=$(awk '{print $14 + $15}' /proc/$wpid/stat); l0=$(grep -cE "$accept_re" local.log)
sleep 2
c1=$(awk '{print $14 + $15}' /proc/$wpid/stat); l1=$(grep -cE "$accept_re" local.log)
tick=$(getconf CLK_TCK)
echo "# at the limit (reached: $full, $(( $(now_ms) - th )) ms after the first client): open files $(nfds)/$fd_limit, worker CPU $(( (c1 - c0) * 100 / tick / 2 ))% of a core over 2 s, $(( l1 - l0 )) accept-error lines in those 2 s"
touch release
tr=$(now_ms)
wait $holder
hold_ok=$(sed -n 's/^served \([0-9]*\) of.*/\1/p' hold.out)
accept_lines=$(( $(grep -cE "$accept_re" local.log) - log0 ))
echo "# beyond the limit: $(head -n 1 hold.out), $(( $(now_ms) - tr )) ms after the release; accept-error lines in the log: $accept_lines"
grep '^error' hold.out | head -3 | sed 's/^/#   /'
grep -E "$accept_re" local.log | sed 's/^[^]]*\] //' | sort | uniq -c | head -3 | sed 's/^/#   /'
ls -l local.log | awk '{print "# server log size: " $5 " bytes"}'
# Keep the disk: a flood of those lines can reach hundreds of MB.
if [ "$accept_lines" -gt 1000 ]; then
  grep -vE "$accept_re" local.log > local.log.kept; cat local.log.kept > local.log; rm -f local.log.kept
fi
check "the limit was reached" test "$full" = 1
check "at the open-files limit the worker does not spin (CPU < 50% of a core)" \
  test $(( (c1 - c0) * 100 / tick / 2 )) -lt 50
check "at the open-files limit the log says so" grep -q 'no file descriptor left for new connections' local.log
check "at the open-files limit the log is not flooded (<= 100 accept errors)" test "$accept_lines" -le 100
check "every client beyond the limit is served once files are free" test "${hold_ok:-0}" = "$nhold"
check "all tunnels still connected after the limit" test "$(connected)" = "$NTUNNELS"
check "worker is still the same process" \
  test "$(lsql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'")" = "$wpid"

echo "# worker log lines (WARNING/ERROR/terminated): $(grep -cE 'WARNING|ERROR|terminated by signal' local.log)"
grep -E 'WARNING|ERROR|terminated by signal' local.log | head -5 | sed 's/^/# /'
suite_end
