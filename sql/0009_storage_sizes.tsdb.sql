-- What each market-data table takes on disk, for Grafana's Host dashboard and ingest's metrics
-- (alerts before the disk fills). On TimescaleDB a hypertable's size counts its chunks and its
-- compressed chunks; `uncompressed_bytes` is what the compressed chunks took before compression
-- plus what is not compressed yet, so `uncompressed_bytes / bytes` is the compression ratio.
CREATE FUNCTION storage_sizes()
RETURNS TABLE (relation text, bytes int8, uncompressed_bytes int8)
LANGUAGE sql STABLE AS $$
    SELECT t,
           coalesce(hypertable_size(to_regclass(t)), pg_total_relation_size(to_regclass(t)))::int8,
           (coalesce(hypertable_size(to_regclass(t)), pg_total_relation_size(to_regclass(t)))
            - coalesce(s.after_compression_total_bytes, 0)
            + coalesce(s.before_compression_total_bytes, 0))::int8
    FROM unnest(ARRAY['depth_updates', 'book_checkpoints', 'book_top', 'book_ticker',
                      'trades', 'mark_prices', 'sync_events']) t
    LEFT JOIN LATERAL (
        SELECT sum(c.before_compression_total_bytes) AS before_compression_total_bytes,
               sum(c.after_compression_total_bytes) AS after_compression_total_bytes
        FROM hypertable_compression_stats(to_regclass(t)) c
        WHERE EXISTS (SELECT 1 FROM timescaledb_information.hypertables h
                      WHERE h.hypertable_schema = 'public' AND h.hypertable_name = t)
    ) s ON true
    WHERE to_regclass(t) IS NOT NULL
$$;

GRANT EXECUTE ON FUNCTION storage_sizes() TO depthbook_reader;
