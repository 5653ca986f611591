#!/usr/bin/env bash
# REPORT §14: book_at as migrated now against 0010's body, side by side, on one synthetic book
# shaped like the nominal run's BTCUSDT (§10 part 3): a snapshot checkpoint of 2 000 + 2 000
# levels, then 1 600 events of 5 level changes (8 000 rows over 100 s), prices log-uniform in
# their distance from the top, a fifth of the changes removals. pgbench calls each function
# CALLS times on one connection (as an API connection does, so plan caching is what users get),
# alternating the two, at instants with 5 to 8 000 rows to replay onto the checkpoint.
# Before timing, both functions' answers are compared at every quarter second, depths 1 to all.
# Usage: bench/book_at.sh [CALLS] [STORAGE]   (needs cargo and the PostgreSQL server binaries;
# STORAGE: auto (default: TimescaleDB where installed), timescaledb, postgres)
set -euo pipefail
calls=${1:-200}
storage=${2:-auto}
cd "$(dirname "$0")/.."
cargo build -q -p pgembed --bin pgembed -p ingest --bin ingest
pg=/usr/lib/postgresql/15/bin
tmp=$(mktemp -d); chmod 1777 "$tmp"  # the server (maybe the postgres user) writes here
case $storage in
  postgres) edition=off ;;
  timescaledb) edition=community ;;
  *) edition=auto ;;
esac
./target/debug/pgembed --dir "$tmp/pg" --timescaledb "$edition" >"$tmp/url" 2>"$tmp/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 300); do [ -s "$tmp/url" ] && break; sleep 0.1; done
url=$(cat "$tmp/url")
q() { psql "$url" -qAtX -v ON_ERROR_STOP=1 "$@"; }
./target/debug/ingest migrate --database-url "$url" --storage "$storage" >"$tmp/migrate.log" 2>&1 ||
  { cat "$tmp/migrate.log"; exit 1; }

# 0010's body under another name, to time beside the migrated one.
sed -n '/^CREATE OR REPLACE FUNCTION book_at(p_instrument/,/^\$\$;/p' sql/0010_archive.sql \
  | sed 's/FUNCTION book_at(/FUNCTION book_at_0010(/' | q
q <<'SQL'
SELECT setseed(0.42);
UPDATE storage_policies SET drop_after = NULL;
INSERT INTO instruments (venue, symbol, base, quote, status, tick_size, step_size)
VALUES ('spot', 'BTCUSDT', 'BTC', 'USDT', 'TRADING', 0.01, 0.00001);
CREATE TABLE bench_t0 AS SELECT date_trunc('second', now() - interval '10 minutes') AS t;
INSERT INTO sync_events (time, instrument_id, epoch, kind)
SELECT t, 1, nextval('sync_epochs'), 'synced' FROM bench_t0;
-- Best first, as ingest stores them: bids from 67233.99 down, asks from 67234.01 up.
INSERT INTO book_checkpoints (time, instrument_id, epoch, update_id, kind, bid_prices, bid_qtys,
                              ask_prices, ask_qtys, received_at)
SELECT t, 1, (SELECT epoch FROM sync_events), 1000, 'snapshot',
  (SELECT array_agg(trim_scale((6723399 - i)::numeric / 100) ORDER BY i) FROM generate_series(0, 1999) i),
  (SELECT array_agg(trim_scale(round((random() * 5)::numeric, 5) + 0.00001) ORDER BY i) FROM generate_series(0, 1999) i),
  (SELECT array_agg(trim_scale((6723401 + i)::numeric / 100) ORDER BY i) FROM generate_series(0, 1999) i),
  (SELECT array_agg(trim_scale(round((random() * 5)::numeric, 5) + 0.00001) ORDER BY i) FROM generate_series(0, 1999) i),
  t
FROM bench_t0;
INSERT INTO depth_updates (time, instrument_id, first_update_id, update_id, side, price, qty, received_at)
SELECT t + (e * 62.5) * interval '1 ms', 1, 1001 + e * 5, 1005 + e * 5,
       CASE WHEN k % 2 = 0 THEN 'bid' ELSE 'ask' END,
       CASE WHEN k % 2 = 0 THEN trim_scale((6723399 - floor(exp(random() * ln(2500)) - 1))::numeric / 100)
                           ELSE trim_scale((6723401 + floor(exp(random() * ln(2500)) - 1))::numeric / 100) END,
       CASE WHEN random() < 0.2 THEN 0 ELSE trim_scale(round((random() * 5)::numeric, 5) + 0.00001) END,
       t + (e * 62.5) * interval '1 ms'
FROM bench_t0, generate_series(0, 1599) e, generate_series(0, 4) k;
ANALYZE;
SQL

# Same answers, text for text, at every quarter second and depth.
diffs=$(q <<'SQL'
SELECT count(*) FROM bench_t0, generate_series(0, 400) g, unnest(ARRAY[1, 20, 1000, 100000]) d,
  LATERAL (SELECT count(*) AS n FROM (
    (SELECT side, level, price::text, qty::text, book_update_id FROM book_at(1, t + g * interval '0.25 s', d)
     EXCEPT ALL
     SELECT side, level, price::text, qty::text, book_update_id FROM book_at_0010(1, t + g * interval '0.25 s', d))
    UNION ALL
    (SELECT side, level, price::text, qty::text, book_update_id FROM book_at_0010(1, t + g * interval '0.25 s', d)
     EXCEPT ALL
     SELECT side, level, price::text, qty::text, book_update_id FROM book_at(1, t + g * interval '0.25 s', d))) z) m
WHERE m.n > 0
SQL
)
echo "answers compared at 401 instants x 4 depths: $diffs differ"
[ "$diffs" = 0 ] || exit 1

t0=$(q -c "SELECT extract(epoch FROM t) FROM bench_t0")
echo "average ms per call ($calls calls per cell, one connection; $(q -c 'SHOW server_version'), storage $(q -c 'SELECT flavor FROM schema_migrations ORDER BY version DESC LIMIT 1'))"
printf '%-14s %6s %10s %10s\n' rows_replayed depth 0010 now
for rows in 5 1000 2000 4000 8000; do
  at=$(awk -v t="$t0" -v r="$rows" 'BEGIN { printf "%.4f", t + (r / 5 - 1) * 0.0625 + 0.001 }')
  for depth in 20 1000; do
    cells=()
    for fn in book_at_0010 book_at; do
      echo "SELECT count(*) FROM $fn(1, to_timestamp(:at), :depth);" >"$tmp/$fn.sql"
      cells+=("$("$pg/pgbench" -n -f "$tmp/$fn.sql" -t "$calls" -D at="$at" -D depth="$depth" "$url" 2>/dev/null \
        | awk '/latency average/ { print $4 }')")
    done
    printf '%-14s %6s %10s %10s\n' "$rows" "$depth" "${cells[0]}" "${cells[1]}"
  done
done
