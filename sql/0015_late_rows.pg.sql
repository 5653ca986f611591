-- Rows committed after maintain() materialized their buckets. rollup.refresh() settles rows
-- older than a few seconds, but a batch can commit later than that: a backlog behind a spool
-- replay, a slow COPY, a database that was busy. Its rows were then left out of buckets
-- below the watermark for good, unless the batch came from the spool (the writer lowers the
-- watermarks after a replay). Now every ledger row of book_ticker or trades notes its
-- earliest time in rollup.late, in the batch's own transaction, and each refresh takes what is
-- noted and recomputes from there: TimescaleDB's invalidation log, in miniature. A refresh
-- sees a note exactly when it sees the batch's rows (same transaction), so none is missed, and
-- nothing is locked on the write path. Rows written without a ledger row (by hand) still need
-- invalidate_aggregates().
CREATE TABLE rollup.late (
    family text        NOT NULL CHECK (family IN ('ticker', 'trades')),
    since  timestamptz NOT NULL
);

CREATE FUNCTION rollup.note_batch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup.late (family, since)
    VALUES (CASE NEW.relation WHEN 'book_ticker' THEN 'ticker' ELSE 'trades' END, NEW.first_time);
    RETURN NULL;
END
$$;

CREATE TRIGGER note_aggregated_batch AFTER INSERT ON ingest_batches
FOR EACH ROW WHEN (NEW.relation IN ('book_ticker', 'trades') AND NEW.first_time IS NOT NULL)
EXECUTE FUNCTION rollup.note_batch();

-- 0004's refresh, with each family's notes taken first: a level's materialized buckets from
-- the earliest noted time on are recomputed with the buckets the watermark moves over.
CREATE OR REPLACE FUNCTION rollup.refresh(settled timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    fam text;
    lvl record;
    late timestamptz;
    old_wm timestamptz;
    new_wm timestamptz;
    below timestamptz;
    n bigint;
    total bigint := 0;
BEGIN
    FOREACH fam IN ARRAY ARRAY['ticker', 'trades'] LOOP
        WITH taken AS (DELETE FROM rollup.late WHERE family = fam RETURNING since)
        SELECT min(since) INTO late FROM taken;
        below := settled;
        FOR lvl IN SELECT * FROM (VALUES (1, '1s', 'second'), (2, '1m', 'minute'), (3, '1h', 'hour'))
                   AS v(ord, suffix, unit) ORDER BY ord LOOP
            SELECT watermark INTO old_wm FROM rollup.watermarks
            WHERE name = fam || '_' || lvl.suffix FOR UPDATE;
            IF late IS NOT NULL THEN
                old_wm := least(old_wm, date_trunc(lvl.unit, late));
            END IF;
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
            ELSIF late IS NOT NULL THEN
                -- Nothing settled past the notes yet: leave them to the views' real-time part.
                UPDATE rollup.watermarks SET watermark = old_wm WHERE name = fam || '_' || lvl.suffix;
            END IF;
            below := greatest(old_wm, new_wm);
        END LOOP;
    END LOOP;
    RETURN total;
END
$$;
