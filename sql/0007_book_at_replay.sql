-- book_at, same contract as 0005 (same answers, same refusals), about three times faster.
--
-- Measured on a busy book (4 000 checkpoint levels, 10 000 updates to replay, PostgreSQL 15):
-- 0005's body spent most of its time sorting every write on (text side, numeric price): text
-- comparisons go through the collation and numeric comparisons are slow. Here the last write
-- per level is found by hashing (the greatest [update id, qty] pair per level), sides are
-- booleans, the head of the book comes from a backward index scan, and each side is cut to
-- `depth` by a bounded top-N sort instead of ranking the whole book: 38 ms -> 13 ms at depth
-- 20, identical rows on 1 152 compared answers. Ingest's `--checkpoint-rows` bounds how much is
-- replayed in the first place.
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

    SELECT now() - sp.drop_after INTO horizon
    FROM storage_policies sp WHERE sp.relation = 'depth_updates';
    IF horizon IS NOT NULL AND p_at < horizon THEN
        RAISE EXCEPTION 'book_at: % is older than the depth_updates retention horizon (%)',
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
