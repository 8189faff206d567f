#!/usr/bin/env bash
# OpenSSH user certificates against real sshd bastions that trust a CA:
# one that takes certificates only (TrustedUserCAKeys, AuthorizedKeysFile
# none, the user name as principal), one with an AuthorizedPrincipalsFile
# holding the line tunnel_public_key gives.  Certificates are made with
# ssh-keygen -s of the key tunnel_public_key(what => 'key') returns: valid,
# about to expire, expired, not yet valid, of another key, a host
# certificate, renewed while a client holds a connection, removed.
# Both bastions exempt 127.0.0.1 from OpenSSH 9.8+'s PerSourcePenalties:
# the refusals here are deliberate, and penalties have suites of their own
# (day2, security).
set -uo pipefail
dir=${1:?work directory}
cd "$dir"
LOCAL_CONF="tunnel_ssh.connect_timeout = 3"
. "$(dirname "$0")/lib.sh"
harness_start
me=$(id -un)
CA_PORT=$((SPORT + 1)) PR_PORT=$((SPORT + 2))

ssh-keygen -q -t ed25519 -N '' -C test-ca -f ca
touch sshd/principals sshd/authorized_keys2
chmod 600 sshd/principals sshd/authorized_keys2
sed -e "s/^Port .*/Port $CA_PORT/" -e "s#sshd.pid#ca.pid#" \
    -e "s#^AuthorizedKeysFile .*#AuthorizedKeysFile none#" sshd/sshd_config > sshd/ca.conf
echo "TrustedUserCAKeys $dir/ca.pub" >> sshd/ca.conf
sed -e "s/^Port .*/Port $PR_PORT/" -e "s#sshd.pid#pr.pid#" \
    -e "s#^AuthorizedKeysFile .*#AuthorizedKeysFile $dir/sshd/authorized_keys2#" sshd/sshd_config > sshd/pr.conf
printf 'TrustedUserCAKeys %s\nAuthorizedPrincipalsFile %s\n' "$dir/ca.pub" "$dir/sshd/principals" >> sshd/pr.conf
if sshd_penalises; then
  echo "PerSourcePenaltyExemptList 127.0.0.1" | tee -a sshd/ca.conf >> sshd/pr.conf
fi
/usr/sbin/sshd -f "$dir/sshd/ca.conf" -E "$dir/sshd/ca.log"
/usr/sbin/sshd -f "$dir/sshd/pr.conf" -E "$dir/sshd/pr.log"
cert_cleanup() {
  kill_sshd_by_config "$dir/sshd/ca.conf"
  kill_sshd_by_config "$dir/sshd/pr.conf"
  cleanup
}
trap cert_cleanup EXIT
lsql "CREATE EXTENSION tunnel_ssh"
echo "# $(ssh -V 2>&1 | cut -d, -f1); libssh2 $(pkg-config --modversion libssh2)"

# End a bastion's sessions (not its listener): the tunnel logs in again.
relogin() {  # conf
  local l s
  l=$(pgrep -f "sshd -f $dir/sshd/$1( |\$)" | head -n 1)
  s=$(proc_tree "$l" | grep -vx "$l")
  [ -n "$s" ] && kill_tree $s
}
col() { lsql "SELECT $2 FROM tunnel_status() WHERE name = '$1'"; }
# sign NAME ID VALIDITY [extra ssh-keygen options]: a certificate of the
# tunnel's key, by the CA, as NAME-cert.pub
sign() {
  local t=$1 id=$2 v=$3; shift 3
  lsql "SELECT tunnel_public_key('$t', what => 'key')" > "$t.pub"
  rm -f "$t-cert.pub"
  ssh-keygen -q -s ca -I "$id" -n "$me" -V "$v" "$@" "$t.pub" 2>/dev/null
  cat "$t-cert.pub"
}
set_cert() { lsql "SELECT tunnel_certificate_set('$1', \$c\$$2\$c\$)" >/dev/null; }
log_has() { grep -qF -- "$2" "$1"; }

# --- which certificate types log in here (measured) ---
# libssh2 1.10 names the signature of an Ed25519 or RSA certificate after
# the certificate type; OpenSSH refuses that, so tunnel_certificate_set
# refuses them there, naming libssh2 1.11.
port=54360
for kt in ed25519 ecdsa rsa; do
  port=$((port + 1))
  lsql "SELECT tunnel_create('k_$kt', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $CA_PORT, ssh_user => '$me', local_port => $port, key_type => '$kt')" >/dev/null 2>&1
  c=$(sign "k_$kt" "type-$kt" -5m:+1h)
  if out=$(set_cert "k_$kt" "$c" 2>&1); then
    if wait_state "k_$kt" connected 15 >/dev/null && query_ok $port; then
      echo "# $kt certificate: logs in"; works="${works:-} $kt"
    else
      echo "# $kt certificate: stored, but no login: $(error_of "k_$kt")"; broken="${broken:-} $kt"
    fi
  else
    echo "# $kt certificate: refused: $(head -n 1 <<<"$out")"
    refused="${refused:-} $kt"
    check "$kt certificate refused with an error that names libssh2 1.11" \
      grep -q "libssh2 1.11" <<<"$out"
  fi
  lsql "SELECT tunnel_drop('k_$kt')" >/dev/null
done
echo "# certificate types: work:${works:- none}; refused at set:${refused:- none}; stored but failing:${broken:- none}"
check "every certificate type either logs in or is refused at tunnel_certificate_set" test -z "${broken:-}"
if libssh2_11; then
  check "libssh2 1.11: Ed25519, ECDSA and RSA certificates log in" test "${works:-}" = " ed25519 ecdsa rsa"
  kt=ed25519
else
  check "libssh2 1.10: ECDSA certificates log in" test "${works:-}" = " ecdsa"
  kt=ecdsa
fi

# --- a tunnel to the CA-only bastion ---
lsql "SELECT tunnel_create('c', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $CA_PORT, ssh_user => '$me', local_port => 54351, key_type => '$kt')" >/dev/null 2>&1
check "without a certificate the CA-only bastion refuses the tunnel" wait_state c auth_failed 15
check "tunnel_public_key(what => 'key') is the bare public key" \
  grep -qE "^(ssh-ed25519|ecdsa-sha2-nistp256) AAAA[A-Za-z0-9+/]+=* " <<<"$(lsql "SELECT tunnel_public_key('c', what => 'key')")"
c1=$(sign c cert-one -5m:+1h)
set_cert c "$c1"
check "with a valid certificate the tunnel connects" wait_state c connected 15
check "a query through the tunnel works" query_ok 54351
check "the bastion's log shows the certificate's key id" log_has sshd/ca.log 'ID cert-one'
ca_fp=$(ssh-keygen -l -f ca.pub | awk '{print $2}')
check "status shows key id, principals, CA fingerprint, validity" \
  test "$(col c "certificate_key_id || ' ' || certificate_principals::text || ' ' || certificate_ca_fingerprint || ' ' || certificate_validity")" = "cert-one {$me} $ca_fp valid"
check "status shows valid_after and valid_before an hour apart and five minutes" \
  test "$(col c "round(extract(epoch FROM certificate_valid_before - certificate_valid_after) / 60)")" = 65
check "the worker's log names the certificate it logged in with" log_has local.log 'with certificate "cert-one"'
check "tunnel_test: the authenticate row says a certificate was used" \
  grep -q 'with certificate "cert-one" valid until' <<<"$(lsql "SELECT detail FROM tunnel_test('c') WHERE step = 'authenticate'")"

# --- refused by tunnel_certificate_set, changing nothing ---
out=$(set_cert c "ssh-ed25519-cert-v01@openssh.com AAAAnotbase64!" 2>&1)
check "garbage is refused as an invalid certificate" grep -q 'invalid OpenSSH certificate for tunnel "c"' <<<"$out"
ssh-keygen -q -t ed25519 -N '' -f other
ssh-keygen -q -s ca -I other-key -n "$me" -V -5m:+1h other.pub
out=$(set_cert c "$(cat other-cert.pub)" 2>&1)
check "a certificate of another key is refused, naming both fingerprints" \
  bash -c 'grep -q "is not of the key of tunnel \"c\"" <<<"$1" && grep -qF "$2" <<<"$1" && grep -qF "$3" <<<"$1"' _ "$out" \
  "$(ssh-keygen -l -f other.pub | awk '{print $2}')" "$(lsql "SELECT key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'c'")"
out=$(set_cert c "$(sign c host-cert -5m:+1h -h)" 2>&1)
check "a host certificate is refused" grep -q 'is a host certificate' <<<"$out"
check "the refusals changed nothing" test "$(col c certificate_key_id)" = cert-one

# --- renewal while a client holds a connection ---
attempts=$(col c connect_attempts)
psql_via 54351 "SELECT pg_sleep(3)" > sleep.out 2>&1 & sleeper=$!
# The renewal comes while the query runs: the wait ends as soon as the
# private database sees it (a function, so each poll asks again).
sleeping() { test "$(psql -X -h 127.0.0.1 -p $PPORT -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(3)%'")" = 1; }
wait_for 5 sleeping
set_cert c "$(sign c cert-two -5m:+1h)"
# Its client still running once the renewal has committed.
held=no; kill -0 $sleeper 2>/dev/null && held=yes
wait $sleeper; rc=$?
check "a client's query through the tunnel survives the renewal" test "$rc/$held" = 0/yes
check "the session was not dropped" test "$(col c connect_attempts)" = "$attempts"
check "status shows the new certificate" test "$(col c certificate_key_id)" = cert-two
relogin ca.conf
check "the next login uses the new certificate" wait_for 15 log_has sshd/ca.log 'ID cert-two'
check "and the tunnel is connected again" wait_state c connected 15

# --- about to expire: one WARNING ---
set_cert c "$(sign c cert-soon -50m:+5m)"
relogin ca.conf
check "a certificate about to expire logs a WARNING" \
  wait_for 15 log_has local.log 'WARNING:  certificate "cert-soon" of tunnel "c" expires at'
check "status says it expires soon" test "$(col c certificate_validity)" = "expires soon"
wait_state c connected 15 >/dev/null
relogin ca.conf
# Counted once the second login with it is logged: the WARNING, if any,
# is written just after that line, by the same call.
logins_with() { test "$(grep -c "with certificate \"$1\"" local.log)" -ge "$2"; }
warned_once() {
  wait_for 15 logins_with cert-soon 2 && wait_state c connected 15 >/dev/null &&
    test "$(grep -c 'WARNING:  certificate "cert-soon"' local.log)" = 1
}
check "the WARNING is logged once, not at every login" warned_once

# --- expired, not yet valid: auth_failed naming why ---
out=$(set_cert c "$(sign c cert-old -2h:-1h)" 2>&1)
check "setting an expired certificate warns" grep -q 'certificate "cert-old" expired at' <<<"$out"
relogin ca.conf
check "an expired certificate ends in auth_failed" wait_state c auth_failed 15
check "last_error names the expiry" grep -qE 'certificate "cert-old" of key SHA256:[^ ]+ expired at [0-9-]+ [0-9:]+ UTC' <<<"$(error_of c)"
check "status says expired" test "$(col c certificate_validity)" = expired
set_cert c "$(sign c cert-later +1h:+2h)" 2>/dev/null
# A new certificate is tried at once, not after the backoff of a refusal.
check "a certificate not yet valid ends in auth_failed naming its start" \
  wait_for 8 bash -c "grep -q 'certificate \"cert-later\" of key .* is not valid before' <<<\"\$(psql -X -q -h $dir -p $LPORT -d postgres -Atc \"SELECT last_error FROM tunnel_status() WHERE name = 'c'\")\""
# Not offered at all: the bastion sees no connection (sshd penalises one that
# leaves unauthenticated), neither from the worker nor from tunnel_test.
conns=$(grep -c "Connection from" sshd/ca.log)
detail=$(lsql "SELECT detail FROM tunnel_test('c') WHERE step = 'authenticate'")
check "tunnel_test says the same in its authenticate row" grep -q 'is not valid before' <<<"$detail"
check "tunnel_test makes no other step (the bastion is not contacted)" \
  test "$(lsql "SELECT string_agg(step, ',') FROM tunnel_test('c')")" = authenticate
check "no connection reached the bastion while the certificate is not valid" \
  test "$(grep -c "Connection from" sshd/ca.log)" = "$conns"
check "and does not offer an authorized_keys line for a certificate" bash -c '! grep -q "the line:" <<<"$1"' _ "$detail"

# --- a key rotation: the new key gets a certificate of its own ---
set_cert c "$(sign c cert-three -5m:+1h)"
wait_state c connected 15 >/dev/null
lsql "SELECT tunnel_rotate_key('c')" >/dev/null 2>&1
next_fp=$(lsql "SELECT next_key_fingerprint FROM tunnel_ssh.tunnel WHERE name = 'c'")
lsql "SELECT tunnel_public_key('c', what => 'next_key')" > c_next.pub
rm -f c_next-cert.pub
ssh-keygen -q -s ca -I cert-next -n "$me" -V -5m:+1h c_next.pub
out=$(lsql "SELECT tunnel_certificate_set('c', \$c\$$(cat c_next-cert.pub)\$c\$)" 2>&1)
check "a certificate of the pending key is stored for it" \
  grep -q "stored for the pending key $next_fp" <<<"$out"
check "the current key keeps its certificate meanwhile" test "$(col c certificate_key_id)" = cert-three
rotated() { test "$(lsql "SELECT next_key_fingerprint IS NULL AND key_fingerprint = '$next_fp' FROM tunnel_ssh.tunnel WHERE name = 'c'")" = t; }
check "the rotation completes with the new key's certificate" wait_for 30 rotated
check "the bastion saw the new key's certificate" log_has sshd/ca.log 'ID cert-next'
check "the new key's certificate is now the tunnel's" test "$(col c certificate_key_id)" = cert-next

# --- AuthorizedPrincipalsFile, and removing the certificate ---
lsql "SELECT tunnel_create('p', '127.0.0.1', '127.0.0.1', $PPORT, ssh_port => $PR_PORT, ssh_user => '$me', local_port => 54352, key_type => '$kt')" >/dev/null 2>&1
line=$(lsql "SELECT tunnel_public_key('p', what => 'principals')")
check "the principals line carries the authorized_keys line's restrictions" \
  test "$line" = "$(lsql "SELECT regexp_replace(tunnel_public_key('p'), ' [^ ]+ [^ ]+ [^ ]+\$', '')") $me"
echo "$line" > sshd/principals
set_cert p "$(sign p cert-p -5m:+1h)"
check "the principals bastion takes the certificate" wait_state p connected 15
check "a query through it works" query_ok 54352
lsql "SELECT tunnel_certificate_set('p', NULL)" >/dev/null 2>&1
check "status shows no certificate once removed" test -z "$(col p certificate_key_id)"
relogin pr.conf
check "without the certificate, and no authorized_keys line, auth_failed" wait_state p auth_failed 15
lsql "SELECT tunnel_public_key('p')" > sshd/authorized_keys2
# At the worker's next attempt: the ended session was the first failure in
# a row, so the retry after this auth_failed is 10 to 20 s away (measured
# 18 s); the bound is wider than that.
check "with the authorized_keys line the plain key logs in" wait_state p connected 30

suite_end
