#!/usr/bin/env bash
# Sets everything up and runs every test, the PostgreSQL ones against a throwaway local server
# (scripts/with-postgres.sh; set SOURCED_TEST_PG to use another server instead).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd build
bash ../scripts/with-postgres.sh ctest --output-on-failure -j 2 "$@"
