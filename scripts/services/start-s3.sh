#!/usr/bin/env bash
# start-s3.sh — throwaway S3-compatible server for tests on 127.0.0.1:<free port>,
# with one empty bucket made.
#
#   eval "$(bash start-s3.sh)"    # exports S3_ENDPOINT, S3_BUCKET, AWS_* (see the end)
#   bash stop-s3.sh
#
# S3_SERVER=moto (default): moto_server from PyPI, in memory, accepts any credentials.
#   Installs in ~40 s (pip); starts in ~1-4 s.
# S3_SERVER=s3s-fs: the s3s-fs binary from crates.io, files on disk, checks SigV4
#   signatures. Compiles in ~4-10 min (cargo install) the first time; starts in 0.2 s.
#
# Idempotent: when the server under $CI_SERVICES_DIR/s3 answers it only prints its env
# again. Stdout carries only `export` lines; logs go to stderr. The env is also written
# to $CI_SERVICES_DIR/s3.env.
# Knobs: CI_SERVICES_DIR (default /tmp/cachet-services), S3_PORT (default: a free port),
#        S3_BUCKET (default: test-bucket), S3_SERVER (moto | s3s-fs),
#        CI_TOOLS_DIR (default ~/.cache/ci-services: installs kept between runs on one machine),
#        MOTO_VERSION (default 5.2.5), S3S_VERSION (default 0.14.1: newer ones need rustc >= 1.96).
set -euo pipefail

BASE=${CI_SERVICES_DIR:-/tmp/cachet-services}
DIR=$BASE/s3
BUCKET=${S3_BUCKET:-test-bucket}
SERVER=${S3_SERVER:-moto}
TOOLS=${CI_TOOLS_DIR:-$HOME/.cache/ci-services}
MOTO_VERSION=${MOTO_VERSION:-5.2.5}
S3S_VERSION=${S3S_VERSION:-0.14.1}
KEY=test SECRET=test
log() { echo "[start-s3] $*" >&2; }
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    local p; while :; do p=$((20000 + RANDOM % 40000)); (: </dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }; done
  fi
}
port_in_use() { (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null; }   # something already listens there?
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" || true; }
apt_install() {
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

command -v curl >/dev/null || apt_install curl ca-certificates

case "$SERVER" in
moto)
  VENV=$TOOLS/moto-venv
  if [ ! -x "$VENV/bin/moto_server" ] || [ "$(cat "$VENV/.ci-version" 2>/dev/null)" != "$MOTO_VERSION" ]; then
    command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv python3-pip
    # moto[s3] + flask + flask-cors is all moto_server needs for S3: ~40 s, 140 MB.
    # ('moto[server]' pulls the deps of every AWS service: ~2 min, 320 MB.)
    log "installing moto $MOTO_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "moto[s3]==$MOTO_VERSION" flask flask-cors >&2
    echo "$MOTO_VERSION" > "$VENV/.ci-version"
  fi
  ;;
s3s-fs)
  S3S_ROOT=$TOOLS/s3s-fs
  if [ ! -x "$S3S_ROOT/bin/s3s-fs" ] || [ "$(cat "$S3S_ROOT/.ci-version" 2>/dev/null)" != "$S3S_VERSION" ]; then
    command -v cargo >/dev/null || { log "s3s-fs needs cargo"; exit 1; }
    log "cargo install s3s-fs $S3S_VERSION into $S3S_ROOT (minutes)"
    cargo install -q "s3s-fs@$S3S_VERSION" --features binary --locked --root "$S3S_ROOT" >&2
    echo "$S3S_VERSION" > "$S3S_ROOT/.ci-version"
  fi
  ;;
*) log "unknown S3_SERVER=$SERVER (moto | s3s-fs)"; exit 1 ;;
esac

if [ -f "$BASE/s3.env" ] && [ -f "$DIR/port" ] && [ "$(cat "$DIR/server" 2>/dev/null)" = "$SERVER" ] && \
   [ "$(http_code "http://127.0.0.1:$(cat "$DIR/port")/")" != 000 ]; then
  log "already running"
  cat "$BASE/s3.env"
  exit 0
fi

# Leftovers from an earlier run (kill only if that pid is still one of our servers)
if [ -f "$DIR/server.pid" ]; then
  pid=$(cat "$DIR/server.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && grep -qE 'moto_server|s3s-fs' "/proc/$pid/cmdline" 2>/dev/null; then kill "$pid" || true; fi
fi
rm -rf "$DIR" "$BASE/s3.env"
mkdir -p "$DIR/data"
echo "$SERVER" > "$DIR/server"

up=
for attempt in 1 2 3 4 5; do
  PORT=${S3_PORT:-$(free_port)}
  if port_in_use "$PORT"; then
    if [ -n "${S3_PORT:-}" ]; then log "port $PORT is already in use"; exit 1; fi
    continue
  fi
  if [ "$SERVER" = moto ]; then
    cmd=("$TOOLS/moto-venv/bin/moto_server" -H 127.0.0.1 -p "$PORT")
  else
    cmd=("$TOOLS/s3s-fs/bin/s3s-fs" --host 127.0.0.1 --port "$PORT" --access-key "$KEY" --secret-key "$SECRET" "$DIR/data")
  fi
  # All fds redirected: a server left holding CI's stdout/stderr can make the CI runner wait for it.
  nohup "${cmd[@]}" </dev/null >"$DIR/server.log" 2>&1 &
  pid=$!
  echo "$pid" > "$DIR/server.pid"
  for _ in $(seq 300); do   # up to 30 s
    kill -0 "$pid" 2>/dev/null || break           # died (port taken?)
    if [ "$(http_code "http://127.0.0.1:$PORT/")" != 000 ]; then up=1; break 2; fi
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  tail -n 5 "$DIR/server.log" >&2 || true
  if [ -n "${S3_PORT:-}" ] || [ "$attempt" = 5 ]; then log "could not start"; exit 1; fi
  log "port $PORT taken? retrying"
done
[ -n "$up" ] || { log "could not start"; exit 1; }
echo "$PORT" > "$DIR/port"

# Make the bucket (CreateBucket). moto ignores signatures; s3s-fs wants SigV4, which curl
# (>= 7.75) signs — but Debian 12's curl 7.88 omits x-amz-content-sha256, which s3s-fs
# requires, so send it (SHA-256 of the empty body) and curl signs it too.
code=$(http_code -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" --user "$KEY:$SECRET" \
  -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
  "http://127.0.0.1:$PORT/$BUCKET")
if [ "$code" != 200 ]; then
  log "bucket creation failed (HTTP $code); stopping the server"
  kill "$pid" 2>/dev/null || true
  exit 1
fi

# AWS_ENDPOINT_URL / AWS_ALLOW_HTTP / AWS_BUCKET / AWS_REGION / keys are exactly what
# object_store's AmazonS3Builder::from_env() reads; AWS_ENDPOINT_URL is also honoured by
# the AWS SDKs and CLI. Path-style addressing is object_store's default.
cat > "$BASE/s3.env" <<ENV
export S3_ENDPOINT=http://127.0.0.1:$PORT S3_BUCKET=$BUCKET
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ALLOW_HTTP=true AWS_BUCKET=$BUCKET
export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
ENV
log "up: $SERVER on http://127.0.0.1:$PORT, bucket $BUCKET (pid $pid, log $DIR/server.log)"
cat "$BASE/s3.env"
