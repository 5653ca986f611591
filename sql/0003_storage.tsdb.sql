-- TimescaleDB path: hypertables, compression, and policies driven by storage_policies.

-- The migrator creates the timescaledb extension in a transaction of its own before this runs.

-- Chunk intervals by volume: depth and ticker rows arrive by the tens of thousands per second
-- across 200 symbols, so their chunks are short enough to compress within hours; the
-- sparser tables use longer chunks to keep the chunk count (and planning time) low.
SELECT create_hypertable('depth_updates',    'time', chunk_time_interval => interval '1 hour');
SELECT create_hypertable('book_checkpoints', 'time', chunk_time_interval => interval '1 day');
SELECT create_hypertable('book_top',         'time', chunk_time_interval => interval '6 hours');
SELECT create_hypertable('book_ticker',      'time', chunk_time_interval => interval '1 hour');
SELECT create_hypertable('trades',           'time', chunk_time_interval => interval '6 hours');
SELECT create_hypertable('mark_prices',      'time', chunk_time_interval => interval '1 day');

-- Segment by instrument (every query names one), order by time and then the exchange's own
-- sequence so a compressed segment decodes in book order.
ALTER TABLE depth_updates SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_id',
    timescaledb.compress_orderby = 'time, update_id');
ALTER TABLE book_checkpoints SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_id',
    timescaledb.compress_orderby = 'time, update_id');
ALTER TABLE book_top SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_id',
    timescaledb.compress_orderby = 'time, update_id');
ALTER TABLE book_ticker SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_id',
    timescaledb.compress_orderby = 'time, update_id');
ALTER TABLE trades SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_id',
    timescaledb.compress_orderby = 'time, agg_trade_id');
ALTER TABLE mark_prices SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_id',
    timescaledb.compress_orderby = 'time');

-- Makes storage_policies effective: chunk interval, compression and retention jobs.
CREATE FUNCTION apply_storage_policies() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p record;
BEGIN
    FOR p IN
        SELECT s.*
        FROM storage_policies s
        JOIN timescaledb_information.hypertables h
          ON h.hypertable_schema = current_schema() AND h.hypertable_name = s.relation
    LOOP
        PERFORM set_chunk_time_interval(p.relation::regclass, p.chunk_interval);
        PERFORM remove_compression_policy(p.relation::regclass, if_exists => true);
        IF p.compress_after IS NOT NULL THEN
            PERFORM add_compression_policy(p.relation::regclass, compress_after => p.compress_after);
        END IF;
        PERFORM remove_retention_policy(p.relation::regclass, if_exists => true);
        IF p.drop_after IS NOT NULL THEN
            PERFORM add_retention_policy(p.relation::regclass, drop_after => p.drop_after);
        END IF;
    END LOOP;
END
$$;

SELECT apply_storage_policies();

-- Retention of the tables that are not hypertables; the hypertables' is a TimescaleDB job.
CREATE FUNCTION run_retention() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    n bigint;
    total bigint := 0;
BEGIN
    FOR p IN
        SELECT s.*
        FROM storage_policies s
        WHERE s.drop_after IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables h
                          WHERE h.hypertable_schema = current_schema()
                            AND h.hypertable_name = s.relation)
    LOOP
        EXECUTE format('DELETE FROM %I WHERE %I < $1', p.relation, p.time_column)
            USING now() - p.drop_after;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;
