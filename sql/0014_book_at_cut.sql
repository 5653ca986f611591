-- book_at, same contract as 0010 (same answers, same refusals), cheaper in three ways
-- (bench/REPORT.md §14 has the measurements):
--
-- 1. A plan for the rows actually replayed. A PL/pgSQL statement gets a generic plan after five
--    calls in a session. For the replay that plan guesses a handful of rows between the
--    checkpoint and the instant, and groups them by sorting on the numeric price: with thousands
--    of rows that sort cost more than the rest of the call. An API connection calls book_at far
--    more than five times, so that was the plan users got. force_custom_plan plans each call for
--    its own range and keeps the hash aggregate, for the price of planning every call.
-- 2. Only the part of the checkpoint that can reach the answer. Checkpoints hold each side best
--    first (ingest writes them so, and the table's comment says so). Since the checkpoint, at
--    most R levels of a side were removed, R being that side's levels last written with qty 0.
--    So at least `depth` of its first `depth + R` levels are still in the book, and nothing
--    behind them, from the checkpoint or written since, can be among the best `depth`. At depth
--    20 that is a few hundred levels of the checkpoint's thousands.
-- 3. Bids before asks by an integer, not by comparing the side's text through the collation.
CREATE OR REPLACE FUNCTION book_at(p_instrument integer, p_at timestamptz, p_depth integer DEFAULT 1000)
RETURNS TABLE (side text, level integer, price numeric, qty numeric,
               book_update_id bigint, book_time timestamptz)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_custom_plan
AS $$
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
        -- The last write per level since the checkpoint: the greatest [update id, qty] pair
        -- per level, by hashing (0007).
        SELECT d.side = 'bid' AS b, d.price AS p,
               (max(ARRAY[d.update_id::numeric, d.qty]))[2] AS q
        FROM depth_updates d
        WHERE d.instrument_id = p_instrument
          AND d.time >= c.time AND d.time <= p_at
          AND d.update_id > c.update_id
        GROUP BY 1, 2
    ),
    -- How many of each side's first checkpoint levels can reach the best p_depth (see 2. above);
    -- an array subscript is an integer.
    cut AS (
        SELECT least(p_depth + count(*) FILTER (WHERE u.b AND u.q = 0), 2147483647)::integer AS nb,
               least(p_depth + count(*) FILTER (WHERE NOT u.b AND u.q = 0), 2147483647)::integer AS na
        FROM upd u
    ),
    -- Those levels, and the last of them (the edge): a level written since that is worse than
    -- the edge cannot reach the answer either. No edge when the side has fewer levels.
    bid_cp AS (
        SELECT c.bid_prices[1:k.nb] AS ps, c.bid_qtys[1:k.nb] AS qs, c.bid_prices[k.nb] AS edge
        FROM cut k
    ),
    ask_cp AS (
        SELECT c.ask_prices[1:k.na] AS ps, c.ask_qtys[1:k.na] AS qs, c.ask_prices[k.na] AS edge
        FROM cut k
    ),
    bids AS (
        SELECT 0 AS k, 'bid'::text AS s, x.p, x.q, row_number() OVER (ORDER BY x.p DESC) AS rn
        FROM (
            SELECT y.p, y.q FROM (
                SELECT l.p, l.q FROM bid_cp k, unnest(k.ps, k.qs) AS l(p, q)
                WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.b AND u.p = l.p)
                UNION ALL
                SELECT u.p, u.q FROM upd u, bid_cp k
                WHERE u.b AND u.q > 0 AND (k.edge IS NULL OR u.p >= k.edge)
            ) y
            ORDER BY y.p DESC LIMIT p_depth
        ) x
    ),
    asks AS (
        SELECT 1 AS k, 'ask'::text AS s, x.p, x.q, row_number() OVER (ORDER BY x.p) AS rn
        FROM (
            SELECT y.p, y.q FROM (
                SELECT l.p, l.q FROM ask_cp k, unnest(k.ps, k.qs) AS l(p, q)
                WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE NOT u.b AND u.p = l.p)
                UNION ALL
                SELECT u.p, u.q FROM upd u, ask_cp k
                WHERE NOT u.b AND u.q > 0 AND (k.edge IS NULL OR u.p <= k.edge)
            ) y
            ORDER BY y.p LIMIT p_depth
        ) x
    )
    SELECT r.s, r.rn::integer, r.p, r.q,
           coalesce(head.uid, c.update_id), coalesce(head.t, c.time)
    FROM (SELECT * FROM bids UNION ALL SELECT * FROM asks) r
    ORDER BY r.k, r.rn;   -- bids first, then asks
END
$$;
