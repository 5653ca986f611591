//! Epochs a collector left open: closed by whoever finds them, so `book_at` never trusts a book
//! across a time nobody was collecting it. A single collector does it for every instrument at
//! start; with leases, the collector that takes a shard over does it for that shard's
//! instruments, once the previous holder can no longer commit.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// A 'stopped' event at the epoch's last stored update. Every epoch with a 'synced' event and
/// neither 'gap' nor 'stopped' is open; its updates are those before the instrument's next
/// sync. Runs after the spool is replayed, so that "last stored" includes what was spooled, and
/// epochs that started while the database was down are found too. `$1`: the instruments to
/// look at, NULL for all; `$2`: the event's detail, why it was found.
const CLOSE_OPEN_EPOCHS: &str = "
INSERT INTO sync_events (time, instrument_id, epoch, kind, detail)
SELECT coalesce((SELECT max(d.time) FROM depth_updates d
                 WHERE d.instrument_id = s.instrument_id AND d.time >= s.time
                   AND d.time < coalesce((SELECT min(n.time) FROM sync_events n
                                          WHERE n.instrument_id = s.instrument_id
                                            AND n.kind = 'synced' AND n.time > s.time),
                                         'infinity')),
                s.time),
       s.instrument_id, s.epoch, 'stopped', $2
FROM sync_events s
WHERE s.kind = 'synced'
  AND ($1::integer[] IS NULL OR s.instrument_id = ANY($1))
  AND NOT EXISTS (SELECT 1 FROM sync_events e
                  WHERE e.epoch = s.epoch AND e.kind IN ('gap', 'stopped'))";

/// Why an open epoch is closed: found at a single collector's start.
pub const FOUND_AT_START: &str = "open epoch found at start";
/// Why an open epoch is closed: its collector's lease was taken over.
pub const LEASE_TAKEN_OVER: &str = "lease taken over";

/// Closes the open epochs of `instruments` (`None`: of every instrument), their `stopped`
/// events saying `why`; returns how many.
pub async fn close_open(
    db: &Client,
    instruments: Option<&[i32]>,
    why: &str,
) -> Result<u64, tokio_postgres::Error> {
    let ids = instruments.map(<[i32]>::to_vec);
    db.execute_typed(
        CLOSE_OPEN_EPOCHS,
        &[(&ids, Type::INT4_ARRAY), (&why, Type::TEXT)],
    )
    .await
}
