-- Depth by tier (ingest --depth-levels): a symbol may keep only the best N levels of each side.
-- Its depth_updates then hold what changed inside that window (a level pushed out of it is
-- written with qty 0, one pulled into it with its qty), and its checkpoints hold the window,
-- so book_at answers exactly the best N levels. NULL: every level, as before.

-- The window its collector applies now.
ALTER TABLE instruments ADD COLUMN depth_levels integer CHECK (depth_levels > 0);

-- The window the checkpoint's book, and the updates replayed onto it, were kept in: the record
-- of what a stored book holds at every instant, whatever the tier did later. Last, so a batch
-- spooled by an older collector replays with NULL here. No CHECK: a column added to a
-- compressed hypertable may carry none.
ALTER TABLE book_checkpoints ADD COLUMN levels integer;
