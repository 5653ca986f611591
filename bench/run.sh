#!/usr/bin/env bash
# One command for every benchmark: builds the release binaries, runs the criterion parse
# benchmark, then the harness, which writes bench/REPORT.md. Arguments go to the harness
# (`--smoke` for tiny sizes; `--help` for the rest).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
for a in "$@"; do
  if [ "$a" = "--smoke" ]; then profile=debug; fi
done

if [ "$profile" = release ]; then
  cargo build --release -p ingest -p graphql -p bench
  cargo bench -p ingest --bench parse
  exec target/release/depthbook-bench "$@"
else
  # Smoke: the debug build the tests already made, criterion's one-shot test mode, and a
  # report that goes to target/ so the committed one is left alone.
  # Every storage path once; the harness says "skipped" for a path this machine lacks.
  cargo build -p ingest -p graphql -p bench
  cargo test -q -p ingest --benches
  for storage in postgres timescaledb timescaledb-apache; do
    echo "--- bench smoke on storage path $storage"
    target/debug/depthbook-bench --storage "$storage" \
      --out "target/bench-smoke/REPORT-$storage.md" "$@"
  done
fi
