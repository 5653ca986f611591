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
  # `--workspace --all-targets` resolves the features `cargo test --workspace` did, so what the
  # tests built is reused. A narrower selection (`-p ingest`) resolves others (dev-dependencies
  # add features, tokio's test-util among them) and rebuilds most of the tree: 14 minutes on
  # a slow 2-core machine.
  # Every storage path once; the harness says "skipped" for a path this machine lacks.
  cargo build -q --workspace --all-targets
  cargo test -q --workspace --bench parse
  for storage in postgres timescaledb timescaledb-apache; do
    echo "--- bench smoke on storage path $storage"
    target/debug/depthbook-bench --storage "$storage" \
      --out "target/bench-smoke/REPORT-$storage.md" "$@"
  done
fi
