#!/usr/bin/env bash
# Sets everything up and runs the main job: the bank example on the embedded SQLite store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
./build/examples/bank/bank --store "${1:-./bank.db}"
