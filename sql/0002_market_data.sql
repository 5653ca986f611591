-- The time-series tables. Created as ordinary tables here; on the TimescaleDB path the next
-- migration turns them into compressed hypertables. Prices and quantities are `numeric`,
-- exactly as the exchange sent them (see README, "Price representation").
-- `time` is always the exchange's event time where the message carries one; `received_at` is
-- the collector's clock when the message arrived.

-- One row per changed level of a diff depth event (<symbol>@depth@100ms).
CREATE TABLE depth_updates (
    time            timestamptz NOT NULL,   -- E
    instrument_id   integer     NOT NULL,
    first_update_id bigint      NOT NULL,   -- U
    update_id       bigint      NOT NULL,   -- u
    prev_update_id  bigint,                 -- pu (USD-M futures only)
    side            text        NOT NULL CHECK (side IN ('bid', 'ask')),
    price           numeric     NOT NULL CHECK (price >= 0),
    qty             numeric     NOT NULL CHECK (qty >= 0),   -- 0 removes the level
    received_at     timestamptz NOT NULL,
    CHECK (first_update_id <= update_id)
);
CREATE INDEX depth_updates_instrument_time ON depth_updates (instrument_id, time, update_id);

-- The full local book: at every sync (the REST snapshot, kind 'snapshot') and periodically
-- ('periodic'). Levels as parallel arrays, best first. `time` is never later than the event
-- time of any update with a higher update_id in the same epoch, so book_at can start its scan
-- of depth_updates at the checkpoint's time.
CREATE TABLE book_checkpoints (
    time          timestamptz NOT NULL,
    instrument_id integer     NOT NULL,
    epoch         bigint      NOT NULL,
    update_id     bigint      NOT NULL,     -- the book includes every update up to this id
    kind          text        NOT NULL CHECK (kind IN ('snapshot', 'periodic')),
    bid_prices    numeric[]   NOT NULL,
    bid_qtys      numeric[]   NOT NULL,
    ask_prices    numeric[]   NOT NULL,
    ask_qtys      numeric[]   NOT NULL,
    received_at   timestamptz NOT NULL,
    CHECK (cardinality(bid_prices) = cardinality(bid_qtys)),
    CHECK (cardinality(ask_prices) = cardinality(ask_qtys))
);
CREATE INDEX book_checkpoints_instrument_time ON book_checkpoints (instrument_id, time DESC);

-- Top-N levels (N = 20) and features, sampled at a fixed cadence.
CREATE TABLE book_top (
    time              timestamptz NOT NULL,
    instrument_id     integer     NOT NULL,
    update_id         bigint      NOT NULL,
    bid_prices        numeric[]   NOT NULL,
    bid_qtys          numeric[]   NOT NULL,
    ask_prices        numeric[]   NOT NULL,
    ask_qtys          numeric[]   NOT NULL,
    mid               numeric,              -- (best bid + best ask) / 2, exact
    spread            numeric,              -- best ask - best bid, exact
    microprice        numeric,              -- (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)
    imbalance_1       double precision,     -- (bid_qty - ask_qty) / (bid_qty + ask_qty) over top 1
    imbalance_5       double precision,
    imbalance_10      double precision,
    bid_depth_10bps   numeric,              -- quantity within 10 bps of mid
    ask_depth_10bps   numeric,
    bid_depth_50bps   numeric,
    ask_depth_50bps   numeric,
    bid_wall_price    numeric,              -- largest level among the top N
    bid_wall_qty      numeric,
    bid_wall_bps      double precision,     -- its distance from mid in bps
    ask_wall_price    numeric,
    ask_wall_qty      numeric,
    ask_wall_bps      double precision
);
CREATE INDEX book_top_instrument_time ON book_top (instrument_id, time);

-- <symbol>@bookTicker. Spot messages carry no event time: there `time` = received_at.
CREATE TABLE book_ticker (
    time          timestamptz NOT NULL,
    instrument_id integer     NOT NULL,
    update_id     bigint      NOT NULL,     -- u
    bid_price     numeric     NOT NULL,
    bid_qty       numeric     NOT NULL,
    ask_price     numeric     NOT NULL,
    ask_qty       numeric     NOT NULL,
    received_at   timestamptz NOT NULL
);
CREATE INDEX book_ticker_instrument_time ON book_ticker (instrument_id, time);

-- <symbol>@aggTrade. `time` is the trade time T.
CREATE TABLE trades (
    time           timestamptz NOT NULL,
    instrument_id  integer     NOT NULL,
    agg_trade_id   bigint      NOT NULL,    -- a
    price          numeric     NOT NULL,
    qty            numeric     NOT NULL,
    first_trade_id bigint      NOT NULL,    -- f
    last_trade_id  bigint      NOT NULL,    -- l
    buyer_is_maker boolean     NOT NULL,    -- m
    event_time     timestamptz NOT NULL,    -- E
    received_at    timestamptz NOT NULL
);
CREATE INDEX trades_instrument_time ON trades (instrument_id, time, agg_trade_id);

-- <symbol>@markPrice@1s (USD-M futures).
CREATE TABLE mark_prices (
    time                   timestamptz NOT NULL,   -- E
    instrument_id          integer     NOT NULL,
    mark_price             numeric     NOT NULL,   -- p
    index_price            numeric,                -- i
    estimated_settle_price numeric,                -- P
    funding_rate           numeric,                -- r
    next_funding_time      timestamptz,            -- T
    received_at            timestamptz NOT NULL
);
CREATE INDEX mark_prices_instrument_time ON mark_prices (instrument_id, time);
