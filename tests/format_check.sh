#!/usr/bin/env bash
# Fails when a tracked C++ file is not formatted as .clang-format says. Skipped (77) without clang-format
# or outside a git checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format is not installed: skipped"; exit 77; }
files=$(git ls-files '*.cpp' '*.hpp' 2>/dev/null) || { echo "not a git checkout: skipped"; exit 77; }
# shellcheck disable=SC2086
clang-format --dry-run --Werror $files
