-- Several collectors for one universe (ingest run --shards N): the symbols are split into N
-- shards by a hash of venue and symbol, and a collector writes a shard's symbols only while it
-- holds the shard's lease. The lease is a row here, renewed on a heartbeat; taking it over
-- raises its generation. Every batch a collector commits carries the generation of each
-- shard it has rows of and locks those rows FOR KEY SHARE in its transaction: a batch whose
-- generation is no longer the row's is rolled back (fenced), and a takeover (SELECT … FOR
-- UPDATE, then the UPDATE) waits for batches in flight, so once it commits no batch of the
-- previous holder can follow. Without --shards there are no rows and nothing is fenced.
CREATE TABLE collector_leases (
    shard       integer PRIMARY KEY CHECK (shard >= 0),
    -- How many shards the universe is split into: the same on every row; a collector started
    -- with another count refuses to run.
    shards      integer NOT NULL CHECK (shard < shards),
    -- Who holds it: the collector's name and its run, so a restarted process is a new owner.
    owner       text,
    generation  bigint NOT NULL DEFAULT 0,
    acquired_at timestamptz,
    renewed_at  timestamptz,
    -- A lease past its expiry may be taken by any collector.
    expires_at  timestamptz NOT NULL DEFAULT '-infinity'
);
