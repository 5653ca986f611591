-- The plain path's and the Apache edition's rollups learn of rows committed after their
-- buckets were materialized here (0015_late_rows.pg.sql). Continuous aggregates keep their
-- own invalidation log of such rows, so there is nothing to add on this path.
SELECT 1;
