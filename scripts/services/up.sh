#!/usr/bin/env bash
# up.sh — start every service the test suite needs: PostgreSQL and an S3-compatible server
# (moto), on 127.0.0.1, installing them when missing. Stdout carries only `export` lines:
#
#   eval "$(bash scripts/services/up.sh)"     # DATABASE_URL, PG*, S3_ENDPOINT, S3_BUCKET, AWS_*
#   cargo nextest run --workspace --all-features
#   bash scripts/services/down.sh
#
# `cargo xtask test` (and so `.ci/run`) does all three itself. State lives under
# $CI_SERVICES_DIR (default /tmp/cachet-services); see the start-*.sh scripts for knobs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$HERE/start-postgres.sh"
bash "$HERE/start-s3.sh"
