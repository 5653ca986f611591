-- Plain PostgreSQL path: the continuous aggregates are rollup tables in schema `rollup`,
-- refreshed by maintain() up to a watermark per level, and public views with the aggregates'
-- names that union the rolled-up buckets below the watermark with buckets computed at query
-- time from the level beneath (real-time aggregation, as TimescaleDB does it).
-- The views have exactly the columns of the TimescaleDB continuous aggregates.

CREATE SCHEMA rollup;

-- Buckets at or after a level's watermark are not materialized yet.
CREATE TABLE rollup.watermarks (
    name      text        PRIMARY KEY,
    watermark timestamptz NOT NULL
);
INSERT INTO rollup.watermarks (name, watermark)
SELECT n, '-infinity'
FROM unnest(ARRAY['ticker_1s', 'ticker_1m', 'ticker_1h',
                  'trades_1s', 'trades_1m', 'trades_1h']) AS n;

CREATE TABLE rollup.ticker_1s (
    bucket        timestamptz NOT NULL,
    instrument_id integer     NOT NULL,
    open numeric, high numeric, low numeric, close numeric,
    spread_mean numeric, spread_min numeric, spread_max numeric, spread_sum numeric,
    samples       bigint      NOT NULL,
    PRIMARY KEY (instrument_id, bucket)
);
CREATE TABLE rollup.ticker_1m (LIKE rollup.ticker_1s INCLUDING ALL);
CREATE TABLE rollup.ticker_1h (LIKE rollup.ticker_1s INCLUDING ALL);

CREATE TABLE rollup.trades_1s (
    bucket        timestamptz NOT NULL,
    instrument_id integer     NOT NULL,
    open numeric, high numeric, low numeric, close numeric,
    volume numeric, quote_volume numeric, vwap numeric, buy_volume numeric, sell_volume numeric,
    trade_count     bigint NOT NULL,
    agg_trade_count bigint NOT NULL,
    PRIMARY KEY (instrument_id, bucket)
);
CREATE TABLE rollup.trades_1m (LIKE rollup.trades_1s INCLUDING ALL);
CREATE TABLE rollup.trades_1h (LIKE rollup.trades_1s INCLUDING ALL);

-- The aggregation of one level from the level beneath, over [lo, hi). Used both to
-- materialize and (with hi = infinity) for the real-time part of the views, so the two can
-- never disagree. first/last: the value at the earliest/latest time, as TimescaleDB's.
CREATE FUNCTION rollup.ticker_from_raw(lo timestamptz, hi timestamptz)
RETURNS SETOF rollup.ticker_1s
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('second', time), instrument_id,
           (array_agg((bid_price + ask_price) / 2 ORDER BY time))[1],
           max((bid_price + ask_price) / 2),
           min((bid_price + ask_price) / 2),
           (array_agg((bid_price + ask_price) / 2 ORDER BY time DESC))[1],
           sum(ask_price - bid_price) / count(*),
           min(ask_price - bid_price),
           max(ask_price - bid_price),
           sum(ask_price - bid_price),
           count(*)
    FROM book_ticker
    WHERE time >= lo AND time < hi
    GROUP BY 1, 2
$$;

CREATE FUNCTION rollup.ticker_from_rollup(src regclass, unit text, lo timestamptz, hi timestamptz)
RETURNS SETOF rollup.ticker_1s
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT date_trunc(%L, bucket), instrument_id,
               (array_agg(open ORDER BY bucket))[1],
               max(high), min(low),
               (array_agg(close ORDER BY bucket DESC))[1],
               sum(spread_sum) / sum(samples),
               min(spread_min), max(spread_max), sum(spread_sum),
               sum(samples)::bigint
        FROM %s
        WHERE bucket >= $1 AND bucket < $2
        GROUP BY 1, 2 $q$, unit, src)
    USING lo, hi;
END
$$;

CREATE FUNCTION rollup.trades_from_raw(lo timestamptz, hi timestamptz)
RETURNS SETOF rollup.trades_1s
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('second', time), instrument_id,
           (array_agg(price ORDER BY time, agg_trade_id))[1],
           max(price), min(price),
           (array_agg(price ORDER BY time DESC, agg_trade_id DESC))[1],
           sum(qty),
           sum(price * qty),
           sum(price * qty) / nullif(sum(qty), 0),
           sum(CASE WHEN buyer_is_maker THEN 0 ELSE qty END),
           sum(CASE WHEN buyer_is_maker THEN qty ELSE 0 END),
           sum(last_trade_id - first_trade_id + 1)::bigint,
           count(*)
    FROM trades
    WHERE time >= lo AND time < hi
    GROUP BY 1, 2
$$;

CREATE FUNCTION rollup.trades_from_rollup(src regclass, unit text, lo timestamptz, hi timestamptz)
RETURNS SETOF rollup.trades_1s
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT date_trunc(%L, bucket), instrument_id,
               (array_agg(open ORDER BY bucket))[1],
               max(high), min(low),
               (array_agg(close ORDER BY bucket DESC))[1],
               sum(volume), sum(quote_volume),
               sum(quote_volume) / nullif(sum(volume), 0),
               sum(buy_volume), sum(sell_volume),
               sum(trade_count)::bigint, sum(agg_trade_count)::bigint
        FROM %s
        WHERE bucket >= $1 AND bucket < $2
        GROUP BY 1, 2 $q$, unit, src)
    USING lo, hi;
END
$$;

CREATE FUNCTION rollup.watermark(level text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$ SELECT watermark FROM rollup.watermarks WHERE name = level $$;

-- Views named as the continuous aggregates. The real-time branch of a level reads the view of
-- the level beneath, so every level is complete up to the newest raw row.
CREATE VIEW ticker_1s AS
    SELECT * FROM rollup.ticker_1s WHERE bucket < rollup.watermark('ticker_1s')
    UNION ALL
    SELECT * FROM rollup.ticker_from_raw(rollup.watermark('ticker_1s'), 'infinity');
CREATE VIEW ticker_1m AS
    SELECT * FROM rollup.ticker_1m WHERE bucket < rollup.watermark('ticker_1m')
    UNION ALL
    SELECT * FROM rollup.ticker_from_rollup('ticker_1s', 'minute', rollup.watermark('ticker_1m'), 'infinity');
CREATE VIEW ticker_1h AS
    SELECT * FROM rollup.ticker_1h WHERE bucket < rollup.watermark('ticker_1h')
    UNION ALL
    SELECT * FROM rollup.ticker_from_rollup('ticker_1m', 'hour', rollup.watermark('ticker_1h'), 'infinity');
CREATE VIEW trades_1s AS
    SELECT * FROM rollup.trades_1s WHERE bucket < rollup.watermark('trades_1s')
    UNION ALL
    SELECT * FROM rollup.trades_from_raw(rollup.watermark('trades_1s'), 'infinity');
CREATE VIEW trades_1m AS
    SELECT * FROM rollup.trades_1m WHERE bucket < rollup.watermark('trades_1m')
    UNION ALL
    SELECT * FROM rollup.trades_from_rollup('trades_1s', 'minute', rollup.watermark('trades_1m'), 'infinity');
CREATE VIEW trades_1h AS
    SELECT * FROM rollup.trades_1h WHERE bucket < rollup.watermark('trades_1h')
    UNION ALL
    SELECT * FROM rollup.trades_from_rollup('trades_1m', 'hour', rollup.watermark('trades_1h'), 'infinity');

-- Rows written late (a spool replay) below a watermark: lower the watermarks so the next
-- refresh recomputes those buckets; until then the views compute them from raw rows.
CREATE FUNCTION invalidate_aggregates(since timestamptz) RETURNS void
LANGUAGE sql AS $$
    UPDATE rollup.watermarks
    SET watermark = least(watermark, date_trunc(
        CASE WHEN name LIKE '%_1h' THEN 'hour' WHEN name LIKE '%_1m' THEN 'minute' ELSE 'second' END,
        since))
$$;

-- Materialize every level up to `settled` (rows older than that are assumed complete), each
-- level no further than the level beneath it. Returns the number of buckets written.
CREATE FUNCTION rollup.refresh(settled timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    fam text;
    lvl record;
    old_wm timestamptz;
    new_wm timestamptz;
    below timestamptz;
    n bigint;
    total bigint := 0;
BEGIN
    FOREACH fam IN ARRAY ARRAY['ticker', 'trades'] LOOP
        below := settled;
        FOR lvl IN SELECT * FROM (VALUES (1, '1s', 'second'), (2, '1m', 'minute'), (3, '1h', 'hour'))
                   AS v(ord, suffix, unit) ORDER BY ord LOOP
            SELECT watermark INTO old_wm FROM rollup.watermarks
            WHERE name = fam || '_' || lvl.suffix FOR UPDATE;
            new_wm := date_trunc(lvl.unit, below);
            IF new_wm > old_wm THEN
                EXECUTE format('DELETE FROM rollup.%I WHERE bucket >= $1 AND bucket < $2',
                               fam || '_' || lvl.suffix)
                    USING old_wm, new_wm;
                IF lvl.ord = 1 THEN
                    EXECUTE format('INSERT INTO rollup.%I SELECT * FROM rollup.%I($1, $2)',
                                   fam || '_1s', fam || '_from_raw')
                        USING old_wm, new_wm;
                ELSE
                    EXECUTE format('INSERT INTO rollup.%I SELECT * FROM rollup.%I($1, $2, $3, $4)',
                                   fam || '_' || lvl.suffix, fam || '_from_rollup')
                        USING format('rollup.%I', fam || '_' || (CASE lvl.ord WHEN 2 THEN '1s' ELSE '1m' END))::regclass,
                              lvl.unit, old_wm, new_wm;
                END IF;
                GET DIAGNOSTICS n = ROW_COUNT;
                total := total + n;
                UPDATE rollup.watermarks SET watermark = new_wm WHERE name = fam || '_' || lvl.suffix;
            END IF;
            below := greatest(old_wm, new_wm);
        END LOOP;
    END LOOP;
    RETURN total;
END
$$;

-- Periodic housekeeping, called by ingest (and `ingest maintain`): materialize aggregates of
-- rows older than a few seconds, then apply retention.
CREATE FUNCTION maintain() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    buckets bigint;
    deleted bigint;
BEGIN
    buckets := rollup.refresh(now() - interval '5 seconds');
    deleted := run_retention();
    RETURN format('%s aggregate buckets materialized; %s rows past retention deleted',
                  buckets, deleted);
END
$$;
