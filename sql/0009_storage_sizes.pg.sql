-- What each market-data table takes on disk, for Grafana's Host dashboard and ingest's metrics
-- (alerts before the disk fills). Here (plain PostgreSQL, and TimescaleDB's Apache edition,
-- whose hypertables are uncompressed) a table's size is its own plus its partitions' or chunks'
-- (pg_inherits), indexes and TOAST included; nothing is compressed, so both sizes are equal.
CREATE FUNCTION storage_sizes()
RETURNS TABLE (relation text, bytes int8, uncompressed_bytes int8)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE tree (root, rel) AS (
        SELECT t, to_regclass(t)
        FROM unnest(ARRAY['depth_updates', 'book_checkpoints', 'book_top', 'book_ticker',
                          'trades', 'mark_prices', 'sync_events']) t
        WHERE to_regclass(t) IS NOT NULL
        UNION ALL
        SELECT tree.root, i.inhrelid::regclass
        FROM tree JOIN pg_inherits i ON i.inhparent = tree.rel
    )
    SELECT root, sum(pg_total_relation_size(rel))::int8, sum(pg_total_relation_size(rel))::int8
    FROM tree GROUP BY root
$$;

GRANT EXECUTE ON FUNCTION storage_sizes() TO depthbook_reader;
