# tunnel_ssh: PGXS build
MODULE_big = tunnel_ssh
OBJS = \
	src/tunnel_ssh.o \
	src/api.o \
	src/api_cert.o \
	src/api_forward.o \
	src/api_keys.o \
	src/api_test.o \
	src/api_tunnel.o \
	src/catalog.o \
	src/cert.o \
	src/channel.o \
	src/clients.o \
	src/conn.o \
	src/conn_io.o \
	src/connect.o \
	src/dial.o \
	src/forwards.o \
	src/hostkeys.o \
	src/keepalive.o \
	src/keycheck.o \
	src/keys.o \
	src/lanes.o \
	src/listener.o \
	src/methods.o \
	src/peer.o \
	src/pgprobe.o \
	src/pool.o \
	src/probechain.o \
	src/proxy.o \
	src/sendturn.o \
	src/settings.o \
	src/stats.o \
	src/status.o \
	src/validate.o \
	src/watch.o \
	src/worker.o

EXTENSION = tunnel_ssh
DATA = $(wildcard sql/tunnel_ssh--*.sql)
PGFILEDESC = "tunnel_ssh - SSH tunnels to private databases"

REGRESS = $(patsubst sql/%.sql,%,$(filter-out sql/tunnel_ssh--%,$(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --outputdir=results

# libssh2 1.10 crypts block by block; src/keystream.c serves it AES-CTR
# computed in bulk (tunnel_ssh.bulk_keystream).  Never built for 1.11+.
ifneq ($(shell pkg-config --atleast-version=1.11 libssh2 && echo new),new)
OBJS += src/keystream.o
endif

PG_CONFIG ?= pg_config
SSH_CFLAGS := $(shell pkg-config --cflags libssh2 libcrypto libssl)
SSH_LIBS := $(shell pkg-config --libs libssh2 libcrypto libssl)
PG_CPPFLAGS = $(SSH_CFLAGS)
SHLIB_LINK = $(SSH_LIBS)

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The benchmark against ssh -L and a direct connection (as root; see bench/);
# BENCH_PLATFORM=trixie runs it in that Debian release's chroot.
.PHONY: bench
bench:
	bash bench/run.sh

# A target that drops SYNs beside a healthy one, tunnel_ssh against ssh -L
# (as root; bench/dark.sh).
.PHONY: bench-dark
bench-dark:
	bash bench/run.sh dark

# BENCH_CONNECTIONS (500) clients held on one tunnel: tunnel_connections()'s
# time, the worker's memory per connection, and syscalls_c1 (as root).
.PHONY: bench-connections
bench-connections:
	bash bench/run.sh connections

# libFuzzer targets for the parsers of untrusted text (as root on Debian 12,
# installs clang if missing): FUZZ_SECONDS per target, default 60; see
# test/fuzz/README.md.
.PHONY: fuzz
fuzz:
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) bash test/fuzz/run.sh $(FUZZ_TARGETS)

# The e2e suite with the local server under valgrind memcheck (as root);
# fails on any error or definite leak with a tunnel_ssh frame.
# VALGRIND_SUITES to choose the suites (default e2e).
.PHONY: valgrind
valgrind:
	bash test/valgrind.sh $(VALGRIND_SUITES)
