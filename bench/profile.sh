#!/usr/bin/env bash
# Where ingest's CPU goes, per throughput step: runs the ladder (`--parts throughput`), records
# each step's ingest with perf (call graphs, 10 s inside the step's window) and prints the
# breakdown by task (bench/perf_breakdown.py). Needs perf (Debian: linux-perf) and the release
# build (bench/run.sh makes it). Not part of CI.
#
#   bash bench/profile.sh                 # ladder ×1 and ×16, this build
#   bash bench/profile.sh 1,4 /tmp/old    # another ladder, another build's ingest + graphql
set -euo pipefail
cd "$(dirname "$0")/.."
ladder=${1:-1,16}
bin_dir=$(realpath "${2:-target/release}")
out=$(mktemp -d)

watch() {
  local seen="" pid n
  while true; do
    pid=$(pgrep -f "^$bin_dir/ingest run" | head -1 || true)
    if [ -n "$pid" ] && [[ " $seen " != *" $pid "* ]]; then
      seen="$seen $pid"
      n=$(wc -w <<<"$seen")
      # The step's sync and warm-up take about 14 s here; then record 10 s of its window.
      sleep 14
      perf record -F 2999 --call-graph dwarf,32768 -p "$pid" -o "$out/step$n.data" -- sleep 10 \
        >/dev/null 2>&1 || true
    fi
    sleep 0.3
  done
}

watch &
watcher=$!
trap 'kill $watcher 2>/dev/null || true' EXIT
target/release/depthbook-bench --parts throughput --ladder "$ladder" --bin-dir "$bin_dir" \
  --out "$out/REPORT.md" >"$out/bench.log" 2>&1
kill $watcher 2>/dev/null || true

i=1
for m in ${ladder//,/ }; do
  if [ -f "$out/step$i.data" ]; then
    echo "=== ×$m ($out/step$i.data)"
    perf script -i "$out/step$i.data" 2>/dev/null | python3 bench/perf_breakdown.py
  fi
  i=$((i + 1))
done
# The steps' figures (their CPU includes perf's own overhead).
sed -n '/^| × |/,/^$/p' "$out/REPORT.md"
