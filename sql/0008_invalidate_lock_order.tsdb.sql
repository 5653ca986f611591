-- The plain path's and the Apache edition's rollup watermarks change their locking order here
-- (0008_invalidate_lock_order.pg.sql); continuous aggregates have no such watermarks, so there
-- is nothing to change on this path.
SELECT 1;
