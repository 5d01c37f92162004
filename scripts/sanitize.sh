#!/usr/bin/env bash
# Builds the library and tests with AddressSanitizer + UndefinedBehaviorSanitizer (or ThreadSanitizer with
# `--thread`) in build-asan/ (build-tsan/) and runs the tests, PostgreSQL ones included.
#   bash scripts/sanitize.sh [--thread] [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
dir=build-asan
if [ "${1:-}" = "--thread" ]; then
  shift
  flags="-fsanitize=thread"
  dir=build-tsan
fi
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$flags" -DSOURCED_BUILD_BENCH=OFF
cmake --build "$dir" -j "$(nproc)"
cd "$dir"
bash ../scripts/with-postgres.sh ctest --output-on-failure -j 2 -E 'Style|InstalledPackage' "$@"
