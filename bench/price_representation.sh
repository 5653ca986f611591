#!/usr/bin/env bash
# Measures the price/quantity column choice for depth_updates: numeric as Binance sends it
# (8 decimals), numeric with trailing zeros stripped, and int8 scaled by the instrument's tick.
# Binary COPY speed and on-disk size, same rows, same run, alternating order.
# Usage: bench/price_representation.sh [ROWS]   (needs cargo and the PostgreSQL server binaries)
set -euo pipefail
rows=${1:-2000000}
cd "$(dirname "$0")/.."
cargo build -q -p pgembed --bin pgembed
tmp=$(mktemp -d); chmod 1777 "$tmp"  # the server (maybe the postgres user) writes here
./target/debug/pgembed --dir "$tmp/pg" >"$tmp/url" 2>"$tmp/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do [ -s "$tmp/url" ] && break; sleep 0.1; done
url=$(cat "$tmp/url")
q() { psql "$url" -qAtX -v ON_ERROR_STOP=1 "$@"; }
q <<SQL
CREATE TABLE src AS
SELECT now() + i * interval '1 ms' AS time, (i % 200)::int AS instrument_id,
       (i / 20)::bigint AS first_update_id, (i / 20 + 3)::bigint AS update_id, NULL::bigint AS prev_update_id,
       CASE WHEN i % 2 = 0 THEN 'bid' ELSE 'ask' END AS side,
       (6723401 + (i % 5000) - 2500)::bigint AS price_ticks,      -- tick 0.01
       ((i * 7919) % 10000000)::bigint AS qty_steps,              -- step 0.00001
       now() AS received_at
FROM generate_series(1::bigint, $rows::bigint) AS i;
CREATE TABLE du_numeric8 (time timestamptz, instrument_id int, first_update_id bigint, update_id bigint, prev_update_id bigint, side text, price numeric, qty numeric, received_at timestamptz);
CREATE TABLE du_numeric  (LIKE du_numeric8);
CREATE TABLE du_int8     (time timestamptz, instrument_id int, first_update_id bigint, update_id bigint, prev_update_id bigint, side text, price bigint, qty bigint, received_at timestamptz);
COPY (SELECT time, instrument_id, first_update_id, update_id, prev_update_id, side,
             round(price_ticks * 0.01, 8), round(qty_steps * 0.00001, 8), received_at FROM src) TO '$tmp/numeric8.bin' (FORMAT binary);
COPY (SELECT time, instrument_id, first_update_id, update_id, prev_update_id, side,
             trim_scale(price_ticks * 0.01), trim_scale(qty_steps * 0.00001), received_at FROM src) TO '$tmp/numeric.bin' (FORMAT binary);
COPY (SELECT time, instrument_id, first_update_id, update_id, prev_update_id, side,
             price_ticks, qty_steps, received_at FROM src) TO '$tmp/int8.bin' (FORMAT binary);
SQL
declare -A best
for _ in 1 2 3; do
  for t in numeric8 numeric int8; do
    q -c "TRUNCATE du_$t; CHECKPOINT"
    start=$(date +%s%N)
    q -c "COPY du_$t FROM '$tmp/$t.bin' (FORMAT binary)"
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    [ -z "${best[$t]:-}" ] || [ "$ms" -lt "${best[$t]}" ] && best[$t]=$ms
  done
done
echo "rows: $rows (binary COPY, best of 3, alternating; PostgreSQL $(q -c 'SHOW server_version'))"
printf '%-10s %10s %12s %14s %16s\n' table copy_ms rows_per_s heap_bytes bytes_per_row
for t in numeric8 numeric int8; do
  size=$(q -c "SELECT pg_relation_size('du_$t')")
  printf '%-10s %10s %12s %14s %16s\n' "$t" "${best[$t]}" $(( rows * 1000 / (best[$t] > 0 ? best[$t] : 1) )) "$size" $(( size / rows ))
done
echo "book_at-style read (sum of prices per instrument), ms:"
for t in numeric8 numeric int8; do
  start=$(date +%s%N); q -c "SELECT instrument_id, sum(price), sum(qty) FROM du_$t GROUP BY 1" >/dev/null
  echo "  $t $(( ($(date +%s%N) - start) / 1000000 ))"
done
