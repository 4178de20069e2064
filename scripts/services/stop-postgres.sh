#!/usr/bin/env bash
# stop-postgres.sh — stop the cluster made by start-postgres.sh and delete it. Idempotent.
set -euo pipefail
BASE=${CI_SERVICES_DIR:-/tmp/cachet-services}
DIR=$BASE/postgres
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)}
if [ -d "$DIR/data" ] && [ -n "$PGBIN" ]; then
  RUN_AS=()
  [ "$(id -u)" != 0 ] || RUN_AS=(runuser -u "$(stat -c %U "$DIR/data")" --)  # the cluster's owner
  # fast = roll back open transactions, disconnect clients, shut down cleanly
  "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 \
    || "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
fi
rm -rf "$DIR" "$BASE/postgres.env"
echo "[stop-postgres] stopped" >&2
