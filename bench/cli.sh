#!/usr/bin/env bash
# The CLI's workloads side by side with the library's read of the same store, in one run (issue 14):
#   bash bench/cli.sh [EVENTS] [SOURCED_BINARY]
# Fills a fresh SQLite file with EVENTS (default 100,000) ~400-byte JSON events through one
# `sourced append` from stdin, then reads `$all` with the CLI (JSON lines and text, to /dev/null) and with
# the library (sourced_bench --only memory, same file). The reads run twice: with the events as the CLI
# recorded them (ContentType::json: printed unparsed) and again after marking them unknown in the file, as
# events stored before content types are (each payload checked as JSON on every read), for an A/B in one
# run. Then 100 `sourced append` processes of 1,000 events each (process start, open and close included),
# and `read '$all' --follow` while the library appends (sourced_bench, one writer, batches of 1,000) for
# 2 s beside it. SOURCED_BENCH names another sourced_bench binary. Run it under the build lock here.
# Before/after figures: run it on both binaries in one lock hold (bash bench/cli.sh N OLD; ... N NEW).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
cli=${2:-./build/tools/sourced/sourced}
bench=${SOURCED_BENCH:-./build/bench/sourced_bench}
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
# The machine is shared: a single run of a 0.1 s command varies by ±30 %. Reads (and the library's read)
# take the best of 3 runs, the stdin append the best of 2 (each into a fresh file).
best() {  # best RUNS CMD...: the fewest seconds of RUNS runs
  local runs=$1 b="" s
  shift
  for _ in $(seq 1 "$runs"); do
    s=$(timed "$@")
    b=$(python3 -c "print(min(float('$s'), float('${b:-$s}')))")
  done
  echo "$b"
}
store="$dir/bench.db"
echo "sourced CLI ($cli), $n events of ~$(($(wc -c < "$dir/in.jsonl") / n)) bytes per input line, SQLite"
s=$(best 2 sh -c "rm -f '$store'*; '$cli' --store '$store' append bench-1 < '$dir/in.jsonl' > /dev/null")
echo "| sourced append (stdin, one process) | $(rate "$n" "$s") |"
reads() {
  s=$(best 3 sh -c "'$cli' --store '$store' read '\$all' > /dev/null")
  echo "| sourced read \$all (JSON lines), $1 | $(rate "$n" "$s") |"
  s=$(best 3 sh -c "'$cli' --store '$store' read bench-1 > /dev/null")
  echo "| sourced read one stream (JSON lines), $1 | $(rate "$n" "$s") |"
}
reads "events json"
s=$(best 3 sh -c "'$cli' --store '$store' read '\$all' --format text > /dev/null")
echo "| sourced read \$all --format text | $(rate "$n" "$s") |"
python3 -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('UPDATE events SET content_type = 0'); c.commit()" "$store"
reads "events unknown (as stored before content types)"
if [ -x "$bench" ]; then
  for _ in 1 2 3; do "$bench" --store "$store" --only memory --memory-events "$n" | grep '^| read'; done |
    sort -t'|' -k3 -n -r | head -1 | sed 's/^| read/| library read (best of 3)/'
fi

# 100 processes of 1,000 events each, one after the other (process start, store open and close included).
head -1000 "$dir/in.jsonl" > "$dir/k1.jsonl"
many="$dir/many.db"
"$cli" --store "$many" init > /dev/null
s=$(timed sh -c "for i in \$(seq 1 100); do '$cli' --store '$many' append s-\$i < '$dir/k1.jsonl' > /dev/null || exit 1; done")
echo "| sourced append, 100 processes x 1,000 events (stdin) | $(rate 100000 "$s") |"
s=$(timed sh -c "for i in \$(seq 1 100); do '$cli' --store '$many' stats > /dev/null || exit 1; done")
echo "| sourced stats, 100 processes (start, read-only open, exit) | $(python3 -c "print(f'{$s * 10:.1f} ms per process')") |"

# read --follow while the library appends (one writer, batches of 1,000) for 2 s: the follower's rate while
# it runs and how long after the last commit it prints the last event.
if [ -x "$bench" ]; then
  live="$dir/live.db"
  "$cli" --store "$live" init > /dev/null
  "$cli" --store "$live" read '$all' --follow > "$dir/follow.out" 2> /dev/null &
  follower=$!
  sleep 0.3
  t0=$(date +%s.%N)
  lib=$("$bench" --store "$live" --only append --writers 1 --batch 1000 --seconds 2 | grep '^| append')
  t1=$(date +%s.%N)
  total=$("$cli" --store "$live" stats | python3 -c "import json, sys; print(json.load(sys.stdin)['head_position'])")
  for _ in $(seq 1 200); do
    [ "$(wc -l < "$dir/follow.out")" -ge "$total" ] && break
    sleep 0.05
  done
  t2=$(date +%s.%N)
  kill "$follower" 2> /dev/null || true
  wait "$follower" 2> /dev/null || true
  printed=$(wc -l < "$dir/follow.out")
  echo "| library $lib" | sed 's/^| library | append/| library append (while followed)/'
  python3 -c "
n, total, t0, t1, t2 = $printed, $total, $t0, $t1, $t2
print(f'| sourced read \$all --follow: {n:,} of {total:,} events, {total / (t1 - t0):,.0f} appended ev/s, printed at {n / (t2 - t0):,.0f} ev/s, last one {1000 * (t2 - t1):.0f} ms after the appends ended |')"
fi
