//! Where a symbol's book is known inside a range, and where it is not. A book is exact inside
//! an epoch (from its `snapshot` checkpoint to its first `gap` or `stopped` event) and unknown
//! between epochs; a file must never bridge that silently. Each known stretch is a `Segment`
//! that a file opens with the full book; each unknown one is a `Gap` the sidecar lists.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::{ExportError, Range};

/// How a segment's book is first written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The book as it stood just before the range began (`book_at`), stamped at `from`.
    BookAt { at: DateTime<Utc> },
    /// A sync inside the range: the epoch's `snapshot` checkpoint.
    Sync { time: DateTime<Utc>, update_id: i64 },
}

/// A stretch of the range where the book is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub start: Start,
    /// The segment's updates are those after this id...
    pub after_update_id: i64,
    /// ...from this time...
    pub updates_from: DateTime<Utc>,
    /// ...up to the epoch's end (its last applied update's time, inclusive), if it ended.
    pub until: Option<DateTime<Utc>>,
}

/// A stretch of the range where the book is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Microseconds since the epoch, like the file's timestamps; `to` is exclusive.
    pub from_us: i64,
    pub to_us: i64,
    pub from: String,
    pub to: String,
    /// `gap` (update ids missing), `stopped` (collection stopped), `no_book` (nothing recorded
    /// before) or `retention` (older than the depth retention).
    pub kind: String,
    /// For `gap`: the missing update ids, inclusive, as recorded.
    pub first_update_id: Option<i64>,
    pub last_update_id: Option<i64>,
}

/// Segments in time order, and the gaps between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub segments: Vec<Segment>,
    pub gaps: Vec<Gap>,
}

#[derive(Debug)]
struct Checkpoint {
    time: DateTime<Utc>,
    epoch: i64,
    update_id: i64,
}

#[derive(Debug, Clone)]
struct End {
    time: DateTime<Utc>,
    kind: String,
    first_update_id: Option<i64>,
    last_update_id: Option<i64>,
}

/// The narrowest depth window (levels per side) the books of `range` were kept in: those of
/// its checkpoints and of the last one before it, which `book_at` starts from at the range's
/// start. `None`: every level throughout.
pub async fn depth_levels(
    client: &Client,
    instrument: i32,
    range: Range,
) -> Result<Option<i32>, ExportError> {
    Ok(client
        .query_one(
            "SELECT min(levels) FROM book_checkpoints
             WHERE instrument_id = $1 AND time < $3
               AND time >= coalesce((SELECT max(time) FROM book_checkpoints
                                     WHERE instrument_id = $1 AND time <= $2), $2)",
            &[&instrument, &range.from, &range.to],
        )
        .await?
        .get(0))
}

/// The plan for `instrument` over `range`, with `book_at`'s rules: the latest checkpoint
/// before the range gives the book at its start unless its epoch ended before, and every
/// `snapshot` checkpoint inside the range starts a new segment.
pub async fn plan(client: &Client, instrument: i32, range: Range) -> Result<Plan, ExportError> {
    let before = range.from - Duration::microseconds(1);
    let mut plan = Plan::default();
    // Where the range's start is unknown: until the first sync inside it.
    let mut unknown_since: Option<(DateTime<Utc>, End)> = None;
    match initial_checkpoint(client, instrument, range.from).await? {
        None => unknown_since = Some((range.from, reason("no_book"))),
        Some(c) => {
            let end = epoch_end(client, c.epoch).await?;
            if let Some(e) = end.as_ref().filter(|e| e.time < before) {
                unknown_since = Some((range.from, e.clone()));
            } else if outside_retention(client, c.time).await? {
                unknown_since = Some((range.from, reason("retention")));
            } else {
                plan.segments.push(Segment {
                    start: Start::BookAt { at: range.from },
                    after_update_id: c.update_id,
                    updates_from: range.from,
                    until: end.as_ref().map(|e| e.time),
                });
                if let Some(e) = end.filter(|e| e.time < range.to) {
                    unknown_since = Some((e.time.max(range.from), e));
                }
            }
        }
    }
    for sync in syncs(client, instrument, range).await? {
        // A sync at the very instant the book became unknown leaves no gap to list.
        if let Some((since, why)) = unknown_since.take().filter(|(since, _)| *since < sync.time) {
            plan.gaps.push(gap(since, sync.time, why));
        }
        let end = epoch_end(client, sync.epoch).await?;
        plan.segments.push(Segment {
            start: Start::Sync {
                time: sync.time,
                update_id: sync.update_id,
            },
            after_update_id: sync.update_id,
            updates_from: sync.time,
            until: end.as_ref().map(|e| e.time),
        });
        unknown_since = end.filter(|e| e.time < range.to).map(|e| (e.time, e));
    }
    if let Some((since, why)) = unknown_since {
        plan.gaps.push(gap(since, range.to, why));
    }
    Ok(plan)
}

async fn initial_checkpoint(
    client: &Client,
    instrument: i32,
    from: DateTime<Utc>,
) -> Result<Option<Checkpoint>, ExportError> {
    let row = client
        .query_opt(
            "SELECT time, epoch, update_id FROM book_checkpoints
             WHERE instrument_id = $1 AND time < $2
             ORDER BY time DESC, update_id DESC LIMIT 1",
            &[&instrument, &from],
        )
        .await?;
    Ok(row.map(|r| Checkpoint {
        time: r.get(0),
        epoch: r.get(1),
        update_id: r.get(2),
    }))
}

async fn syncs(
    client: &Client,
    instrument: i32,
    range: Range,
) -> Result<Vec<Checkpoint>, ExportError> {
    let rows = client
        .query(
            "SELECT time, epoch, update_id FROM book_checkpoints
             WHERE instrument_id = $1 AND kind = 'snapshot' AND time >= $2 AND time < $3
             ORDER BY time, update_id",
            &[&instrument, &range.from, &range.to],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Checkpoint {
            time: r.get(0),
            epoch: r.get(1),
            update_id: r.get(2),
        })
        .collect())
}

/// An epoch's first `gap` or `stopped` event: where its book stops being known.
async fn epoch_end(client: &Client, epoch: i64) -> Result<Option<End>, ExportError> {
    let row = client
        .query_opt(
            "SELECT time, kind, first_update_id, last_update_id FROM sync_events
             WHERE epoch = $1 AND kind IN ('gap', 'stopped')
             ORDER BY time LIMIT 1",
            &[&epoch],
        )
        .await?;
    Ok(row.map(|r| End {
        time: r.get(0),
        kind: r.get(1),
        first_update_id: r.get(2),
        last_update_id: r.get(3),
    }))
}

/// Whether `at` is older than what `depth_updates` still holds: a book from a checkpoint that
/// old misses updates (book_at refuses it).
async fn outside_retention(client: &Client, at: DateTime<Utc>) -> Result<bool, ExportError> {
    let row = client
        .query_opt(
            "SELECT $1 < dropped_before FROM storage_policies
             WHERE relation = 'depth_updates' AND dropped_before IS NOT NULL",
            &[&at],
        )
        .await?;
    Ok(row.is_some_and(|r| r.get(0)))
}

fn reason(kind: &str) -> End {
    End {
        time: DateTime::<Utc>::MIN_UTC,
        kind: kind.to_owned(),
        first_update_id: None,
        last_update_id: None,
    }
}

fn gap(from: DateTime<Utc>, to: DateTime<Utc>, why: End) -> Gap {
    Gap {
        from_us: from.timestamp_micros(),
        to_us: to.timestamp_micros(),
        from: from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        to: to.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        kind: why.kind,
        first_update_id: why.first_update_id,
        last_update_id: why.last_update_id,
    }
}
