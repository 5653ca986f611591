#!/usr/bin/env bash
# depthbook operations. Today: the local run without Docker (a private PostgreSQL in ./data from
# the system's binaries, with the schema migrated). Collection, the API, deploy, scale, backup
# and the rest arrive with their issues; until then they are not offered.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")" && pwd)
DATA=${DEPTHBOOK_DATA:-$ROOT/data}
PG_PORT=${PGEMBED_PORT:-54329}
PROFILE=${DEPTHBOOK_PROFILE:-release}

usage() {
  cat <<USAGE
usage: manage.sh COMMAND

  up        start a private PostgreSQL in $DATA/pg (port $PG_PORT) and migrate it
  status    show whether it runs, its URL and the schema's migration plan
  down      stop it (the data stays in $DATA)

environment: DEPTHBOOK_DATA (data dir), PGEMBED_PORT (port), DEPTHBOOK_PROFILE (release|dev)
USAGE
}

die() { echo "manage.sh: $*" >&2; exit 1; }

bin() {
  local dir=release
  [ "$PROFILE" = dev ] && dir=debug
  echo "$ROOT/target/$dir/$1"
}

build() {
  local flag=(--release)
  [ "$PROFILE" = dev ] && flag=()
  (cd "$ROOT" && cargo build -q "${flag[@]}" -p pgembed -p ingest) || die "build failed"
}

pg_running() {
  [ -f "$DATA/pgembed.pid" ] && kill -0 "$(cat "$DATA/pgembed.pid")" 2>/dev/null
}

cmd_up() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
  build
  mkdir -p "$DATA"
  if pg_running; then
    echo "PostgreSQL already runs (pid $(cat "$DATA/pgembed.pid"))"
  else
    : >"$DATA/database_url"
    "$(bin pgembed)" --dir "$DATA/pg" --port "$PG_PORT" >"$DATA/database_url" 2>"$DATA/pgembed.log" &
    echo $! >"$DATA/pgembed.pid"
    for _ in $(seq 600); do
      [ -s "$DATA/database_url" ] && break
      kill -0 "$(cat "$DATA/pgembed.pid")" 2>/dev/null || { cat "$DATA/pgembed.log" >&2; die "PostgreSQL did not start"; }
      sleep 0.1
    done
    [ -s "$DATA/database_url" ] || die "PostgreSQL did not report ready; see $DATA/pgembed.log"
  fi
  DATABASE_URL=$(cat "$DATA/database_url") "$(bin ingest)" migrate
  echo "database: $(cat "$DATA/database_url")"
}

cmd_status() {
  if pg_running; then
    echo "postgres: running (pid $(cat "$DATA/pgembed.pid")), $(cat "$DATA/database_url")"
    DATABASE_URL=$(cat "$DATA/database_url") "$(bin ingest)" migrate --plan
  else
    echo "postgres: stopped"
    return 3
  fi
}

cmd_down() {
  if pg_running; then
    local pid
    pid=$(cat "$DATA/pgembed.pid")
    kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "PostgreSQL (pid $pid) did not stop"
    echo "postgres: stopped"
  else
    echo "postgres: not running"
  fi
  rm -f "$DATA/pgembed.pid"
}

case "${1:-}" in
  up) cmd_up ;;
  status) cmd_status ;;
  down) cmd_down ;;
  -h | --help | help | "") usage ;;
  *) usage >&2; die "unknown command: $1" ;;
esac
