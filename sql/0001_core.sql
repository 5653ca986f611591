-- Reference data and ledgers: small, ordinary tables on both paths.

CREATE TABLE instruments (
    id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    venue            text        NOT NULL CHECK (venue IN ('spot', 'usdm')),
    symbol           text        NOT NULL CHECK (symbol ~ '^[A-Z0-9_]+$'),
    base             text        NOT NULL,
    quote            text        NOT NULL,
    -- Exchange status as sent (TRADING, BREAK, ...).
    status           text        NOT NULL,
    -- Exact tick and step sizes from exchangeInfo (PRICE_FILTER / LOT_SIZE), as sent.
    tick_size        numeric     NOT NULL CHECK (tick_size > 0),
    step_size        numeric     NOT NULL CHECK (step_size > 0),
    -- Priority by 24 h quote-volume rank (DESIGN §3); NULL when pinned or unranked.
    tier             text        CHECK (tier IN ('critical', 'high', 'medium', 'low')),
    volume_rank      integer     CHECK (volume_rank > 0),
    quote_volume_24h numeric,
    -- Collected right now.
    active           boolean     NOT NULL DEFAULT false,
    listed_at        timestamptz NOT NULL DEFAULT now(),
    delisted_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (venue, symbol)
);

-- Every (re)synchronisation of a book opens a new epoch; ids are unique across instruments.
CREATE SEQUENCE sync_epochs AS bigint;

-- The data-quality ledger. An epoch runs from its 'synced' event (the snapshot checkpoint) to
-- the first 'gap' or 'stopped' event of the same epoch; the book is exact inside an epoch and
-- unknown between epochs. For 'gap' and 'stopped', `time` is the event time of the last update
-- applied, so the book is exact up to and including `time`.
CREATE TABLE sync_events (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time            timestamptz NOT NULL,
    instrument_id   integer     NOT NULL REFERENCES instruments (id),
    epoch           bigint,
    kind            text        NOT NULL CHECK (kind IN (
                        'synced',        -- a snapshot was applied; epoch starts
                        'gap',           -- update ids missing; epoch ends
                        'stopped',       -- collection stopped (shutdown, crash found at start); epoch ends
                        'resync',        -- a new snapshot was requested
                        'disconnect',    -- the connection carrying the stream dropped
                        'stale',         -- no data for too long; the stream was reconnected
                        'rate_limited'   -- a snapshot request was delayed by 429/418
                    )),
    -- For 'gap': the missing update-id range (inclusive); for 'synced': the snapshot's id.
    first_update_id bigint,
    last_update_id  bigint,
    detail          text,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (kind NOT IN ('synced', 'gap', 'stopped') OR epoch IS NOT NULL),
    CHECK (first_update_id IS NULL OR last_update_id IS NULL OR first_update_id <= last_update_id)
);
CREATE INDEX sync_events_instrument_time ON sync_events (instrument_id, time);
CREATE INDEX sync_events_epoch ON sync_events (epoch) WHERE kind IN ('gap', 'stopped');

-- One row per committed write batch, in the same transaction as the batch: replaying a batch
-- from the disk spool after an outage finds its id here and writes nothing twice.
CREATE TABLE ingest_batches (
    batch_id     text        PRIMARY KEY,
    relation     text        NOT NULL,
    rows         integer     NOT NULL CHECK (rows >= 0),
    first_time   timestamptz,
    last_time    timestamptz,
    spooled      boolean     NOT NULL DEFAULT false,
    committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_batches_committed_at ON ingest_batches (committed_at);

-- Chunking, compression and retention per time-series table. `ingest migrate --retention`,
-- `--compress-after` change the rows; apply_storage_policies() makes them effective.
-- NULL drop_after keeps data forever. Tables that are not hypertables (ingest_batches) only
-- get retention, by maintain().
CREATE TABLE storage_policies (
    relation       text     PRIMARY KEY,
    time_column    text     NOT NULL DEFAULT 'time',
    chunk_interval interval NOT NULL CHECK (chunk_interval > interval '0'),
    compress_after interval CHECK (compress_after > interval '0'),
    drop_after     interval CHECK (drop_after > interval '0')
);
INSERT INTO storage_policies (relation, chunk_interval, compress_after, drop_after) VALUES
    ('depth_updates',    interval '1 hour',  interval '2 hours',  interval '30 days'),
    ('book_checkpoints', interval '1 day',   interval '1 day',    NULL),
    ('book_top',         interval '6 hours', interval '12 hours', NULL),
    ('book_ticker',      interval '1 hour',  interval '2 hours',  interval '30 days'),
    ('trades',           interval '6 hours', interval '6 hours',  NULL),
    ('mark_prices',      interval '1 day',   interval '1 day',    NULL);
INSERT INTO storage_policies (relation, time_column, chunk_interval, compress_after, drop_after)
VALUES ('ingest_batches', 'committed_at', interval '1 day', NULL, interval '7 days');
