#!/usr/bin/env bash
# start-postgres.sh — throwaway PostgreSQL for tests, on 127.0.0.1:<free port>.
#
#   eval "$(bash start-postgres.sh)"    # exports DATABASE_URL, PGHOST, PGPORT, PGUSER, PGDATABASE
#   ...run tests...
#   bash stop-postgres.sh               # stops the server and deletes the cluster
#
# Idempotent: when the cluster under $CI_SERVICES_DIR/postgres is already up it
# only prints its env again. Stdout carries only `export` lines; logs go to stderr.
# The env is also written to $CI_SERVICES_DIR/postgres.env (for `source`).
#
# Knobs: CI_SERVICES_DIR (default /tmp/cachet-services; keep it free of spaces),
#        PG_PORT (default: a free port), PG_DB (default: test), PG_TLS (default 1: TLS with a
#        self-signed certificate; clients with TLS support use it under sslmode=prefer),
#        PG_OS_USER (OS user that owns the cluster when run as root; default: postgres),
#        PGBIN (default: newest /usr/lib/postgresql/*/bin).
set -euo pipefail

BASE=${CI_SERVICES_DIR:-/tmp/cachet-services}
DIR=$BASE/postgres
DB=${PG_DB:-test}
log() { echo "[start-postgres] $*" >&2; }
apt_install() {
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

free_port() {  # a port nothing listens on right now (racy, hence the retry loop below)
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    local p; while :; do p=$((20000 + RANDOM % 40000)); (: </dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }; done
  fi
}
port_in_use() { (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null; }   # something already listens there?
find_pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true; }  # || true: pipefail

PGBIN=${PGBIN:-$(find_pgbin)}
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  # Not installed: Debian's package (~75 s on a fresh bookworm, 2 cores).
  # Skip the package's own 'main' cluster on :5432 — we make our own.
  log "PostgreSQL not found; installing from apt"
  mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/00-ci-no-main.conf
  apt_install postgresql
  PGBIN=$(find_pgbin)
fi

# PostgreSQL refuses to run as root ("root" execution of the PostgreSQL server
# is not permitted): run the server tools as an unprivileged user.
RUN_AS=()
if [ "$(id -u)" = 0 ]; then
  OS_USER=${PG_OS_USER:-postgres}
  id -u "$OS_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$OS_USER"
  RUN_AS=(runuser -u "$OS_USER" --)
fi
as_pg() { "${RUN_AS[@]}" "$@"; }

if [ -f "$BASE/postgres.env" ] && [ -d "$DIR/data" ] && as_pg "$PGBIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  log "already running"
  cat "$BASE/postgres.env"
  exit 0
fi

# Leftovers from an earlier run: stop whatever may still run there, then start clean.
if [ -d "$DIR/data" ]; then as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true; fi
rm -rf "$DIR" "$BASE/postgres.env"
[ -d "$BASE" ] || install -d -m 755 "$BASE"   # not `mktemp -d` (0700): the server user must get through it
mkdir -p "$DIR"
if [ ${#RUN_AS[@]} -gt 0 ]; then
  chown "$OS_USER": "$DIR"
  as_pg test -w "$DIR" || { log "user $OS_USER cannot reach $DIR (a parent dir is 0700?)"; exit 1; }
fi

# Trust auth (loopback only), no fsync: a test server, not a durable one.
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --no-locale --no-sync \
  >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }

# TLS with a throwaway self-signed certificate, so that clients built with TLS support test it
# (they use it by default: sslmode=prefer). PG_TLS=0 turns it off.
TLS_OPTS=
if [ "${PG_TLS:-1}" != 0 ]; then
  command -v openssl >/dev/null || apt_install openssl
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
    -keyout "$DIR/data/server.key" -out "$DIR/data/server.crt" >/dev/null 2>&1 \
    || { log "could not make a TLS certificate with openssl"; exit 1; }
  chmod 600 "$DIR/data/server.key"
  if [ ${#RUN_AS[@]} -gt 0 ]; then chown "$OS_USER": "$DIR/data/server.key" "$DIR/data/server.crt"; fi
  TLS_OPTS="-c ssl=on"
fi

up=
for attempt in 1 2 3 4 5; do
  PORT=${PG_PORT:-$(free_port)}
  if port_in_use "$PORT"; then
    if [ -n "${PG_PORT:-}" ]; then log "port $PORT is already in use"; exit 1; fi
    continue
  fi
  # -k: the unix socket goes in $DIR too (not /var/run/postgresql, which may not exist)
  if as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 -o \
      "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 $TLS_OPTS" \
      start >/dev/null; then
    up=1; break
  fi
  tail -n 5 "$DIR/server.log" >&2 || true
  if [ -n "${PG_PORT:-}" ] || [ "$attempt" = 5 ]; then log "could not start"; exit 1; fi
  log "port $PORT taken? retrying"
done

[ -n "$up" ] || { log "could not start"; exit 1; }
"$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"

cat > "$BASE/postgres.env" <<ENV
export DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/$DB
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=$DB
ENV
log "up: postgres://postgres@127.0.0.1:$PORT/$DB (data $DIR/data, log $DIR/server.log)"
cat "$BASE/postgres.env"
