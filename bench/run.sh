#!/usr/bin/env bash
# Builds and runs the benchmarks. Usage: bash bench/run.sh [sourced_bench options, e.g. --store postgres://…]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
./build/bench/sourced_bench "$@"
