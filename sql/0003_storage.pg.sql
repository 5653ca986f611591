-- Plain PostgreSQL path: the same tables stay ordinary heaps. Rows arrive in time order, so a
-- BRIN index on time is nearly free and lets retention find old rows without a full scan.

CREATE INDEX depth_updates_time_brin    ON depth_updates    USING brin (time);
CREATE INDEX book_checkpoints_time_brin ON book_checkpoints USING brin (time);
CREATE INDEX book_top_time_brin         ON book_top         USING brin (time);
CREATE INDEX book_ticker_time_brin      ON book_ticker      USING brin (time);
CREATE INDEX trades_time_brin           ON trades           USING brin (time);
CREATE INDEX mark_prices_time_brin      ON mark_prices      USING brin (time);

-- There are no background jobs without TimescaleDB: chunking and compression do not apply,
-- and retention runs in run_retention(), which ingest calls periodically through maintain().
CREATE FUNCTION apply_storage_policies() RETURNS void
LANGUAGE sql AS $$ SELECT $$;

CREATE FUNCTION run_retention() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    n bigint;
    total bigint := 0;
BEGIN
    FOR p IN SELECT * FROM storage_policies WHERE drop_after IS NOT NULL LOOP
        EXECUTE format('DELETE FROM %I WHERE %I < $1', p.relation, p.time_column)
            USING now() - p.drop_after;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;
