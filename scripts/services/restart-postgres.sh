#!/usr/bin/env bash
# restart-postgres.sh — restart the cluster made by start-postgres.sh in place (same port,
# same data): what the fault tests use to take PostgreSQL away in the middle of a workload.
#
#   bash restart-postgres.sh [DOWN_SECONDS]   # stop (fast: clients are disconnected), stay
#                                             # down DOWN_SECONDS (default 0), start again
set -euo pipefail
BASE=${CI_SERVICES_DIR:-/tmp/cachet-services}
DIR=$BASE/postgres
DOWN=${1:-0}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)}
[ -d "$DIR/data" ] && [ -n "$PGBIN" ] || { echo "[restart-postgres] no cluster under $DIR" >&2; exit 1; }
RUN_AS=()
[ "$(id -u)" != 0 ] || RUN_AS=(runuser -u "$(stat -c %U "$DIR/data")" --)
"${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
sleep "$DOWN"
# pg_ctl start without -o reuses nothing: pass the options the cluster was started with
# (postmaster.opts keeps them).
OPTS=$(sed -e 's/^[^ ]* //' "$DIR/data/postmaster.opts")
eval "set -- $OPTS"
"${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 -o "$*" start >/dev/null
echo "[restart-postgres] restarted after ${DOWN}s down" >&2
