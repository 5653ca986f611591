-- Hot and cold tiers. A table whose policy names a daily data type (`archive_as`) keeps its rows
-- until that type's daily files hold them, verified: `ingest daily` counts every file's rows
-- against the database and reads every uploaded object back before it lists the day in
-- `archive_days`. run_retention() drops no older than the first day, from the oldest listed on,
-- that is not listed; rows that reach a listed day after its files were started take the day off
-- the list again. The database is the hot tier; the daily files (a directory, a bucket) the cold.

ALTER TABLE storage_policies
    -- The daily data type whose verified files must hold a day before it is dropped (NULL:
    -- dropped at drop_after without files).
    ADD COLUMN archive_as text,
    -- Everything older has left the table (retention moved it); book_at, the exporter and the
    -- API call such times cold.
    ADD COLUMN dropped_before timestamptz;

UPDATE storage_policies SET archive_as = CASE relation
    WHEN 'depth_updates'    THEN 'incremental_book_L2'
    -- A checkpoint is of no use without the updates after it, and the L2 files open every
    -- known stretch with the full book.
    WHEN 'book_checkpoints' THEN 'incremental_book_L2'
    WHEN 'book_ticker'      THEN 'quotes'
    WHEN 'trades'           THEN 'trades'
    WHEN 'mark_prices'      THEN 'derivative_ticker'
END;
UPDATE storage_policies
SET drop_after = (SELECT drop_after FROM storage_policies WHERE relation = 'depth_updates')
WHERE relation = 'book_checkpoints' AND drop_after IS NULL;

-- One row per data type and UTC day whose files (every symbol, every venue that has the type)
-- are written and verified.
CREATE TABLE archive_days (
    data_type   text        NOT NULL,
    day         date        NOT NULL,
    files       integer     NOT NULL CHECK (files >= 0),
    rows        bigint      NOT NULL CHECK (rows >= 0),
    -- Where the files are: the daily directory, and the bucket's URL when there is one.
    location    text        NOT NULL,
    -- The database's clock when the day's first file was started: a batch committed later may
    -- be missing from the files.
    exported_at timestamptz NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (data_type, day)
);

-- How far run_retention() has read the ingest_batches ledger for late rows.
CREATE TABLE archive_ledger_seen (
    one  boolean     PRIMARY KEY DEFAULT true CHECK (one),
    upto timestamptz NOT NULL
);
INSERT INTO archive_ledger_seen (upto) VALUES (now());

CREATE FUNCTION utc_day_start(d date) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$ SELECT d::timestamp AT TIME ZONE 'UTC' $$;

-- The time before which every row of `p_relation` is in verified files: the start of the first
-- day, from its type's oldest listed day on, that is not listed. NULL when no day is listed, or
-- when the table holds rows older than the oldest listed day (they were never archived).
CREATE FUNCTION archived_before(p_relation text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    kind   text;
    oldest date;
    d      date;
BEGIN
    SELECT archive_as INTO kind FROM storage_policies WHERE relation = p_relation;
    IF kind IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT min(day) INTO oldest FROM archive_days WHERE data_type = kind;
    IF oldest IS NULL
       OR has_rows_between(p_relation, '-infinity', utc_day_start(oldest)) THEN
        RETURN NULL;
    END IF;
    -- The first day after the run of listed days that starts at the oldest: one pass over the
    -- type's listed days (one row a day, kept after the day is dropped).
    SELECT min(a.day + 1) INTO d
    FROM archive_days a
    WHERE a.data_type = kind AND a.day >= oldest
      AND NOT EXISTS (SELECT 1 FROM archive_days n
                      WHERE n.data_type = a.data_type AND n.day = a.day + 1);
    RETURN utc_day_start(d);
END
$$;

-- Batches committed since the last look that carry rows of a listed day started before them take
-- that day off the list: its files may lack those rows. Overlaps the previous look by five
-- minutes, since a batch's committed_at is stamped before its transaction commits.
CREATE FUNCTION unlist_late_days() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    since timestamptz;
    n     bigint;
BEGIN
    SELECT upto - interval '5 minutes' INTO since FROM archive_ledger_seen FOR UPDATE;
    UPDATE archive_ledger_seen SET upto = now();
    DELETE FROM archive_days a
    USING storage_policies sp, ingest_batches b
    WHERE b.committed_at > since
      AND sp.relation = b.relation AND a.data_type = sp.archive_as
      AND b.committed_at > a.exported_at
      AND b.first_time < utc_day_start(a.day + 1)
      AND b.last_time >= utc_day_start(a.day);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Retention on every path: rows older than drop_after go, but for a table with `archive_as`
-- never past archived_before(). Hypertables (both TimescaleDB editions) lose whole chunks,
-- other tables rows. `dropped_before` records the cut. Returns rows deleted plus chunks dropped.
CREATE OR REPLACE FUNCTION run_retention() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p        record;
    cutoff   timestamptz;
    archived timestamptz;
    hyper    boolean;
    n        bigint;
    total    bigint := 0;
BEGIN
    PERFORM unlist_late_days();
    FOR p IN SELECT * FROM storage_policies WHERE drop_after IS NOT NULL ORDER BY relation LOOP
        cutoff := now() - p.drop_after;
        IF p.archive_as IS NOT NULL THEN
            archived := archived_before(p.relation);
            CONTINUE WHEN archived IS NULL;
            cutoff := least(cutoff, archived);
        END IF;
        hyper := false;
        IF to_regclass('timescaledb_information.hypertables') IS NOT NULL THEN
            EXECUTE 'SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                     WHERE hypertable_schema = current_schema() AND hypertable_name = $1)'
                INTO hyper USING p.relation;
        END IF;
        IF hyper THEN
            EXECUTE 'SELECT count(*) FROM drop_chunks($1::regclass, older_than => $2)'
                INTO n USING p.relation, cutoff;
        ELSE
            EXECUTE format('DELETE FROM %I WHERE %I < $1', p.relation, p.time_column)
                USING cutoff;
            GET DIAGNOSTICS n = ROW_COUNT;
        END IF;
        UPDATE storage_policies
        SET dropped_before = greatest(coalesce(dropped_before, cutoff), cutoff)
        WHERE relation = p.relation;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;

-- Whether `p_relation` has rows in [p_from, p_to).
CREATE FUNCTION has_rows_between(p_relation text, p_from timestamptz, p_to timestamptz)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    col text;
    found boolean;
BEGIN
    SELECT time_column INTO col FROM storage_policies WHERE relation = p_relation;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                   p_relation, col, col)
        INTO found USING p_from, p_to;
    RETURN found;
END
$$;

-- Where each table's hot tier starts and how far its files reach, for ingest's metrics, the API
-- and the Host dashboard. `blocked`: rows past drop_after are waiting for verified files.
CREATE FUNCTION retention_status()
RETURNS TABLE (relation text, drop_after interval, archive_as text, dropped_before timestamptz,
               archived_before timestamptz, blocked boolean)
LANGUAGE sql STABLE AS $$
    SELECT s.relation, s.drop_after, s.archive_as, s.dropped_before, a.at,
           CASE WHEN s.drop_after IS NULL OR s.archive_as IS NULL THEN false
                WHEN a.at >= now() - s.drop_after THEN false
                ELSE has_rows_between(s.relation, coalesce(a.at, '-infinity'), now() - s.drop_after)
           END
    FROM storage_policies s, LATERAL (SELECT archived_before(s.relation) AS at) a
    ORDER BY s.relation
$$;

GRANT SELECT ON archive_days, archive_ledger_seen TO depthbook_reader;
REVOKE EXECUTE ON FUNCTION unlist_late_days(), run_retention() FROM PUBLIC, depthbook_reader;

-- book_at as in 0007 (same answers), except where the hot tier ends: a time is cold (DB003)
-- when it is older than what retention actually dropped (`dropped_before`, not now() minus
-- drop_after: an unarchived day stays and stays readable), or when its book would start from a
-- checkpoint older than that cut, whose following updates are gone.
CREATE OR REPLACE FUNCTION book_at(p_instrument integer, p_at timestamptz, p_depth integer DEFAULT 1000)
RETURNS TABLE (side text, level integer, price numeric, qty numeric,
               book_update_id bigint, book_time timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c        record;
    ended    record;
    horizon  timestamptz;
    head     record;
BEGIN
    IF p_depth IS NULL OR p_depth < 1 THEN
        RAISE EXCEPTION 'book_at: depth must be at least 1, got %', p_depth
            USING ERRCODE = '22023';
    END IF;
    IF p_at IS NULL THEN
        RAISE EXCEPTION 'book_at: the time must not be null' USING ERRCODE = '22023';
    END IF;

    SELECT sp.dropped_before INTO horizon
    FROM storage_policies sp WHERE sp.relation = 'depth_updates';
    IF horizon IS NOT NULL AND p_at < horizon THEN
        RAISE EXCEPTION 'book_at: % is cold: depth before % has left the database for the daily files (archive_days lists them)',
            p_at, horizon USING ERRCODE = 'DB003';
    END IF;

    SELECT bc.time, bc.epoch, bc.update_id,
           bc.bid_prices, bc.bid_qtys, bc.ask_prices, bc.ask_qtys
    INTO c
    FROM book_checkpoints bc
    WHERE bc.instrument_id = p_instrument AND bc.time <= p_at
    ORDER BY bc.time DESC, bc.update_id DESC
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'book_at: no book recorded for instrument % at or before %',
            p_instrument, p_at USING ERRCODE = 'DB002';
    END IF;
    -- The updates after a checkpoint older than the cut are gone, in part at least.
    IF horizon IS NOT NULL AND c.time < horizon THEN
        RAISE EXCEPTION 'book_at: % is cold: its book starts from a checkpoint at %, and depth before % has left the database for the daily files (archive_days lists them)',
            p_at, c.time, horizon USING ERRCODE = 'DB003';
    END IF;

    SELECT e.time, e.kind, e.first_update_id, e.last_update_id INTO ended
    FROM sync_events e
    WHERE e.epoch = c.epoch AND e.kind IN ('gap', 'stopped') AND e.time < p_at
    ORDER BY e.time
    LIMIT 1;
    IF FOUND THEN
        IF ended.kind = 'gap' THEN
            RAISE EXCEPTION 'book_at: % falls inside a recorded gap of instrument %: update ids % to % are missing after %; the book is unknown until the next sync',
                p_at, p_instrument, ended.first_update_id, coalesce(ended.last_update_id::text, '?'),
                ended.time
                USING ERRCODE = 'DB001';
        ELSE
            RAISE EXCEPTION 'book_at: % falls inside a recorded gap of instrument %: collection stopped after % and the book is unknown until the next sync',
                p_at, p_instrument, ended.time
                USING ERRCODE = 'DB001';
        END IF;
    END IF;

    -- The newest applied update (ids grow with time within an instrument): a backward index
    -- scan, not an aggregate over every write.
    SELECT d.update_id AS uid, d.time AS t INTO head
    FROM depth_updates d
    WHERE d.instrument_id = p_instrument
      AND d.time >= c.time AND d.time <= p_at
      AND d.update_id > c.update_id
    ORDER BY d.time DESC, d.update_id DESC
    LIMIT 1;

    RETURN QUERY
    WITH upd AS (
        -- The last write per level since the checkpoint, by hashing rather than sorting
        -- (numeric comparisons make a sort of every update the dominant cost): the greatest
        -- [update id, qty] pair per level is its last write. Sides are booleans, not text
        -- compared through the collation.
        SELECT d.side = 'bid' AS b, d.price AS p,
               (max(ARRAY[d.update_id::numeric, d.qty]))[2] AS q
        FROM depth_updates d
        WHERE d.instrument_id = p_instrument
          AND d.time >= c.time AND d.time <= p_at
          AND d.update_id > c.update_id
        GROUP BY 1, 2
    ),
    book AS (
        SELECT true AS b, l.p, l.q
        FROM unnest(c.bid_prices, c.bid_qtys) AS l(p, q)
        WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.b AND u.p = l.p)
        UNION ALL
        SELECT false, l.p, l.q
        FROM unnest(c.ask_prices, c.ask_qtys) AS l(p, q)
        WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE NOT u.b AND u.p = l.p)
        UNION ALL
        SELECT u.b, u.p, u.q FROM upd u WHERE u.q > 0
    ),
    bids AS (
        SELECT 'bid'::text AS s, x.p, x.q, row_number() OVER (ORDER BY x.p DESC) AS rn
        FROM (SELECT k.p, k.q FROM book k WHERE k.b ORDER BY k.p DESC LIMIT p_depth) x
    ),
    asks AS (
        SELECT 'ask'::text AS s, x.p, x.q, row_number() OVER (ORDER BY x.p) AS rn
        FROM (SELECT k.p, k.q FROM book k WHERE NOT k.b ORDER BY k.p LIMIT p_depth) x
    )
    SELECT r.s, r.rn::integer, r.p, r.q,
           coalesce(head.uid, c.update_id), coalesce(head.t, c.time)
    FROM (SELECT * FROM bids UNION ALL SELECT * FROM asks) r
    ORDER BY r.s DESC, r.rn;   -- bids first, then asks
END
$$;
