#!/usr/bin/env bash
# The CLI's workloads side by side with the library's read of the same store, in one run (issue 14):
#   bash bench/cli.sh [EVENTS] [SOURCED_BINARY]
# Fills a fresh SQLite file with EVENTS (default 100,000) ~400-byte JSON events through one
# `sourced append` from stdin, then reads `$all` with the CLI (JSON lines and text, to /dev/null) and with
# the library (sourced_bench --only memory, same file). The reads run twice: with the events as the CLI
# recorded them (ContentType::json: printed unparsed) and again after marking them unknown in the file, as
# events stored before content types are (each payload checked as JSON on every read), for an A/B in one
# run. Run it under the build lock in this sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
cli=${2:-./build/tools/sourced/sourced}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$n" > "$dir/in.jsonl" <<'PY'
import json, sys
pad = "x" * 250
for i in range(int(sys.argv[1])):
    print(json.dumps({"type": "Deposited", "data": {"account": i % 1000, "amount": i, "note": pad},
                      "metadata": {"user": "bench", "seq": i}}, separators=(",", ":")))
PY
rate() { python3 -c "import sys; n, s = int(sys.argv[1]), float(sys.argv[2]); print(f'{n / s:,.0f} ev/s ({s:.2f} s)')" "$@"; }
timed() {  # prints the seconds the command took
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  python3 -c "print($t1 - $t0)"
}
store="$dir/bench.db"
echo "sourced CLI ($cli), $n events of ~$(($(wc -c < "$dir/in.jsonl") / n)) bytes per input line, SQLite"
s=$(timed sh -c "'$cli' --store '$store' append bench-1 < '$dir/in.jsonl' > /dev/null")
echo "| sourced append (stdin, one process) | $(rate "$n" "$s") |"
reads() {
  s=$(timed sh -c "'$cli' --store '$store' read '\$all' > /dev/null")
  echo "| sourced read \$all (JSON lines), $1 | $(rate "$n" "$s") |"
  s=$(timed sh -c "'$cli' --store '$store' read bench-1 > /dev/null")
  echo "| sourced read one stream (JSON lines), $1 | $(rate "$n" "$s") |"
}
reads "events json"
s=$(timed sh -c "'$cli' --store '$store' read '\$all' --format text > /dev/null")
echo "| sourced read \$all --format text | $(rate "$n" "$s") |"
python3 -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('UPDATE events SET content_type = 0'); c.commit()" "$store"
reads "events unknown (as stored before content types)"
if [ -x ./build/bench/sourced_bench ]; then
  ./build/bench/sourced_bench --store "$store" --only memory --memory-events "$n" | grep '^|' | sed 's/^| read/| library read/'
fi
