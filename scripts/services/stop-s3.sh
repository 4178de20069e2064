#!/usr/bin/env bash
# stop-s3.sh — stop the server started by start-s3.sh and delete its dir and data. Idempotent.
# (The installed moto / s3s-fs under ~/.cache/ci-services are kept for the next run.)
set -euo pipefail
BASE=${CI_SERVICES_DIR:-/tmp/cachet-services}
DIR=$BASE/s3
ours() { grep -qE 'moto_server|s3s-fs' "/proc/$1/cmdline" 2>/dev/null; }   # still our server?
pid=$(cat "$DIR/server.pid" 2>/dev/null || true)
if [ -n "$pid" ] && ours "$pid"; then
  kill "$pid" || true
  for _ in $(seq 50); do ours "$pid" || break; sleep 0.1; done   # wait up to 5 s
  if ours "$pid"; then kill -9 "$pid" || true; fi
fi
rm -rf "$DIR" "$BASE/s3.env"
echo "[stop-s3] stopped" >&2
