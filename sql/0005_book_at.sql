-- book_at: the order book of an instrument at any instant (DESIGN §5).
--
-- The latest checkpoint at or before `at`, plus every depth update after the checkpoint's
-- update id up to `at`; the last write per (side, price) wins, quantity 0 removes a level;
-- bids best (highest) first, asks best (lowest) first, `depth` levels per side.
--
-- Refused with a clear error, never answered wrongly:
--   DB001  `at` lies after the end of the checkpoint's epoch (a gap, or collection stopped)
--          and before the next sync: the book there is unknown.
--   DB002  no checkpoint at or before `at` (nothing recorded yet for this instrument).
--   DB003  `at` is older than the depth_updates retention horizon: the updates are gone.
--   22023  depth < 1.
CREATE FUNCTION book_at(p_instrument integer, p_at timestamptz, p_depth integer DEFAULT 1000)
RETURNS TABLE (side text, level integer, price numeric, qty numeric,
               book_update_id bigint, book_time timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c        record;
    ended    record;
    horizon  timestamptz;
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

    RETURN QUERY
    WITH writes AS (
        SELECT 'bid'::text AS s, l.p, l.q, c.update_id AS uid, c.time AS t
        FROM unnest(c.bid_prices, c.bid_qtys) AS l(p, q)
        UNION ALL
        SELECT 'ask'::text, l.p, l.q, c.update_id, c.time
        FROM unnest(c.ask_prices, c.ask_qtys) AS l(p, q)
        UNION ALL
        SELECT d.side, d.price, d.qty, d.update_id, d.time
        FROM depth_updates d
        WHERE d.instrument_id = p_instrument
          AND d.time >= c.time AND d.time <= p_at
          AND d.update_id > c.update_id
    ),
    latest AS (
        SELECT DISTINCT ON (w.s, w.p) w.s, w.p, w.q
        FROM writes w
        ORDER BY w.s, w.p, w.uid DESC
    ),
    head AS (
        SELECT max(w.uid) AS uid, max(w.t) AS t FROM writes w
    ),
    ranked AS (
        SELECT l.s, l.p, l.q,
               row_number() OVER (PARTITION BY l.s
                                  ORDER BY CASE WHEN l.s = 'bid' THEN -l.p ELSE l.p END) AS rn
        FROM latest l
        WHERE l.q > 0
    )
    SELECT r.s, r.rn::integer, r.p, r.q,
           coalesce(h.uid, c.update_id), coalesce(h.t, c.time)
    FROM ranked r CROSS JOIN head h
    WHERE r.rn <= p_depth
    ORDER BY r.s DESC, r.rn;   -- bids first, then asks
END
$$;

-- The same by venue and symbol, for Grafana and psql users.
CREATE FUNCTION book_at(p_venue text, p_symbol text, p_at timestamptz, p_depth integer DEFAULT 1000)
RETURNS TABLE (side text, level integer, price numeric, qty numeric,
               book_update_id bigint, book_time timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    iid integer;
BEGIN
    SELECT i.id INTO iid FROM instruments i WHERE i.venue = p_venue AND i.symbol = upper(p_symbol);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'book_at: unknown instrument %/%', p_venue, p_symbol
            USING ERRCODE = 'DB004';
    END IF;
    RETURN QUERY SELECT * FROM book_at(iid, p_at, p_depth);
END
$$;
