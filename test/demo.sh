#!/usr/bin/env bash
# The main job, shown: a private database reachable only through an SSH
# bastion, queried from the local server through postgres_fdw over a tunnel.
set -euo pipefail
dir=${1:?work directory}
cd "$dir"
. "$(dirname "$0")/lib.sh"
say() { printf '\n== %s\n' "$*"; }

echo "# starting a throwaway local server with tunnel_ssh (127.0.0.1:$LPORT), a bastion (sshd on 127.0.0.1:$SPORT) and a private database (127.0.0.1:$PPORT)"
harness_start

psql -X -q -h 127.0.0.1 -p $PPORT -d postgres -c \
  "CREATE TABLE orders AS SELECT g AS id, (g % 7) AS customer, g * 1.5 AS amount FROM generate_series(1, 1000) g;"

say "Local server: CREATE EXTENSION tunnel_ssh, then tunnel_create"
lsql "CREATE EXTENSION tunnel_ssh; CREATE EXTENSION postgres_fdw;"
line=$(lsql "SELECT tunnel_create('private_db', ssh_host => '127.0.0.1', ssh_port => $SPORT, ssh_user => '$(id -un)', remote_host => '127.0.0.1', remote_port => $PPORT, local_port => 54321)")
echo "$line"

say "Bastion: add that line to the service account's authorized_keys"
echo "$line" >> sshd/authorized_keys
wait_state private_db connected 20

say "Local server: a foreign server over the tunnel's loopback port"
lsql "CREATE SERVER private_db FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '54321', dbname 'postgres');
      CREATE USER MAPPING FOR CURRENT_USER SERVER private_db OPTIONS (user '$(id -un)');
      IMPORT FOREIGN SCHEMA public LIMIT TO (orders) FROM SERVER private_db INTO public;"
psql -X -h "$dir" -p $LPORT -d postgres -c \
  "SELECT customer, count(*), sum(amount) FROM orders GROUP BY customer ORDER BY customer;"

say "tunnel_status()"
psql -X -h "$dir" -p $LPORT -d postgres -x -c "SELECT * FROM tunnel_status();"
say "Done; everything started here is now stopped."
