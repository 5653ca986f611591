-- Nothing to do without TimescaleDB's jobs: retention already ran in maintain() on these paths
-- (0011_retention_in_maintain.tsdb.sql says what changed on TimescaleDB).
SELECT 1;
