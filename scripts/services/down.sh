#!/usr/bin/env bash
# down.sh — stop what up.sh started and delete its state. Idempotent.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
status=0
bash "$HERE/stop-s3.sh" || status=$?
bash "$HERE/stop-postgres.sh" || status=$?
exit $status
