-- TimescaleDB's Apache-2 edition (timescaledb.license = apache, as managed PostgreSQL services
-- ship it): hypertables and chunk management, but no compression and no policy jobs. Retention
-- therefore runs in run_retention(), called by maintain(), and drops whole chunks.

-- The migrator creates the timescaledb extension in a transaction of its own before this runs.
-- Chunk intervals as on the community edition (0003_storage.tsdb.sql says why).
SELECT create_hypertable('depth_updates',    'time', chunk_time_interval => interval '1 hour');
SELECT create_hypertable('book_checkpoints', 'time', chunk_time_interval => interval '1 day');
SELECT create_hypertable('book_top',         'time', chunk_time_interval => interval '6 hours');
SELECT create_hypertable('book_ticker',      'time', chunk_time_interval => interval '1 hour');
SELECT create_hypertable('trades',           'time', chunk_time_interval => interval '6 hours');
SELECT create_hypertable('mark_prices',      'time', chunk_time_interval => interval '1 day');

-- Makes storage_policies effective as far as this edition can: the chunk interval (for chunks
-- created from now on). compress_after is kept but has no effect here.
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
    END LOOP;
END
$$;

SELECT apply_storage_policies();

-- Retention for every table with a drop_after: hypertables lose the chunks that lie wholly
-- before the cutoff (drop_chunks, which this edition has), other tables the rows. Returns the
-- number of rows deleted plus the number of chunks dropped.
CREATE FUNCTION run_retention() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    n bigint;
    total bigint := 0;
BEGIN
    FOR p IN
        SELECT s.*, h.hypertable_name IS NOT NULL AS is_hypertable
        FROM storage_policies s
        LEFT JOIN timescaledb_information.hypertables h
          ON h.hypertable_schema = current_schema() AND h.hypertable_name = s.relation
        WHERE s.drop_after IS NOT NULL
    LOOP
        IF p.is_hypertable THEN
            SELECT count(*) INTO n FROM drop_chunks(p.relation::regclass, older_than => now() - p.drop_after);
        ELSE
            EXECUTE format('DELETE FROM %I WHERE %I < $1', p.relation, p.time_column)
                USING now() - p.drop_after;
            GET DIAGNOSTICS n = ROW_COUNT;
        END IF;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;
