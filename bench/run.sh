#!/usr/bin/env bash
# Builds and runs the benchmarks.
#   bash bench/run.sh                      # SQLite: a fresh temporary file, durable settings
#   bash bench/run.sh --postgres           # PostgreSQL: a throwaway local server (scripts/with-postgres.sh),
#                                          # or the server in SOURCED_TEST_PG when that is set
#   bash bench/run.sh --store URL [...]    # any store; other options go to sourced_bench (see --help)
#   bash bench/run.sh --cli [EVENTS]       # the sourced CLI beside the library's read (bench/cli.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
if [ "${1:-}" = "--cli" ]; then  # the CLI's workloads beside the library's read (bench/cli.sh [EVENTS])
  shift
  exec bash bench/cli.sh "$@"
fi
if [ "${1:-}" = "--postgres" ]; then
  shift
  exec bash scripts/with-postgres.sh sh -c \
    'exec ./build/bench/sourced_bench --store "${SOURCED_TEST_PG}$(case "$SOURCED_TEST_PG" in *\?*) echo "&";; *) echo "?";; esac)schema=sourced_bench_$$" "$@"' \
    sourced_bench "$@"
fi
exec ./build/bench/sourced_bench "$@"
