#!/usr/bin/env bash
# Writes the hand-made seed inputs, test/fuzz/corpus/<target>/seed-*, that
# run.sh always keeps when it merges new inputs into the corpus.  The keys
# are throwaway keys made here for the fuzzer; nothing ever authenticates
# with them.  Run once; re-running replaces the seeds (new keys).
set -euo pipefail
cd "$(dirname "$0")"
c=corpus
mkdir -p $c/host $c/user $c/port_range $c/fingerprint $c/private_key
seed() { printf '%s' "$3" > "$c/$1/seed-$2"; }

n=0
for h in 127.0.0.1 ::1 db.internal bastion-1.example.com. '[::1]' 1.2.3 0x7f000001 \
         a-.b -a.b 'fe80::1%eth0' 999.1.1.1 ::ffff:1.2.3.4 host:22 a..b . 1.2.3.4a \
         "$(printf 'a%.0s' {1..63}).com" "$(printf 'a%.0s' {1..64}).com" 'db host' 'Ä.example'; do
  seed host $((n++)) "$h"
done
n=0
for u in tunnel_test root -oProxyCommand=x user@host 'a b' a:b a/b \
         "$(printf 'u%.0s' {1..32})" "$(printf 'u%.0s' {1..33})" main k_rsa 'tab	x' "o'brien" 'ü'; do
  seed user $((n++)) "$u"
done
n=0
for r in 1024-65535 40000-40100 1023-2000 5-4 65535-65535 01024-2000 100000-2 - 1024- \
         a-b 2000-1999 ' 1024-2000' 1024-2000- 99999-99999 +1024-2000; do
  seed port_range $((n++)) "$r"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ssh-keygen -q -t ed25519 -N '' -C '' -f "$tmp/host"
fp=$(ssh-keygen -l -f "$tmp/host.pub" | awk '{print $2}')
seed fingerprint 0 "$fp"
seed fingerprint 1 "${fp%?}B"                      # last character cannot end a digest
seed fingerprint 2 "SHA256:nope"
seed fingerprint 3 "${fp}="
seed fingerprint 4 "MD5:$(ssh-keygen -l -E md5 -f "$tmp/host.pub" | awk '{print $2}' | cut -d: -f2-)"
head -c 32 /dev/urandom > $c/fingerprint/seed-5

k=$c/private_key
o() { openssl "$@" 2>/dev/null; }
o genpkey -algorithm ed25519 -out $k/seed-ed25519
o genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $k/seed-ecdsa
o genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $k/seed-rsa
o ec -in $k/seed-ecdsa -out $k/seed-ecdsa-traditional
o ec -in $k/seed-ecdsa -conv_form compressed -out $k/seed-ecdsa-compressed
o ec -in $k/seed-ecdsa -param_enc explicit -out $k/seed-ecdsa-explicit
o rsa -in $k/seed-rsa -traditional -out $k/seed-rsa-traditional
o genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out $k/seed-ecdsa-p384
o genpkey -algorithm ed448 -out $k/seed-ed448
o genpkey -algorithm x25519 -out $k/seed-x25519
o genpkey -genparam -algorithm DSA -pkeyopt dsa_paramgen_bits:1024 -out "$tmp/dsa.param"
o genpkey -paramfile "$tmp/dsa.param" -out $k/seed-dsa
o pkcs8 -topk8 -in $k/seed-ed25519 -v2 aes-256-cbc -passout pass:x -out $k/seed-encrypted
o rsa -in $k/seed-rsa -aes128 -passout pass:x -traditional -out $k/seed-rsa-encrypted
o pkey -in $k/seed-ed25519 -pubout -out $k/seed-public-only
ssh-keygen -q -t ed25519 -N '' -C '' -f "$tmp/openssh"
cp "$tmp/openssh" $k/seed-openssh-format
# DER forms behind the fuzz target's 'D'/'E'/'R' prefix
for t in ed25519 ecdsa rsa ecdsa-p384 ecdsa-explicit; do
  { printf D; o pkcs8 -topk8 -nocrypt -in $k/seed-$t -outform DER; } > $k/seed-der-$t
done
{ printf E; o ec -in $k/seed-ecdsa -outform DER; } > $k/seed-der-ec-traditional
{ printf R; o rsa -in $k/seed-rsa -traditional -outform DER; } > $k/seed-der-rsa-traditional
# RSA keys OpenSSL reads without checking them: a modulus at our 16384-bit
# limit with its top bit set, one just past it, a negative one, e = 0.
rsa_der() {  # n e
  cat > "$tmp/rsa.cnf" <<C
asn1 = SEQUENCE:k
[k]
v = INTEGER:0
n = INTEGER:$1
e = INTEGER:$2
d = INTEGER:3
p = INTEGER:5
q = INTEGER:7
dp = INTEGER:1
dq = INTEGER:1
qi = INTEGER:1
C
  o asn1parse -genconf "$tmp/rsa.cnf" -noout -out "$tmp/rsa.der"
  printf R; cat "$tmp/rsa.der"
}
big=0x$(printf 'ff%.0s' {1..2048})
rsa_der "$big" 65537 > $k/seed-der-rsa-16384
rsa_der "0x01$(printf '00%.0s' {1..2048})" 65537 > $k/seed-der-rsa-16392
rsa_der -0x0123456789abcdef 65537 > $k/seed-der-rsa-negative
rsa_der 0x00c0ffee 0 > $k/seed-der-rsa-e0
ls $c/* | wc -l
