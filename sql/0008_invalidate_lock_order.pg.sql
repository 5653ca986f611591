-- invalidate_aggregates() (a spool replay) and rollup.refresh() (maintain()) both lock the rows
-- of rollup.watermarks. 0004's single UPDATE took them in whatever order the heap held them, and
-- rollup.refresh() takes them one by one, ticker then trades, finest first: run together, each
-- could hold a row the other waits for, and PostgreSQL aborted one of them as a deadlock (seen
-- as aggregates left short after an outage). Now both take the rows in the same order.
CREATE OR REPLACE FUNCTION invalidate_aggregates(since timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    level text;
BEGIN
    FOREACH level IN ARRAY ARRAY['ticker_1s', 'ticker_1m', 'ticker_1h',
                                 'trades_1s', 'trades_1m', 'trades_1h'] LOOP
        UPDATE rollup.watermarks
        SET watermark = least(watermark, date_trunc(
            CASE WHEN name LIKE '%_1h' THEN 'hour' WHEN name LIKE '%_1m' THEN 'minute' ELSE 'second' END,
            since))
        WHERE name = level;
    END LOOP;
END
$$;
