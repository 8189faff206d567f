#!/usr/bin/env bash
# Durability with real parts: tunnels survive pg_dump/pg_restore into a new
# cluster, run on a streaming standby and after its promotion, and keep
# their traffic through ALTER EXTENSION tunnel_ssh UPDATE.  All on loopback
# (127.0.0.1, and 127.0.0.2 for the standby's listeners), as an unprivileged
# user; every server started here is stopped on exit.  Prints "N passed, N
# failed" last.
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
LPORT=58432 PPORT=58433 SPORT=58222
RPORT=58434   # restored cluster
R2PORT=58437  # restored from an INSERT dump
SBPORT=58435  # standby
UPORT=58436   # upgrade cluster
U11PORT=58438 # upgrade cluster from 1.1
RANGE="tunnel_ssh.port_range = '58400-58419'"
LOCAL_CONF=$RANGE
. "$(dirname "$0")/lib.sh"
harness_start
me=$(id -un)
extra_clusters="restored restored2 standby upg upg11"
trap 'cleanup; for c in $extra_clusters; do $B/pg_ctl -D "$dir/$c" stop -m immediate >/dev/null 2>&1; done' EXIT

sql_at() { psql -X -q -h "$dir" -p "$1" -d postgres -v ON_ERROR_STOP=1 -Atc "$2"; }
state_at() { sql_at "$1" "SELECT state FROM tunnel_status() WHERE name = '$2'" 2>/dev/null; }
wait_at() {  # port tunnel state seconds
  for _ in $(seq 1 $(( $4 * 5 ))); do
    [ "$(state_at "$1" "$2")" = "$3" ] && return 0; sleep 0.2
  done
  echo "# port $1: tunnel $2 is '$(state_at "$1" "$2")', wanted '$3'; last_error: $(sql_at "$1" "SELECT last_error FROM tunnel_status() WHERE name = '$2'" 2>&1)"
  return 1
}
# Milliseconds since the epoch, for the figures.
ms() { date +%s%3N; }
# A cluster like the local one (tunnel_ssh preloaded), on another port.
new_cluster() {  # name port [extra settings]
  $B/initdb -D "$1" -A trust >/dev/null
  cat >> "$1/postgresql.conf" <<C
port = $2
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'tunnel_ssh'
tunnel_ssh.keepalive_interval = 2
tunnel_ssh.reconnect_max_delay = 2
$RANGE
${3:-}
C
  $B/pg_ctl -D "$1" -l "$1.log" start -w >/dev/null
}
# What must not change across a dump, a standby or an update: per forward,
# the tunnel, its key and the bastion's host key; per tunnel, what the
# worker runs.
defs_at() { sql_at "$1" "SELECT name, local_port, remote_port, key_fingerprint, host_key_fingerprint FROM tunnel_ssh.tunnels ORDER BY local_port"; }
running_at() { sql_at "$1" "SELECT name, state, local_port, host_key_fingerprint FROM tunnel_status() ORDER BY name"; }
log_tail() { echo "# --- $1 (last lines)"; tail -n "${2:-15}" "$1" | sed 's/^/#   /'; }

$B/pgbench -i -s 1 -q -h 127.0.0.1 -p $PPORT postgres >/dev/null 2>&1
host_key=$(ssh-keygen -l -f sshd/host_key.pub | awk '{print $2}')
lsql "CREATE EXTENSION tunnel_ssh; CREATE EXTENSION postgres_fdw;"

# ===================== 1. pg_dump / pg_restore into a new cluster
lsql "SELECT tunnel_create('d1', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => 58401)" >> sshd/authorized_keys
lsql "SELECT tunnel_create('d2', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => 58402)" >> sshd/authorized_keys
lsql "SELECT tunnel_forward_add('d2', '127.0.0.1', $PPORT, local_port => 58403)" >/dev/null
# A jump chain: d3 reaches the same bastion through d1's session.  Its row
# is rewritten after d1's so that the dump's COPY of tunnel_ssh.tunnel has
# d1 (the row d3's via references) last.
lsql "SELECT tunnel_create('d3', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => 58406, via => 'd1')" >> sshd/authorized_keys 2>/dev/null
# d1's line must now permit d3's bastion too: replaced, and d1 logs in again.
repaste d1 sshd/authorized_keys
lsql "SELECT tunnel_disable('d1')" >/dev/null; wait_state d1 disabled 10 >/dev/null
lsql "SELECT tunnel_enable('d1')" >/dev/null
lsql "SELECT tunnel_server_create('d2_db', 'd2', 'postgres', local_port => 58403);
      CREATE USER MAPPING FOR CURRENT_USER SERVER d2_db OPTIONS (user '$me');
      CREATE SCHEMA remote; IMPORT FOREIGN SCHEMA public LIMIT TO (pgbench_accounts) FROM SERVER d2_db INTO remote;" >/dev/null
check "d1 connected before the dump" wait_state d1 connected 15
check "d2 connected before the dump" wait_state d2 connected 15
check "d3 (via d1) connected before the dump" wait_state d3 connected 15
lsql "UPDATE tunnel_ssh.tunnel SET enabled = enabled WHERE name = 'd1'" >/dev/null
echo "# physical order of tunnel_ssh.tunnel: $(lsql "SELECT string_agg(name, ' ' ORDER BY ctid) FROM tunnel_ssh.tunnel")"
check "the foreign server works before the dump" test "$(lsql "SELECT count(*) FROM remote.pgbench_accounts")" = 100000
# A rotation the DBA has started but not finished (the new line not yet on
# the bastion) is part of the definition too.
lsql "SELECT tunnel_rotate_key('d2')" > d2_next.pub
next_fp=$(lsql "SELECT next_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'd2'")
defs_before=$(defs_at $LPORT)
running_before=$(running_at $LPORT)
keys_md5=$(md5sum < sshd/authorized_keys)
accepted_before=$(grep -c "Accepted publickey" sshd/log)

t0=$(ms)
$B/pg_dump -Fc -h "$dir" -p $LPORT -f local.dump postgres 2> dump.err
$B/pg_dump --inserts -h "$dir" -p $LPORT -f local_inserts.sql postgres 2>/dev/null
[ -s dump.err ] && sed 's/^/# pg_dump said: /' dump.err
check "pg_dump without a warning" test ! -s dump.err
echo "# pg_dump -Fc: $(( $(ms) - t0 )) ms, $(stat -c %s local.dump) bytes"
# The restored cluster takes over the same loopback ports, as a moved
# server would: the original stops first (its foreign server names
# 127.0.0.1, so only then does the check prove the restored worker serves it).
$B/pg_ctl -D local stop -m fast -w >/dev/null
new_cluster restored $RPORT
t0=$(ms)
$B/pg_restore -h "$dir" -p $RPORT -d postgres local.dump > restore.out 2>&1
rc=$?
echo "# pg_restore: $(( $(ms) - t0 )) ms, exit $rc"
check "pg_restore without an error" test "$rc" = 0 || sed 's/^/#   /' restore.out | head -20
t0=$(ms)
check "restored: d1 connected" wait_at $RPORT d1 connected 20
check "restored: d2 connected" wait_at $RPORT d2 connected 20
check "restored: d3 connected through d1" wait_at $RPORT d3 connected 20
echo "# restored tunnels connected $(( $(ms) - t0 )) ms after pg_restore returned"
check "authorized_keys untouched" test "$(md5sum < sshd/authorized_keys)" = "$keys_md5"
check "same tunnels, forwards, local ports, key and host key fingerprints" test "$(defs_at $RPORT)" = "$defs_before"
[ "$(defs_at $RPORT)" = "$defs_before" ] || { echo "# before: $defs_before" | tr '\n' ' '; echo; echo "# after:  $(defs_at $RPORT)" | tr '\n' ' '; echo; }
check "the restored worker runs them as before" test "$(running_at $RPORT)" = "$running_before"
check "the host key is the bastion's" test "$(sql_at $RPORT "SELECT DISTINCT host_key_fingerprint FROM tunnel_ssh.tunnel")" = "$host_key"
check "the sshd saw the restored key again" test "$(grep -c "Accepted publickey" sshd/log)" -gt "$accepted_before"
check "private keys restored (one per tunnel)" \
  test "$(sql_at $RPORT "SELECT count(*) FROM tunnel_ssh.secret s JOIN tunnel_ssh.tunnel t ON t.name = s.tunnel")" = 3
check "the jump chain restored" test "$(sql_at $RPORT "SELECT via FROM tunnel_ssh.tunnel WHERE name = 'd3'")" = d1
check "query through the restored tunnel d1" test "$(psql_via 58401 "SELECT count(*) FROM pgbench_branches")" = 1
check "query through the restored jump chain d3" test "$(psql_via 58406 "SELECT count(*) FROM pgbench_branches")" = 1
check "query through d2's second forward" test "$(psql_via 58403 "SELECT count(*) FROM pgbench_branches")" = 1
# The foreign server's connection (a new backend, so a new one) must be one
# more on d2's count: the query above already made it non-zero.
total_of() { sql_at "$1" "SELECT total_connections FROM tunnel_status() WHERE name = '$2'"; }
d2_total=$(total_of $RPORT d2)
check "the restored foreign server works through the tunnel" \
  test "$(sql_at $RPORT "SELECT count(*) FROM remote.pgbench_accounts")" = 100000
check "and it is the restored worker's d2 that carried it (one more connection: $d2_total -> $(total_of $RPORT d2))" \
  test "$(total_of $RPORT d2)" = $(( ${d2_total:-0} + 1 ))
check "the restored server still follows its forward" \
  test "$(sql_at $RPORT "SELECT server || ' ' || local_port FROM tunnel_ssh.server")" = "d2_db 58403"
check "the pending rotation of d2 was restored" \
  test "$(sql_at $RPORT "SELECT next_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'd2'")" = "$next_fp"
# The DBA pastes the new line only now: the restored worker finishes it.
cat d2_next.pub >> sshd/authorized_keys
t0=$(ms)
done_=no
for _ in $(seq 1 450); do
  [ "$(sql_at $RPORT "SELECT key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'd2' AND next_key_fingerprint IS NULL")" = "$next_fp" ] && { done_=yes; break; }
  sleep 0.2
done
echo "# restored: d2's rotation completed $(( $(ms) - t0 )) ms after the new line was added"
check "the restored worker completes the rotation (bound: 90 s)" test $done_ = yes
# The live session stays on the key it authenticated with (a rotation never
# drops it); the next connection uses the new one.
echo "# restored d2 after the rotation: $(sql_at $RPORT "SELECT state || ', session key ' || key_fingerprint FROM tunnel_status() WHERE name = 'd2'")"
check "d2 stayed connected through the rotation" wait_at $RPORT d2 connected 5
$B/pg_ctl -D restored stop -m fast -w >/dev/null
# The same, from a plain dump made with --inserts (one statement per row):
# rows are in physical order, and d3's row comes before d1's, which its via
# references.
new_cluster restored2 $R2PORT
psql -X -q -h "$dir" -p $R2PORT -d postgres -f local_inserts.sql > restore2.out 2>&1
grep ERROR restore2.out | sed 's/^/# psql -f said: /' | head -6
check "restore of a pg_dump --inserts dump keeps every tunnel" \
  test "$(sql_at $R2PORT "SELECT string_agg(name || coalesce('<' || via, ''), ' ' ORDER BY name) FROM tunnel_ssh.tunnel")" = "d1 d2 d3<d1"
check "and every key" test "$(sql_at $R2PORT "SELECT count(*) FROM tunnel_ssh.secret")" = 3
$B/pg_ctl -D restored2 stop -m fast -w >/dev/null
$B/pg_ctl -D local -l local.log start -w >/dev/null
wait_state d1 connected 20 >/dev/null && wait_state d2 connected 20 >/dev/null && wait_state d3 connected 20 >/dev/null

# ===================== 2. streaming standby, then promotion
# initdb -A trust allows replication from 127.0.0.1 and the socket; the
# standby listens on 127.0.0.2 so its tunnels do not take the primary's ports.
t0=$(ms)
$B/pg_basebackup -h "$dir" -p $LPORT -D standby -R -X stream -c fast
cat >> standby/postgresql.conf <<C
port = $SBPORT
tunnel_ssh.listen_address = '127.0.0.2'
C
$B/pg_ctl -D standby -l standby.log start -w >/dev/null
check "standby is in recovery" test "$(sql_at $SBPORT "SELECT pg_is_in_recovery()")" = t
check "standby: d1 connected" wait_at $SBPORT d1 connected 20
check "standby: d2 connected" wait_at $SBPORT d2 connected 20
check "standby: d3 connected through the standby's d1" wait_at $SBPORT d3 connected 20
echo "# standby: base backup to tunnels connected: $(( $(ms) - t0 )) ms"
check "standby listens on 127.0.0.2" \
  test "$(sql_at $SBPORT "SELECT string_agg(DISTINCT local_address, ',') FROM tunnel_status()")" = 127.0.0.2
check "standby runs the same tunnels and host keys" \
  test "$(sql_at $SBPORT "SELECT name, local_port, host_key_fingerprint FROM tunnel_status() ORDER BY name")" = \
       "$(lsql "SELECT name, local_port, host_key_fingerprint FROM tunnel_status() ORDER BY name")"
via2() { psql -X -q -h 127.0.0.2 -p "$1" -d postgres -Atc "$2"; }
sb_totals=$(sql_at $SBPORT "SELECT string_agg(name || ':' || total_connections, ' ' ORDER BY name) FROM tunnel_status() WHERE name IN ('d1', 'd2')")
check "query through 127.0.0.2:58401 (standby's tunnel)" test "$(via2 58401 "SELECT count(*) FROM pgbench_branches")" = 1
check "query through 127.0.0.2:58403 (standby's second forward)" test "$(via2 58403 "SELECT count(*) FROM pgbench_branches")" = 1
# Only the standby listens on 127.0.0.2, so what this adds is that its
# status counts each connection on its own tunnel: one more on d1, one on d2.
sb_totals_after=$(sql_at $SBPORT "SELECT string_agg(name || ':' || total_connections, ' ' ORDER BY name) FROM tunnel_status() WHERE name IN ('d1', 'd2')")
check "the standby's worker counted one connection on d1 and one on d2 ($sb_totals -> $sb_totals_after)" \
  test "$sb_totals_after" = "$(awk '{ for (i = 1; i <= NF; i++) { split($i, a, ":"); printf "%s%s:%d", (i > 1 ? " " : ""), a[1], a[2] + 1 } }' <<<"$sb_totals")"

# A tunnel created on the primary reaches the standby by WAL replay and the
# worker's standby poll (every 5 s): no trigger fires there.
lsql "SELECT tunnel_create('s3', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => 58404)" >> sshd/authorized_keys
t0=$(ms)
check "primary: s3 connected" wait_state s3 connected 15
echo "# primary: s3 connected $(( $(ms) - t0 )) ms after tunnel_create"
check "standby: s3 connected within 15 s of its creation" wait_at $SBPORT s3 connected 15
echo "# standby: s3 connected $(( $(ms) - t0 )) ms after tunnel_create on the primary"
check "query through the standby's s3 (127.0.0.2:58404)" test "$(via2 58404 "SELECT count(*) FROM pgbench_branches")" = 1
lsql "SELECT tunnel_drop('s3')" >/dev/null
t0=$(ms)
gone=no
for _ in $(seq 1 75); do
  [ "$(sql_at $SBPORT "SELECT count(*) FROM tunnel_status() WHERE name = 's3'")" = 0 ] && { gone=yes; break; }
  sleep 0.2
done
echo "# standby: s3 gone $(( $(ms) - t0 )) ms after tunnel_drop on the primary"
check "a tunnel dropped on the primary leaves the standby within 15 s" test $gone = yes
check "and its port on 127.0.0.2 is closed" bash -c "! (exec 3<>/dev/tcp/127.0.0.2/58404) 2>/dev/null"

d_attempts() { sql_at "$1" "SELECT string_agg(name || ':' || connect_attempts, ' ' ORDER BY name) FROM tunnel_status() WHERE name IN ('d1', 'd2', 'd3')"; }
attempts_before=$(d_attempts $SBPORT)
worker_before=$(sql_at $SBPORT "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'")
t0=$(ms)
$B/pg_ctl -D standby promote -w >/dev/null
echo "# promote: $(( $(ms) - t0 )) ms"
check "standby promoted" test "$(sql_at $SBPORT "SELECT pg_is_in_recovery()")" = f
# A tunnel created on the promoted server: once it is connected, the worker
# has read the catalog as a primary's, the moment a restart or a dropped
# session would come, so the checks below follow it, not a pause.
t0=$(ms)
sql_at $SBPORT "SELECT tunnel_create('p4', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $SPORT, ssh_user => '$me', local_port => 58405)" >> sshd/authorized_keys
check "tunnel_create on the promoted server: connected" wait_at $SBPORT p4 connected 15
echo "# promoted: p4 connected $(( $(ms) - t0 )) ms after tunnel_create"
check "promoted: d1 still connected" wait_at $SBPORT d1 connected 5
check "promoted: d2 still connected" wait_at $SBPORT d2 connected 5
check "promoted: d3 still connected" wait_at $SBPORT d3 connected 5
attempts_after=$(d_attempts $SBPORT)
echo "# connect attempts before/after promotion: $attempts_before / $attempts_after"
check "promotion kept the sessions (no reconnect)" test "$attempts_after" = "$attempts_before"
check "promotion kept the worker" \
  test "$(sql_at $SBPORT "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tunnel_ssh worker'")" = "$worker_before"
check "query through 127.0.0.2:58401 after promotion" test "$(via2 58401 "SELECT count(*) FROM pgbench_branches")" = 1
check "query through the promoted server's new tunnel" test "$(via2 58405 "SELECT count(*) FROM pgbench_branches")" = 1
check "the promoted server records the new tunnel's host key" \
  test "$(sql_at $SBPORT "SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'p4'")" = "$host_key"
grep -E "ERROR|PANIC|WARNING" standby.log | sed 's/^/# standby.log: /' | head -20
$B/pg_ctl -D standby stop -m fast -w >/dev/null
$B/pg_ctl -D local stop -m fast -w >/dev/null

# ===================== 3. ALTER EXTENSION UPDATE under traffic
# The reference for "what the update must produce" is a fresh install of the
# default version, read from the control file, so objects added to a later
# script need no change here.
default_version=$(sed -nE "s/^default_version *= *'([^']+)'.*/\1/p" "$(pg_config --sharedir)/extension/tunnel_ssh.control")
echo "# default_version: $default_version"
# Every member of the extension, with what defines it: signatures, defaults,
# security, results, columns, view and trigger definitions, privileges, and
# which tables pg_dump keeps.
members_sql="
SELECT regexp_replace(pg_describe_object(d.classid, d.objid, 0) || coalesce(' | ' ||
  CASE d.classid
    WHEN 'pg_proc'::regclass THEN (SELECT pg_get_function_arguments(p.oid) || ' -> ' || pg_get_function_result(p.oid)
        || ' ' || p.prosecdef || ' ' || p.provolatile::text || ' ' || p.proisstrict || ' ' || coalesce(p.proconfig::text, '') || ' ' || coalesce(p.proacl::text, '')
        FROM pg_proc p WHERE p.oid = d.objid)
    WHEN 'pg_class'::regclass THEN (SELECT c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' ' || coalesce(
        (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), ''), ', ' ORDER BY a.attname)
         FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
        || CASE WHEN c.relkind = 'v' THEN ' ' || pg_get_viewdef(c.oid) ELSE '' END
        || coalesce(' constraints: ' || (SELECT string_agg(pg_get_constraintdef(k.oid), '; ' ORDER BY pg_get_constraintdef(k.oid))
                                         FROM pg_constraint k WHERE k.conrelid = c.oid), '')
        || coalesce(' triggers: ' || (SELECT string_agg(pg_get_triggerdef(t.oid), '; ' ORDER BY t.tgname)
                                      FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), '')
        FROM pg_class c WHERE c.oid = d.objid)
    WHEN 'pg_namespace'::regclass THEN (SELECT coalesce(n.nspacl::text, '') FROM pg_namespace n WHERE n.oid = d.objid)
  END, ''), '\\s+', ' ', 'g')
FROM pg_depend d
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'tunnel_ssh')
UNION ALL
SELECT 'config table ' || c::regclass::text || ' ' || coalesce(f, '')
FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, f) WHERE e.extname = 'tunnel_ssh'
ORDER BY 1"
# The local cluster did a plain CREATE EXTENSION tunnel_ssh: the fresh install.
$B/pg_ctl -D local -l local.log start -w >/dev/null
fresh=$(sql_at $LPORT "$members_sql")
echo "# fresh install: $(grep -c . <<<"$fresh") members and config entries"
check "the member listing of a fresh install is read" grep -q "^function tunnel_create(" <<<"$fresh"
check "fresh install is at the default version" \
  test "$(sql_at $LPORT "SELECT extversion FROM pg_extension WHERE extname = 'tunnel_ssh'")" = "$default_version"
$B/pg_ctl -D local stop -m fast -w >/dev/null

new_cluster upg $UPORT
sql_at $UPORT "CREATE EXTENSION tunnel_ssh VERSION '1.0'"
check "CREATE EXTENSION tunnel_ssh VERSION '1.0'" \
  test "$(sql_at $UPORT "SELECT extversion FROM pg_extension WHERE extname = 'tunnel_ssh'")" = 1.0
v10=$(sql_at $UPORT "$members_sql")
# The 1.0 signature: nine arguments, no via.
sql_at $UPORT "SELECT tunnel_create('u1', '127.0.0.1', '127.0.0.1', $PPORT, $SPORT, '$me', 58410, 'ed25519', NULL)" >> sshd/authorized_keys
check "1.0 tunnel connected" wait_at $UPORT u1 connected 15
u_defs=$(defs_at $UPORT)
u_attempts=$(sql_at $UPORT "SELECT connect_attempts FROM tunnel_status() WHERE name = 'u1'")
active_at() { test "$(sql_at "$1" "SELECT active_connections FROM tunnel_status() WHERE name = '$2'")" -ge "$3"; }
$B/pgbench -n -S -c 4 -j 2 -T 4 -h 127.0.0.1 -p 58410 postgres > pgb_upd.out 2>&1 &
pgb=$!
# The update runs while pgbench's 4 clients are connected through u1.
wait_for 10 active_at $UPORT u1 4
t0=$(ms)
sql_at $UPORT "ALTER EXTENSION tunnel_ssh UPDATE" > update.out 2>&1
rc=$?
echo "# ALTER EXTENSION tunnel_ssh UPDATE: $(( $(ms) - t0 )) ms, exit $rc"
check "ALTER EXTENSION tunnel_ssh UPDATE succeeds" test $rc = 0 || sed 's/^/#   /' update.out
wait $pgb
pgb_rc=$?
echo "# pgbench -S through the tunnel during the update: $(grep -E '^tps' pgb_upd.out | cut -c1-20), $(grep -E 'number of transactions actually processed' pgb_upd.out)"
check "pgbench during the update: exit 0 and no failed transaction" \
  bash -c "[ $pgb_rc = 0 ] && grep -q 'number of failed transactions: 0 ' pgb_upd.out" || sed 's/^/#   /' pgb_upd.out | tail -5
check "extversion is the control file's default ($default_version)" \
  test "$(sql_at $UPORT "SELECT extversion FROM pg_extension WHERE extname = 'tunnel_ssh'")" = "$default_version"
check "same tunnel, local port, key and host key after the update" test "$(defs_at $UPORT)" = "$u_defs"
check "still connected, on the same session" \
  test "$(sql_at $UPORT "SELECT state || ' ' || connect_attempts FROM tunnel_status() WHERE name = 'u1'")" = "connected $u_attempts"
updated=$(sql_at $UPORT "$members_sql")
echo "# objects the update added or changed: $(comm -13 <(sort <<<"$v10") <(sort <<<"$updated") | cut -d' ' -f1-3 | tr '\n' ';')"
check "the update changed the extension" test "$updated" != "$v10"
check "the updated extension has exactly the objects of a fresh install" test "$updated" = "$fresh"
[ "$updated" = "$fresh" ] || diff <(echo "$fresh") <(echo "$updated") | sed 's/^/#   /' | head -20
p=$(sql_at $UPORT "SELECT tunnel_forward_add('u1', '127.0.0.1', $PPORT)" 2>&1)
check "tunnel_forward_add works after the update (port $p)" test "$p" -ge 58400 -a "$p" -le 58419 2>/dev/null
wait_for 10 port_open "$p"
check "query through the new forward" test "$(psql_via "$p" "SELECT count(*) FROM pgbench_branches" 2>&1)" = 1
check "on the same session" \
  test "$(sql_at $UPORT "SELECT connect_attempts FROM tunnel_status() WHERE name = 'u1'")" = "$u_attempts"
line=$(sql_at $UPORT "SELECT tunnel_create('u2', '127.0.0.1', '127.0.0.1', via => 'u1', ssh_port => $SPORT, ssh_user => '$me')" 2>&1)
check "tunnel_create with via works after the update" grep -q "tunnel_ssh:u2$" <<<"$line"
$B/pg_ctl -D upg stop -m fast -w >/dev/null

# ===================== 4. the upgrade from 1.1: through 1.2 to the default
# A tunnel made under 1.1 with what 1.1 brought (a second forward, a foreign
# server that follows it), updated in one ALTER EXTENSION under traffic:
# same session, every row of 1.1's tables unchanged, traffic through both
# forwards and the foreign server after.
extversion_at() { sql_at "$1" "SELECT extversion FROM pg_extension WHERE extname = 'tunnel_ssh'"; }
new_cluster upg11 $U11PORT
sql_at $U11PORT "CREATE EXTENSION tunnel_ssh VERSION '1.1'; CREATE EXTENSION postgres_fdw"
check "CREATE EXTENSION tunnel_ssh VERSION '1.1'" test "$(extversion_at $U11PORT)" = 1.1
echo "# update path from 1.1: $(sql_at $U11PORT "SELECT path FROM pg_extension_update_paths('tunnel_ssh') WHERE source = '1.1' AND target = '$default_version'")"
# The 1.1 signature: ten arguments, via last.
sql_at $U11PORT "SELECT tunnel_create('v1', '127.0.0.1', '127.0.0.1', $PPORT, $SPORT, '$me', 58412, 'ed25519', NULL, NULL)" >> sshd/authorized_keys
check "1.1 tunnel connected" wait_at $U11PORT v1 connected 15
sql_at $U11PORT "SELECT tunnel_forward_add('v1', '127.0.0.1', $PPORT, 58413)" >/dev/null
# The foreign server uses the forward's Unix socket: once the worker has made it.
wait_for 10 test -S "$dir/upg11/tunnel_ssh/.s.PGSQL.58413"
sql_at $U11PORT "SELECT tunnel_server_create('v1_db', 'v1', 'postgres', 58413);
  CREATE USER MAPPING FOR CURRENT_USER SERVER v1_db OPTIONS (user '$me');
  CREATE SCHEMA remote; IMPORT FOREIGN SCHEMA public LIMIT TO (pgbench_branches) FROM SERVER v1_db INTO remote;" >/dev/null
check "1.1: query through the second forward's foreign server" test "$(sql_at $U11PORT "SELECT count(*) FROM remote.pgbench_branches")" = 1
# Every row of every table of 1.1, by the columns 1.1 has (an update may
# add columns, never change what was there): key, forwards, server.
has_host_key() { test -n "$(sql_at $U11PORT "SELECT host_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'v1'")"; }
wait_for 10 has_host_key
rows_sql=$(sql_at $U11PORT "SELECT string_agg(format('SELECT %L || '': '' || coalesce((SELECT string_agg(x::text, '' | '' ORDER BY x::text) FROM (SELECT %s FROM %s) x), '''')',
    c.relname, (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
    c.oid::regclass), ' UNION ALL ' ORDER BY c.relname)
  FROM pg_class c WHERE c.relnamespace = 'tunnel_ssh'::regnamespace AND c.relkind = 'r'")
rows11=$(sql_at $U11PORT "$rows_sql")
echo "# 1.1 tables: $(sed -n 's/^\([a-z_]*\): .*/\1/p' <<<"$rows11" | tr '\n' ' ')"
check "the 1.1 rows are read (tunnel, key, two forwards, server)" \
  bash -c 'grep -q "^tunnel: (v1," <<<"$1" && grep -q "^secret: (v1," <<<"$1" && [ "$(grep "^forward: " <<<"$1" | grep -o "[0-9],v1," | wc -l)" = 2 ] && grep -q "^server: (v1_db," <<<"$1"' _ "$rows11" ||
  cut -c1-150 <<<"$rows11" | sed 's/^/#   /'
v_attempts=$(sql_at $U11PORT "SELECT connect_attempts FROM tunnel_status() WHERE name = 'v1'")
$B/pgbench -n -S -c 4 -j 2 -T 4 -h 127.0.0.1 -p 58412 postgres > pgb_upd11.out 2>&1 &
pgb=$!
wait_for 10 active_at $U11PORT v1 4
sql_at $U11PORT "ALTER EXTENSION tunnel_ssh UPDATE" > update11.out 2>&1
rc=$?
check "ALTER EXTENSION tunnel_ssh UPDATE from 1.1 succeeds" test $rc = 0 || sed 's/^/#   /' update11.out
wait $pgb
pgb_rc=$?
check "pgbench through the 1.1 tunnel during the update: exit 0 and no failed transaction" \
  bash -c "[ $pgb_rc = 0 ] && grep -q 'number of failed transactions: 0 ' pgb_upd11.out" || sed 's/^/#   /' pgb_upd11.out | tail -5
check "from 1.1, extversion is the default ($default_version)" test "$(extversion_at $U11PORT)" = "$default_version"
# 1.1--1.2 gave every recorded host key its algorithm preference.
check "the update went through 1.2 (the host key has its algorithms)" \
  test -n "$(sql_at $U11PORT "SELECT host_key_algorithms FROM tunnel_ssh.tunnel WHERE name = 'v1'")"
rows13=$(sql_at $U11PORT "$rows_sql")
check "every row of 1.1's tables unchanged by the update" test "$rows13" = "$rows11"
[ "$rows13" = "$rows11" ] || diff <(echo "$rows11") <(echo "$rows13") | sed 's/^/#   /' | cut -c1-200 | head -10
updated11=$(sql_at $U11PORT "$members_sql")
check "from 1.1, the extension has exactly the objects of a fresh install" test "$updated11" = "$fresh"
[ "$updated11" = "$fresh" ] || diff <(echo "$fresh") <(echo "$updated11") | sed 's/^/#   /' | head -20
check "the 1.1 tunnel still connected, on the same session" \
  test "$(sql_at $U11PORT "SELECT state || ' ' || connect_attempts FROM tunnel_status() WHERE name = 'v1'")" = "connected $v_attempts"
check "query through the 1.1 tunnel after the update" test "$(psql_via 58412 "SELECT count(*) FROM pgbench_branches")" = 1
check "the 1.1 foreign server works after the update" test "$(sql_at $U11PORT "SELECT count(*) FROM remote.pgbench_branches")" = 1
$B/pg_ctl -D upg11 stop -m fast -w >/dev/null

echo "# suite time: $SECONDS s"
suite_end
