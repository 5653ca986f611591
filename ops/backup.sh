#!/bin/sh
# Scheduled backups with a restore drill: dump the database (pg_dump, custom format), restore
# the dump into a scratch database on the same server to prove it restores (TimescaleDB's
# procedure where the dump holds the extension), record what the restored copy holds, keep the
# newest BACKUP_KEEP verified dumps, and leave a Prometheus textfile for node-exporter.
# A dump that does not restore is kept as `.failed` and the run fails; nothing older is pruned.
#
# Environment:
#   DATABASE_URL         the database, as a role that may create databases (the admin URL)
#   BACKUP_DIR           where dumps go (default ./backups)
#   BACKUP_KEEP          verified dumps kept (default 7)
#   BACKUP_EVERY_SECS    seconds between runs; 0 runs once (default 0)
#   BACKUP_SCRATCH_DB    the drill's scratch database (default <database>_restore_drill)
#   BACKUP_TEXTFILE_DIR  node-exporter's textfile directory (default: none)
#   BACKUP_MARKET_DATA   all (default), or none: the market-data tables' rows are left out
#                        (their structure stays), for a database whose verified daily files are
#                        the market data's copy and whose disk cannot hold a dump of it twice
# Usage: backup.sh [--list]
set -eu

: "${DATABASE_URL:?DATABASE_URL is required}"
DIR=${BACKUP_DIR:-./backups}
KEEP=${BACKUP_KEEP:-7}
EVERY=${BACKUP_EVERY_SECS:-0}
BASE=${DATABASE_URL%%\?*}
QUERY=""
case "$DATABASE_URL" in *\?*) QUERY="?${DATABASE_URL#*\?}" ;; esac
DB=${BASE##*/}
SCRATCH=${BACKUP_SCRATCH_DB:-${DB}_restore_drill}
SCRATCH_URL="${BASE%/*}/$SCRATCH$QUERY"
MAINT_URL="${BASE%/*}/postgres$QUERY"
# The tables whose rows the drill counts in the restored copy.
TABLES="instruments sync_events depth_updates book_checkpoints book_top book_ticker trades mark_prices"
MARKET="depth_updates book_checkpoints book_top book_ticker trades mark_prices"

log() { echo "backup: $*" >&2; }

psql_q() { psql -qAtX -v ON_ERROR_STOP=1 "$@"; }

# Restores $1 into the scratch database and prints "table rows" per table. Every step checks
# its own status: `set -e` does not apply inside a function called as an `if` condition.
drill() {
  psql_q "$MAINT_URL" -c "DROP DATABASE IF EXISTS \"$SCRATCH\" WITH (FORCE)" \
    -c "CREATE DATABASE \"$SCRATCH\"" || return 1
  # The listing is read whole before grep looks at it: pg_restore never dies of SIGPIPE.
  listing=$(pg_restore --list "$1") || return 1
  if echo "$listing" | grep 'EXTENSION - timescaledb' >/dev/null; then
    psql_q "$SCRATCH_URL" -c "CREATE EXTENSION timescaledb" \
      -c "SELECT timescaledb_pre_restore()" >/dev/null || return 1
    pg_restore --no-owner --exit-on-error --dbname="$SCRATCH_URL" "$1" || return 1
    psql_q "$SCRATCH_URL" -c "SELECT timescaledb_post_restore()" >/dev/null || return 1
  else
    pg_restore --no-owner --exit-on-error --single-transaction --dbname="$SCRATCH_URL" "$1" ||
      return 1
  fi
  for t in $TABLES; do
    rows=$(psql_q "$SCRATCH_URL" -c "SELECT count(*) FROM $t") || return 1
    echo "$t $rows"
  done
  psql_q "$MAINT_URL" -c "DROP DATABASE \"$SCRATCH\" WITH (FORCE)" || return 1
}

# The dumps' names, newest first (their names sort by time).
dumps() {
  for f in "$DIR"/depthbook-*.dump; do
    [ -e "$f" ] && basename "$f"
  done | sort -r
}

# Keeps the newest $KEEP verified dumps.
prune() {
  dumps | tail -n +"$((KEEP + 1))" | while read -r old; do
    rm -f "$DIR/$old" "$DIR/$old.verified"
    log "pruned $old"
  done
}

textfile() {
  [ -n "${BACKUP_TEXTFILE_DIR:-}" ] || return 0
  mkdir -p "$BACKUP_TEXTFILE_DIR"
  {
    echo "# HELP depthbook_backup_last_success_timestamp_seconds When the newest verified backup finished."
    echo "# TYPE depthbook_backup_last_success_timestamp_seconds gauge"
    echo "depthbook_backup_last_success_timestamp_seconds $(date +%s)"
    echo "# HELP depthbook_backup_last_bytes Size of the newest verified backup."
    echo "# TYPE depthbook_backup_last_bytes gauge"
    echo "depthbook_backup_last_bytes $1"
  } >"$BACKUP_TEXTFILE_DIR/depthbook_backup.prom.part"
  mv "$BACKUP_TEXTFILE_DIR/depthbook_backup.prom.part" "$BACKUP_TEXTFILE_DIR/depthbook_backup.prom"
}

# pg_dump's --exclude-table-data for the market-data tables and, on TimescaleDB, their chunks
# (compressed ones too), one per line; nothing with BACKUP_MARKET_DATA=all.
exclusions() {
  case "${BACKUP_MARKET_DATA:-all}" in
    all) return 0 ;;
    none) ;;
    *) log "BACKUP_MARKET_DATA is all or none, not ${BACKUP_MARKET_DATA}"; return 1 ;;
  esac
  for t in $MARKET; do echo "--exclude-table-data=$t"; done
  tsdb=$(psql_q "$DATABASE_URL" -c "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") || return 1
  [ "$tsdb" = 0 ] && return 0
  list=$(echo "$MARKET" | sed "s/\([a-z_]*\)/'\1'/g; s/ /, /g")
  psql_q "$DATABASE_URL" -c "SELECT '--exclude-table-data=' || format('%I.%I', c.schema_name, c.table_name)
    FROM _timescaledb_catalog.chunk c
    JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
    LEFT JOIN _timescaledb_catalog.hypertable p ON p.compressed_hypertable_id = h.id
    WHERE coalesce(p.table_name, h.table_name) IN ($list)"
}

once() {
  mkdir -p "$DIR"
  name="depthbook-$(date -u +%Y%m%dT%H%M%SZ).dump"
  # Names order the dumps by time: a second run within the same second waits for the next.
  while [ -e "$DIR/$name" ]; do
    sleep 1
    name="depthbook-$(date -u +%Y%m%dT%H%M%SZ).dump"
  done
  excluded=$(exclusions) || return 1
  # One flag per line, none holding a space: word splitting is what is meant here.
  # shellcheck disable=SC2086
  pg_dump --format=custom $excluded --file="$DIR/$name.part" "$DATABASE_URL"
  mv "$DIR/$name.part" "$DIR/$name"
  if ! drill "$DIR/$name" >"$DIR/$name.verified.part"; then
    mv "$DIR/$name" "$DIR/$name.failed"
    rm -f "$DIR/$name.verified.part"
    log "$name did NOT restore; kept as $name.failed, nothing pruned"
    return 1
  fi
  mv "$DIR/$name.verified.part" "$DIR/$name.verified"
  bytes=$(wc -c <"$DIR/$name" | tr -d ' ')
  textfile "$bytes"
  prune
  log "$name: $bytes bytes, restored and counted: $(tr '\n' ' ' <"$DIR/$name.verified")"
  echo "$DIR/$name"
}

if [ "${1:-}" = "--list" ]; then
  # Newest first: file, bytes, and what the drill counted.
  for f in $(dumps); do
    echo "$DIR/$f $(wc -c <"$DIR/$f" | tr -d ' ') bytes; restored: $(tr '\n' ' ' <"$DIR/$f.verified" 2>/dev/null || echo no)"
  done
  exit 0
fi

if [ "$EVERY" = 0 ]; then
  once
  exit
fi
while :; do
  once || log "will try again in $EVERY s"
  sleep "$EVERY"
done
