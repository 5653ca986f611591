#!/usr/bin/env bash
# depthbook operations.
#
# Local mode (default): no Docker. A private PostgreSQL in $DEPTHBOOK_DATA from the system's
# binaries, migrations, ingest and graphql as background processes (and the simulator with
# --sim). Compose mode (DEPTHBOOK_MODE=compose): the same commands drive docker compose, on this
# machine or, for `deploy`, on $DEPTHBOOK_HOST over ssh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")" && pwd)
MODE=${DEPTHBOOK_MODE:-local}
DATA=${DEPTHBOOK_DATA:-$ROOT/data}
PROFILE=${DEPTHBOOK_PROFILE:-release}
PG_PORT=${PGEMBED_PORT:-54329}
API_PORT=${API_PORT:-8080}
METRICS_PORT=${INGEST_METRICS_PORT:-9100}
EXTRA_METRICS_PORT=${INGEST_EXTRA_METRICS_PORT:-9111}
# Shards of the symbol universe when several collectors share it; the same for every one.
SHARDS=${INGEST_SHARDS:-16}
DAILY_PORT=${DAILY_METRICS_PORT:-9102}
SIM_SPOT_PORT=${SIM_SPOT_PORT:-18080}
SIM_USDM_PORT=${SIM_USDM_PORT:-18081}

usage() {
  cat <<USAGE
usage: manage.sh COMMAND [ARGS]

  up [--sim]       start everything (local: PostgreSQL in $DATA, migrations, ingest, the daily
                   files in $DATA/daily, graphql; --sim collects from the simulator instead of
                   Binance)
  status           what runs, health, storage path and migrations
  logs SERVICE     the last lines of a service's log (postgres, sim, ingest, daily, graphql)
  monitor          key numbers every 5 s until Ctrl-C
  restart [SVC]    restart one service, or all
  scale symbols N  collect the top N symbols per venue (restarts the collectors; scale N too)
  scale collectors N
                   N collectors sharing the symbols by shard leases (local: N ingest processes,
                   metrics on INGEST_METRICS_PORT, then INGEST_EXTRA_METRICS_PORT, +1, …;
                   compose: this machine's collector is one of N — give every machine the
                   same INGEST_SHARDS and INGEST_INSTANCES, README: Several collectors)
  scale api N      N API processes (local: on API_PORT, API_PORT+1, …; compose: N graphql
                   containers that caddy takes in turn)
  backup [--list]  dump the database and prove the dump restores (ops/backup.sh: into a scratch
                   database, then prunes to the newest 7); --list: the dumps and what they hold
  restore FILE     restore a backup (stops ingest and graphql meanwhile)
  deploy           (compose mode) copy the repo to \$DEPTHBOOK_HOST and start the stack there
  ca               (compose mode) print the root certificate of Caddy's internal CA, for
                   clients of https://DOMAIN/ when DOMAIN is an address or localhost
  down             stop everything (data stays)

environment: DEPTHBOOK_MODE (local|compose), DEPTHBOOK_DATA, DEPTHBOOK_PROFILE (release|dev),
DEPTHBOOK_HOST (deploy target, user@host), PGEMBED_PORT, API_PORT, INGEST_METRICS_PORT,
INGEST_EXTRA_METRICS_PORT, INGEST_SHARDS (with several collectors), SIM_SPOT_PORT,
SIM_USDM_PORT, INGEST_TOP
USAGE
}

die() { echo "manage.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found: $2"; }

# --- local mode -----------------------------------------------------------------------------

bin() {
  local dir=release
  [ "$PROFILE" = dev ] && dir=debug
  echo "$ROOT/target/$dir/$1"
}

build() {
  need cargo "install Rust (https://rustup.rs)"
  # dev: the whole workspace with its tests, which resolves the features `cargo test
  # --workspace` does, so a tested checkout's binaries are reused instead of rebuilt.
  local what=(--release -p pgembed -p ingest -p graphql -p sim)
  [ "$PROFILE" = dev ] && what=(--workspace --all-targets)
  (cd "$ROOT" && cargo build -q "${what[@]}") || die "build failed"
}

pidfile() { echo "$DATA/$1.pid"; }
running() { [ -f "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }
admin_url() { cat "$DATA/database_url"; }

# Several copies of a service: `ingest`, `ingest-2`, …; how many is $DATA/collectors or
# $DATA/api_replicas (1 when absent).
copies() { cat "$DATA/$1" 2>/dev/null || echo 1; }
copy_name() { if [ "$2" = 1 ]; then echo "$1"; else echo "$1-$2"; fi; }
# Every copy of a service with a pid file, running or not.
copies_started() {
  local f
  for f in "$DATA/$1.pid" "$DATA/$1"-*.pid; do [ -f "$f" ] && basename "$f" .pid; done
  return 0
}
collector_port() { if [ "$1" = 1 ]; then echo "$METRICS_PORT"; else echo $((EXTRA_METRICS_PORT + $1 - 2)); fi; }
api_url() { admin_url | sed "s|postgres://postgres@|postgres://depthbook_api:local@|"; }

# start NAME COMMAND...: background process with its log and pid file.
start() {
  local name=$1
  shift
  if running "$name"; then
    echo "$name: already running (pid $(cat "$(pidfile "$name")"))"
    return
  fi
  "$@" >>"$DATA/$name.log" 2>&1 &
  echo $! >"$(pidfile "$name")"
  echo "$name: started (pid $!, log $DATA/$name.log)"
}

stop() {
  local name=$1 pid
  running "$name" || { rm -f "$(pidfile "$name")"; return 0; }
  pid=$(cat "$(pidfile "$name")")
  kill -TERM "$pid"
  for _ in $(seq 900); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && die "$name (pid $pid) did not stop within 90 s"
  rm -f "$(pidfile "$name")"
  echo "$name: stopped"
}

# wait_http NAME URL: until URL answers (any status), or the process died.
wait_http() {
  for _ in $(seq 600); do
    curl -s -o /dev/null "$2" && return 0
    running "$1" || { tail -n 20 "$DATA/$1.log" >&2; die "$1 exited"; }
    sleep 0.1
  done
  die "$1 did not answer at $2"
}

start_postgres() {
  if running postgres; then return; fi
  : >"$DATA/postgres.log"
  start postgres "$(bin pgembed)" --dir "$DATA/pg" --port "$PG_PORT"
  # pgembed prints its URL once the server accepts connections.
  for _ in $(seq 600); do
    grep -m1 '^postgres://' "$DATA/postgres.log" >"$DATA/database_url" && return 0
    running postgres || { cat "$DATA/postgres.log" >&2; die "PostgreSQL did not start"; }
    sleep 0.1
  done
  die "PostgreSQL did not report its URL; see $DATA/postgres.log"
}

start_sim() {
  start sim "$(bin sim)" --symbols "${SIM_SYMBOLS:-20}" \
    --spot-bind "127.0.0.1:$SIM_SPOT_PORT" --usdm-bind "127.0.0.1:$SIM_USDM_PORT"
  wait_http sim "http://127.0.0.1:$SIM_SPOT_PORT/api/v3/ping"
}

# start_collector I N: collector I of N, with a spool of its own; several share the symbols by
# shard leases.
start_collector() {
  local i=$1 n=$2 name port spool
  name=$(copy_name ingest "$i")
  port=$(collector_port "$i")
  spool="$DATA/spool"
  [ "$i" = 1 ] || spool="$DATA/spool-$i"
  local args=(run --no-migrate --metrics-bind "127.0.0.1:$port" --spool-dir "$spool"
    --top "$(cat "$DATA/scale" 2>/dev/null || echo "${INGEST_TOP:-200}")")
  if [ "$n" -gt 1 ]; then
    args+=(--shards "$SHARDS" --instances "$n" --collector-name "local-$i")
  fi
  if [ -f "$DATA/sim" ]; then
    args+=(--spot-rest-url "http://127.0.0.1:$SIM_SPOT_PORT" --spot-ws-url "ws://127.0.0.1:$SIM_SPOT_PORT"
      --usdm-rest-url "http://127.0.0.1:$SIM_USDM_PORT" --usdm-ws-url "ws://127.0.0.1:$SIM_USDM_PORT")
  fi
  DATABASE_URL=$(admin_url) start "$name" "$(bin ingest)" "${args[@]}"
  wait_http "$name" "http://127.0.0.1:$port/metrics"
}

start_ingest() {
  local n i
  n=$(copies collectors)
  for i in $(seq "$n"); do start_collector "$i" "$n"; done
}

# Every collector stops (SIGTERM: each flushes, then releases its leases).
stop_ingest() {
  local name
  for name in $(copies_started ingest); do stop "$name"; done
}

# The daily files are the cold tier: retention drops a day only once they hold it, verified.
start_daily() {
  DATABASE_URL=$(admin_url) start daily "$(bin ingest)" daily --out "$DATA/daily" \
    --metrics-bind "127.0.0.1:$DAILY_PORT"
  wait_http daily "http://127.0.0.1:$DAILY_PORT/metrics"
}

start_graphql() {
  local i name port
  for i in $(seq "$(copies api_replicas)"); do
    name=$(copy_name graphql "$i")
    port=$((API_PORT + i - 1))
    DATABASE_URL=$(api_url) start "$name" "$(bin graphql)" --bind "127.0.0.1:$port"
    wait_http "$name" "http://127.0.0.1:$port/metrics"
  done
}

stop_graphql() {
  local name
  for name in $(copies_started graphql); do stop "$name"; done
}

# local_scale WHAT N: symbols, collectors or api; what runs restarts with it.
local_scale() {
  mkdir -p "$DATA"
  case "$1" in
    symbols) echo "$2" >"$DATA/scale"; if running ingest; then stop_ingest; start_ingest; fi ;;
    collectors) if running ingest; then stop_ingest; echo "$2" >"$DATA/collectors"; start_ingest
      else echo "$2" >"$DATA/collectors"; fi ;;
    api) if running graphql; then stop_graphql; echo "$2" >"$DATA/api_replicas"; start_graphql
      else echo "$2" >"$DATA/api_replicas"; fi ;;
  esac
}

local_up() {
  need curl "apt-get install curl"
  mkdir -p "$DATA"
  rm -f "$DATA/sim"
  [ "${1:-}" = "--sim" ] && touch "$DATA/sim"
  build
  start_postgres
  DATABASE_URL=$(admin_url) DEPTHBOOK_READER_LOGINS="depthbook_api:local" "$(bin ingest)" migrate
  [ -f "$DATA/sim" ] && start_sim
  start_ingest
  start_daily
  start_graphql
  echo "API: http://127.0.0.1:$API_PORT/  metrics: http://127.0.0.1:$METRICS_PORT/metrics  database: $(admin_url)"
}

local_status() {
  local rc=0 svc i names=(postgres sim)
  for i in $(seq "$(copies collectors)"); do names+=("$(copy_name ingest "$i")"); done
  names+=(daily)
  for i in $(seq "$(copies api_replicas)"); do names+=("$(copy_name graphql "$i")"); done
  for svc in "${names[@]}"; do
    if running "$svc"; then
      echo "$svc: running (pid $(cat "$(pidfile "$svc")"))"
    elif [ "$svc" = sim ] && [ ! -f "$DATA/sim" ]; then
      continue
    else
      echo "$svc: stopped"
      rc=3
    fi
  done
  for i in $(seq "$(copies collectors)"); do
    svc=$(copy_name ingest "$i")
    if running "$svc"; then echo "$svc health: $(curl -s "http://127.0.0.1:$(collector_port "$i")/health")"; fi
  done
  if running graphql; then echo "graphql health: $(curl -s "http://127.0.0.1:$API_PORT/health")"; fi
  if running postgres; then DATABASE_URL=$(admin_url) "$(bin ingest)" migrate --plan; fi
  return $rc
}

local_down() {
  local svc
  stop_graphql
  stop daily
  stop_ingest
  for svc in sim postgres; do stop "$svc"; done
}

pg_bin() {
  local dir
  dir=$(pg_config --bindir 2>/dev/null || true)
  [ -x "$dir/$1" ] || dir=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)
  [ -x "$dir/$1" ] || die "$1 not found: install the PostgreSQL client (apt-get install postgresql)"
  echo "$dir/$1"
}

# ops/backup.sh with this machine's PostgreSQL programs: a dump, its restore drill, pruning.
local_backup() {
  local bindir
  bindir=$(dirname "$(pg_bin pg_dump)")
  if [ "${1:-}" = --list ]; then
    BACKUP_DIR="$ROOT/backups" DATABASE_URL=unused sh "$ROOT/ops/backup.sh" --list
    return
  fi
  running postgres || die "PostgreSQL is not running (manage.sh up)"
  PATH="$bindir:$PATH" BACKUP_DIR="$ROOT/backups" DATABASE_URL=$(admin_url) BACKUP_EVERY_SECS=0 \
    sh "$ROOT/ops/backup.sh"
}

local_restore() {
  local file=${1:-}
  [ -n "$file" ] || die "restore needs a backup file"
  [ -f "$file" ] || die "no such file: $file"
  running postgres || die "PostgreSQL is not running (manage.sh up)"
  local was_ingest=0 was_graphql=0
  running ingest && was_ingest=1
  running graphql && was_graphql=1
  stop_graphql
  stop_ingest
  local url
  url=$(admin_url)
  # grep reads the whole list (no -q): under pipefail, grep leaving early would fail
  # pg_restore on SIGPIPE and with it the test, at random.
  if "$(pg_bin pg_restore)" --list "$file" | grep 'EXTENSION - timescaledb' >/dev/null; then
    # TimescaleDB's procedure: a fresh database with the extension, restore mode around
    # pg_restore (its catalogs and jobs must not run half-restored), no --clean.
    local maint="${url%/*}/postgres" db="${url##*/}"
    "$(pg_bin psql)" -qX -v ON_ERROR_STOP=1 "$maint" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\""
    "$(pg_bin psql)" -qX -v ON_ERROR_STOP=1 "$url" -c "CREATE EXTENSION timescaledb" -c "SELECT timescaledb_pre_restore()" >/dev/null
    "$(pg_bin pg_restore)" --no-owner --exit-on-error --dbname="$url" "$file"
    "$(pg_bin psql)" -qX -v ON_ERROR_STOP=1 "$url" -c "SELECT timescaledb_post_restore()" >/dev/null
  else
    "$(pg_bin pg_restore)" --clean --if-exists --no-owner --single-transaction --dbname="$url" "$file"
  fi
  echo "restored $file"
  [ $was_ingest = 1 ] && start_ingest
  [ $was_graphql = 1 ] && start_graphql
  return 0
}

local_monitor() {
  while true; do
    clear 2>/dev/null || true
    date -u
    curl -s "http://127.0.0.1:$METRICS_PORT/health" || echo "ingest: no answer"
    echo
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" |
      grep -E '^depthbook_ingest_(books_synced|symbols|gaps_total|rows_written_total|spool_bytes|connections) ' || true
    sleep 5
  done
}

local_restart() {
  case "${1:-all}" in
    ingest) stop_ingest; start_ingest ;;
    graphql) stop_graphql; start_graphql ;;
    daily) stop daily; start_daily ;;
    sim) stop sim; start_sim ;;
    all) local_down; local_up "$([ -f "$DATA/sim" ] && echo --sim)" ;;
    *) die "unknown service: $1 (sim, ingest, daily, graphql or nothing for all)" ;;
  esac
}

# --- compose mode ---------------------------------------------------------------------------

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

# set_env KEY VALUE: in .env, replaced or added.
set_env() {
  sed -i "s|^$1=.*|$1=$2|" .env
  grep -q "^$1=" .env || echo "$1=$2" >>.env
}

env_value() { sed -n "s|^$1=||p" .env | tail -n1; }

compose_scale() {
  case "$1" in
    symbols) set_env INGEST_TOP "$2"; compose up -d ingest ;;
    collectors)
      # One collector per machine (its spool is its own): this one joins N; the others need
      # the same INGEST_SHARDS and INGEST_INSTANCES (terraform's collector_regions sets them).
      local shards
      shards=$(env_value INGEST_SHARDS)
      if [ "$2" -gt 1 ] && [ "${shards:-0}" = 0 ]; then set_env INGEST_SHARDS "$SHARDS"; fi
      set_env INGEST_INSTANCES "$2"
      [ -n "$(env_value INGEST_COLLECTOR_NAME)" ] || set_env INGEST_COLLECTOR_NAME "$(hostname)"
      compose up -d ingest
      echo "this collector: 1 of $2, $(env_value INGEST_SHARDS) shards; start the others with the same INGEST_SHARDS=$(env_value INGEST_SHARDS) INGEST_INSTANCES=$2" ;;
    api) set_env API_REPLICAS "$2"; compose up -d --scale graphql="$2" graphql ;;
  esac
}

compose_cmd() {
  need docker "install Docker (https://docs.docker.com/engine/install/)"
  [ -f "$ROOT/.env" ] || die "no .env: cp .env.example .env and set the passwords"
  cd "$ROOT"
  case "$1" in
    up) compose up -d ;;  # pulls the release image; `compose build` builds this checkout
    status) compose ps ;;
    logs) compose logs --tail=200 "${2:?logs needs a service}" ;;
    monitor) watch -n 5 "docker compose ps; docker compose exec -T graphql ingest healthcheck http://127.0.0.1:8080/health" ;;
    ca) compose exec -T caddy cat /data/caddy/pki/authorities/local/root.crt ;;
    restart) if [ -n "${2:-}" ]; then compose restart "$2"; else compose restart; fi ;;
    scale) compose_scale "$2" "$3" ;;
    backup)
      # The backup service's script, once now (dump, restore drill, pruning), or its list.
      if [ "${2:-}" = --list ]; then compose run --rm -T backup --list
      else compose run --rm -T -e BACKUP_EVERY_SECS=0 backup; fi ;;
    restore)
      [ -f "${2:-}" ] || die "restore needs a backup file"
      compose stop ingest graphql
      # TimescaleDB's procedure: a fresh database with the extension, restore mode around
      # pg_restore, no --clean.
      compose exec -T timescaledb psql -qX -v ON_ERROR_STOP=1 -U depthbook -d postgres \
        -c "DROP DATABASE IF EXISTS depthbook WITH (FORCE)" -c "CREATE DATABASE depthbook"
      compose exec -T timescaledb psql -qX -v ON_ERROR_STOP=1 -U depthbook -d depthbook \
        -c "CREATE EXTENSION timescaledb" -c "SELECT timescaledb_pre_restore()"
      compose exec -T timescaledb pg_restore -U depthbook --no-owner --exit-on-error -d depthbook <"$2"
      compose exec -T timescaledb psql -qX -v ON_ERROR_STOP=1 -U depthbook -d depthbook -c "SELECT timescaledb_post_restore()"
      compose start ingest graphql ;;
    deploy)
      [ -n "${DEPTHBOOK_HOST:-}" ] || die "deploy needs DEPTHBOOK_HOST=user@host (see terraform output)"
      need rsync "apt-get install rsync"
      rsync -az --delete --exclude target --exclude data --exclude .git "$ROOT/" "$DEPTHBOOK_HOST:depthbook/"
      ssh "$DEPTHBOOK_HOST" 'cd depthbook && docker compose up -d --build' ;;
    down) compose down ;;
  esac
}

# --- dispatch -------------------------------------------------------------------------------

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up | status | logs | monitor | restart | scale | backup | restore | deploy | down) ;;
  -h | --help | help | "") usage; exit 0 ;;
  *) usage >&2; die "unknown command: $cmd" ;;
esac
case "$cmd" in
  scale)
    # `scale N` is `scale symbols N`, as before collectors and API copies could scale.
    [[ "${1:-}" =~ ^[0-9]+$ ]] && set -- symbols "$1"
    case "${1:-}" in symbols | collectors | api) ;; *) die "scale what? symbols, collectors or api (manage.sh help)" ;; esac
    [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "scale $1 needs a positive number" ;;
  logs) [ -n "${1:-}" ] || die "logs needs a service (postgres, sim, ingest, graphql)" ;;
esac

if [ "$MODE" = compose ]; then
  compose_cmd "$cmd" "$@"
  exit
fi
[ "$MODE" = local ] || die "DEPTHBOOK_MODE must be local or compose"
case "$cmd" in
  up) local_up "${1:-}" ;;
  status) local_status ;;
  logs) [ -f "$DATA/$1.log" ] || die "no log for $1 in $DATA"; tail -n 100 "$DATA/$1.log" ;;
  monitor) local_monitor ;;
  restart) local_restart "${1:-all}" ;;
  scale) local_scale "$1" "$2" ;;
  backup) local_backup "${1:-}" ;;
  restore) local_restore "${1:-}" ;;
  deploy) die "deploy works in compose mode: DEPTHBOOK_MODE=compose DEPTHBOOK_HOST=user@host manage.sh deploy" ;;
  down) local_down ;;
esac
