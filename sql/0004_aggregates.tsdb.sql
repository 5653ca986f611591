-- Hierarchical continuous aggregates with real-time aggregation (materialized_only = false:
-- buckets not yet materialized are computed from the raw rows at query time).
-- Means are carried as sums and counts so that every level aggregates the level below exactly.

CREATE MATERIALIZED VIEW ticker_1s
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 second', time)          AS bucket,
       instrument_id,
       first((bid_price + ask_price) / 2, time)         AS open,
       max((bid_price + ask_price) / 2)                 AS high,
       min((bid_price + ask_price) / 2)                 AS low,
       last((bid_price + ask_price) / 2, time)          AS close,
       sum(ask_price - bid_price) / count(*)            AS spread_mean,
       min(ask_price - bid_price)                       AS spread_min,
       max(ask_price - bid_price)                       AS spread_max,
       sum(ask_price - bid_price)                       AS spread_sum,
       count(*)                                         AS samples
FROM book_ticker
GROUP BY 1, 2
WITH NO DATA;

CREATE MATERIALIZED VIEW ticker_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 minute', bucket)         AS bucket,
       instrument_id,
       first(open, bucket)                              AS open,
       max(high)                                        AS high,
       min(low)                                         AS low,
       last(close, bucket)                              AS close,
       sum(spread_sum) / sum(samples)                   AS spread_mean,
       min(spread_min)                                  AS spread_min,
       max(spread_max)                                  AS spread_max,
       sum(spread_sum)                                  AS spread_sum,
       sum(samples)::bigint                             AS samples
FROM ticker_1s
GROUP BY 1, 2
WITH NO DATA;

CREATE MATERIALIZED VIEW ticker_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 hour', bucket)           AS bucket,
       instrument_id,
       first(open, bucket)                              AS open,
       max(high)                                        AS high,
       min(low)                                         AS low,
       last(close, bucket)                              AS close,
       sum(spread_sum) / sum(samples)                   AS spread_mean,
       min(spread_min)                                  AS spread_min,
       max(spread_max)                                  AS spread_max,
       sum(spread_sum)                                  AS spread_sum,
       sum(samples)::bigint                             AS samples
FROM ticker_1m
GROUP BY 1, 2
WITH NO DATA;

-- Taker side: buyer_is_maker means the seller was the taker.
CREATE MATERIALIZED VIEW trades_1s
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 second', time)                          AS bucket,
       instrument_id,
       first(price, time)                                              AS open,
       max(price)                                                      AS high,
       min(price)                                                      AS low,
       last(price, time)                                               AS close,
       sum(qty)                                                        AS volume,
       sum(price * qty)                                                AS quote_volume,
       sum(price * qty) / nullif(sum(qty), 0)                          AS vwap,
       sum(CASE WHEN buyer_is_maker THEN 0 ELSE qty END)               AS buy_volume,
       sum(CASE WHEN buyer_is_maker THEN qty ELSE 0 END)               AS sell_volume,
       sum(last_trade_id - first_trade_id + 1)::bigint                 AS trade_count,
       count(*)                                                        AS agg_trade_count
FROM trades
GROUP BY 1, 2
WITH NO DATA;

CREATE MATERIALIZED VIEW trades_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 minute', bucket)         AS bucket,
       instrument_id,
       first(open, bucket)                              AS open,
       max(high)                                        AS high,
       min(low)                                         AS low,
       last(close, bucket)                              AS close,
       sum(volume)                                      AS volume,
       sum(quote_volume)                                AS quote_volume,
       sum(quote_volume) / nullif(sum(volume), 0)       AS vwap,
       sum(buy_volume)                                  AS buy_volume,
       sum(sell_volume)                                 AS sell_volume,
       sum(trade_count)::bigint                         AS trade_count,
       sum(agg_trade_count)::bigint                     AS agg_trade_count
FROM trades_1s
GROUP BY 1, 2
WITH NO DATA;

CREATE MATERIALIZED VIEW trades_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 hour', bucket)           AS bucket,
       instrument_id,
       first(open, bucket)                              AS open,
       max(high)                                        AS high,
       min(low)                                         AS low,
       last(close, bucket)                              AS close,
       sum(volume)                                      AS volume,
       sum(quote_volume)                                AS quote_volume,
       sum(quote_volume) / nullif(sum(volume), 0)       AS vwap,
       sum(buy_volume)                                  AS buy_volume,
       sum(sell_volume)                                 AS sell_volume,
       sum(trade_count)::bigint                         AS trade_count,
       sum(agg_trade_count)::bigint                     AS agg_trade_count
FROM trades_1m
GROUP BY 1, 2
WITH NO DATA;

-- Refresh windows: each level re-materializes a window wide enough to absorb late rows (a spool
-- replay after a longer outage calls refresh_continuous_aggregate for its own range).
SELECT add_continuous_aggregate_policy('ticker_1s', start_offset => interval '15 minutes',
    end_offset => interval '2 seconds', schedule_interval => interval '10 seconds');
SELECT add_continuous_aggregate_policy('ticker_1m', start_offset => interval '3 hours',
    end_offset => interval '1 minute', schedule_interval => interval '1 minute');
SELECT add_continuous_aggregate_policy('ticker_1h', start_offset => interval '3 days',
    end_offset => interval '1 hour', schedule_interval => interval '15 minutes');
SELECT add_continuous_aggregate_policy('trades_1s', start_offset => interval '15 minutes',
    end_offset => interval '2 seconds', schedule_interval => interval '10 seconds');
SELECT add_continuous_aggregate_policy('trades_1m', start_offset => interval '3 hours',
    end_offset => interval '1 minute', schedule_interval => interval '1 minute');
SELECT add_continuous_aggregate_policy('trades_1h', start_offset => interval '3 days',
    end_offset => interval '1 hour', schedule_interval => interval '15 minutes');

-- Periodic housekeeping, called by ingest. TimescaleDB's jobs do the heavy part here.
CREATE FUNCTION maintain() RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN format('timescaledb jobs refresh aggregates; %s ledger rows past retention deleted',
                  run_retention());
END
$$;
