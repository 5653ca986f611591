#!/usr/bin/env bash
# CI: manage.sh's local mode end to end: up --sim, status, backup, restore, down.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEPTHBOOK_DATA; DEPTHBOOK_DATA=$(mktemp -d)
export DEPTHBOOK_PROFILE=dev INGEST_TOP=3 SIM_SYMBOLS=3
chmod 755 "$DEPTHBOOK_DATA"
trap './manage.sh down >/dev/null 2>&1 || true; rm -rf "$DEPTHBOOK_DATA"' EXIT

./manage.sh up --sim
url=$(cat "$DEPTHBOOK_DATA/database_url")
rows() { psql "$url" -qAtX -c "SELECT count(*) FROM $1"; }
for _ in $(seq 600); do [ "$(rows depth_updates)" -gt 100 ] && break; sleep 0.1; done
[ "$(rows depth_updates)" -gt 100 ] || { echo "no depth rows collected"; exit 1; }
./manage.sh status
for _ in $(seq 300); do curl -sf "http://127.0.0.1:${API_PORT:-8080}/data/BTCUSDT" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:${API_PORT:-8080}/data/BTCUSDT" >/dev/null || { ./manage.sh logs graphql; exit 1; }

# Two collectors share the symbols by shard leases (each takes, or is handed, half of 16), and
# two API processes answer; then back to one of each.
held() { curl -s "http://127.0.0.1:$1/metrics" | awk '$1 == "depthbook_ingest_leases_held" {print $2}'; }
./manage.sh scale collectors 2
a=0 b=0
for _ in $(seq 600); do
  a=$(held "${INGEST_METRICS_PORT:-9100}") b=$(held "${INGEST_EXTRA_METRICS_PORT:-9111}")
  [ "${a:-0}" = 8 ] && [ "${b:-0}" = 8 ] && break
  sleep 0.1
done
if [ "${a:-0}" != 8 ] || [ "${b:-0}" != 8 ]; then
  echo "two collectors hold ${a:-0} + ${b:-0} of 16 shards, not 8 + 8"; ./manage.sh logs ingest-2; exit 1
fi
before=$(rows depth_updates)
for _ in $(seq 600); do [ "$(rows depth_updates)" -gt "$before" ] && break; sleep 0.1; done
[ "$(rows depth_updates)" -gt "$before" ] || { echo "nothing collected by two collectors"; exit 1; }
./manage.sh scale api 2
curl -sf "http://127.0.0.1:$((${API_PORT:-8080} + 1))/data/BTCUSDT" >/dev/null || { ./manage.sh logs graphql-2; exit 1; }
./manage.sh status
./manage.sh scale collectors 1
./manage.sh scale api 1
if [ -f "$DEPTHBOOK_DATA/ingest-2.pid" ] || [ -f "$DEPTHBOOK_DATA/graphql-2.pid" ]; then
  echo "scaling down left copies running"; exit 1
fi
./manage.sh status

# A stock GraphQL fuzzer against the running API: it loads the schema by the standard
# introspection query and finds no server error. Every check but positive_data_acceptance,
# which cannot know domain rules such as `from` before `to`. A fixed seed keeps CI repeatable.
python3 -m schemathesis.cli --version >/dev/null 2>&1 || python3 -m pip install -q "schemathesis==4.32.5"
python3 -m schemathesis.cli run "http://127.0.0.1:${API_PORT:-8080}/graphql" --max-examples 150 --seed 1 \
  --exclude-checks positive_data_acceptance

# A marker only the backup holds proves the restore.
psql "$url" -qAtX -c "INSERT INTO storage_policies (relation, chunk_interval) VALUES ('ci_marker', '1 day')" >/dev/null
backup=$(./manage.sh backup | tail -n1)
[ -s "$backup" ] || { echo "no backup written"; exit 1; }
# The restore drill counted the marker's table's neighbours in a scratch copy: the dump restores.
grep -E '^depth_updates [1-9]' "$backup.verified" >/dev/null || { echo "no restore drill for $backup"; exit 1; }
./manage.sh backup --list | grep -F "$backup" | grep 'restored: instruments' >/dev/null ||
  { echo "backup --list does not show $backup"; exit 1; }
psql "$url" -qAtX -c "DELETE FROM storage_policies WHERE relation = 'ci_marker'" >/dev/null
./manage.sh restore "$backup"
[ "$(psql "$url" -qAtX -c "SELECT count(*) FROM storage_policies WHERE relation = 'ci_marker'")" = 1 ] || { echo "restore did not bring the marker back"; exit 1; }
[ "$(rows depth_updates)" -gt 100 ] || { echo "restore lost depth rows"; exit 1; }
./manage.sh status
./manage.sh down
if ./manage.sh status >/dev/null; then echo "still running after down"; exit 1; fi
rm -f "$backup" "$backup.verified"
echo "manage.sh local mode: ok"
