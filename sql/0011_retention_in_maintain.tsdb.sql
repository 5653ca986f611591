-- TimescaleDB's retention jobs drop chunks at drop_after whatever the daily files hold. From
-- 0010 on, retention runs in run_retention() (maintain()) on this path too, gated by the verified
-- archive, so the jobs go, and apply_storage_policies() keeps chunking and compression only.
CREATE OR REPLACE FUNCTION apply_storage_policies() RETURNS void
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
    END LOOP;
END
$$;

-- Only the retention jobs go now; compression jobs stay as they are.
SELECT remove_retention_policy(format('%I', h.hypertable_name)::regclass, if_exists => true)
FROM timescaledb_information.hypertables h
WHERE h.hypertable_schema = current_schema();
