//! Hot standby (`--standby`): a collector also collects the shards it does not hold, with
//! books synced and their rows kept in memory for a while (`hold`) instead of written. When
//! it takes such a shard over, the lease task reads where each of its books stands in the
//! database ([`resume_points`]), leaving a warm book's open epoch open, and the symbol task
//! continues that epoch: it writes what it kept past those points and goes on live. Nothing
//! Binance sent is missing and no gap is recorded, as long as the buffer reaches back to the
//! last row the previous holder committed. A book that cannot continue starts a new epoch
//! that repeats nothing stored ([`start_past`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use book::sync::DepthEvent;
use book::Side;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::row::{CheckpointKind, Row};

/// What a standby collector shares between its lease task, its venues and its symbol tasks.
#[derive(Debug)]
pub struct Standby {
    /// How long a standby symbol keeps its rows.
    pub keep: Duration,
    /// Instruments whose standby book is synced: a takeover continues their epochs.
    warm: Mutex<HashSet<i32>>,
    /// Where a taken-over warm book's epoch stands, until its task is promoted.
    resume: Mutex<HashMap<i32, Resume>>,
}

impl Standby {
    pub fn new(keep: Duration) -> Standby {
        Standby {
            keep,
            warm: Mutex::default(),
            resume: Mutex::default(),
        }
    }

    /// A standby book is synced (`true`) or not any more.
    pub fn set_warm(&self, instrument: i32, on: bool) {
        if let Ok(mut w) = self.warm.lock() {
            if on {
                w.insert(instrument);
            } else {
                w.remove(&instrument);
            }
        }
    }

    /// Which of `instruments` have a synced standby book.
    pub fn warm_among(&self, instruments: &[i32]) -> Vec<i32> {
        let Ok(w) = self.warm.lock() else {
            return Vec::new();
        };
        instruments
            .iter()
            .copied()
            .filter(|i| w.contains(i))
            .collect()
    }

    pub fn put_resume(&self, points: HashMap<i32, Resume>) {
        if let Ok(mut r) = self.resume.lock() {
            r.extend(points);
        }
    }

    /// The resume point read for `instrument` at its takeover, once.
    pub fn take_resume(&self, instrument: i32) -> Option<Resume> {
        self.resume.lock().ok()?.remove(&instrument)
    }
}

/// An epoch left open by the previous holder, as far as it was committed.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenEpoch {
    pub epoch: i64,
    /// The last stored event's update id (the epoch's opening book's if it has none) and time.
    pub last_update: u64,
    pub last_time: u64,
    /// The levels stored for that last event: a batch may have committed only some of them.
    pub at_last: HashSet<(Side, i64)>,
    /// The newest stored checkpoint of the epoch, and the depth window it was kept in.
    pub last_checkpoint: u64,
    pub window: Option<u32>,
}

/// Where each table of a taken-over instrument stands in the database: a promoted standby
/// writes only what lies beyond.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resume {
    /// The book was synced standing by when its shard was taken. A cold book's point serves
    /// only its standby task; a task started after the takeover needs none.
    pub warm: bool,
    pub open: Option<OpenEpoch>,
    /// The newest stored event's update id, in any epoch: a book that starts a new epoch must
    /// be past it.
    pub last_depth: Option<u64>,
    pub last_top: Option<u64>,
    pub last_ticker: Option<u64>,
    pub last_trade: Option<u64>,
    pub last_mark: Option<u64>,
}

impl Resume {
    /// A kept row of the feed's own streams (tickers, trades, mark prices) not stored yet.
    pub fn keep_feed(&self, row: &Row) -> bool {
        let after = |stored: Option<u64>, v: u64| stored.is_none_or(|s| v > s);
        match row {
            Row::Ticker(r) => after(self.last_ticker, r.update_id),
            Row::Trade(r) => after(self.last_trade, r.agg_trade_id),
            Row::Mark(r) => after(self.last_mark, r.time),
            _ => false,
        }
    }

    /// A kept row that continues `open` (the standby's book continuing that epoch): depth rows
    /// past its last stored event (and that event's levels not stored), checkpoints past both
    /// (moved into the epoch), book samples after the last stored; the feed's rows as in
    /// [`Resume::keep_feed`]. The standby's own sync events are its own business.
    pub fn keep_continuing(&self, open: &OpenEpoch, row: &mut Row) -> bool {
        match row {
            Row::Depth(r) => {
                r.update_id > open.last_update
                    || (r.update_id == open.last_update
                        && !open.at_last.contains(&(r.side, r.price)))
            }
            Row::Checkpoint(r) => {
                let keep = r.update_id > open.last_update.max(open.last_checkpoint);
                r.epoch = open.epoch;
                r.kind = CheckpointKind::Periodic;
                keep
            }
            Row::Top(r) => self.last_top.is_none_or(|t| r.time > t),
            Row::Sync(_) => false,
            _ => self.keep_feed(row),
        }
    }
}

/// Where a book synced after a takeover that did not continue the stored epoch may start its
/// epoch, so that it repeats nothing stored: `floor` is the newest stored event's id (none: no
/// constraint). A snapshot at or past it, with its bridging events all past it, starts as
/// usual; a book past it whose snapshot is not (fetched before the previous holder's last
/// commit, or bridged by an event already stored) starts at the book itself, without its
/// bridging events. `None`: the book is not past what is stored, so it must sync again.
pub fn start_past(
    floor: Option<u64>,
    book_id: Option<u64>,
    snapshot_id: u64,
    applied: &[DepthEvent],
) -> Option<(u64, &[DepthEvent])> {
    let Some(floor) = floor else {
        return Some((snapshot_id, applied));
    };
    let clear = match applied {
        [] => snapshot_id > floor,
        _ => snapshot_id >= floor && applied.iter().all(|e| e.final_update_id > floor),
    };
    if clear {
        return Some((snapshot_id, applied));
    }
    book_id.filter(|&b| b > floor).map(|b| (b, &[][..]))
}

/// Per instrument: the latest epoch if still open, its last stored event (with that event's
/// levels) and newest checkpoint, and the newest row of every other table. `$1`: instruments.
const RESUME_POINTS: &str = "
SELECT i.id, e.epoch, greatest(d.update_id, e.last_update_id), (extract(epoch FROM greatest(d.time, e.time)) * 1000)::int8,
       (SELECT array_agg(x.side || ':' || (x.price * 100000000)::int8)
        FROM depth_updates x
        WHERE x.instrument_id = i.id AND x.time = d.time AND x.update_id = d.update_id),
       c.update_id, c.levels,
       (SELECT (extract(epoch FROM t.time) * 1000)::int8 FROM book_top t WHERE t.instrument_id = i.id
        ORDER BY t.time DESC LIMIT 1),
       (SELECT k.update_id FROM book_ticker k WHERE k.instrument_id = i.id
        ORDER BY k.time DESC, k.update_id DESC LIMIT 1),
       (SELECT r.agg_trade_id FROM trades r WHERE r.instrument_id = i.id
        ORDER BY r.time DESC, r.agg_trade_id DESC LIMIT 1),
       (SELECT (extract(epoch FROM m.time) * 1000)::int8 FROM mark_prices m WHERE m.instrument_id = i.id
        ORDER BY m.time DESC LIMIT 1),
       (SELECT n.update_id FROM depth_updates n WHERE n.instrument_id = i.id
        ORDER BY n.time DESC, n.update_id DESC LIMIT 1)
FROM unnest($1::integer[]) AS i(id)
LEFT JOIN LATERAL (
    SELECT s.epoch, s.last_update_id, s.time FROM sync_events s
    WHERE s.instrument_id = i.id AND s.kind = 'synced'
    ORDER BY s.time DESC LIMIT 1) e
  ON NOT EXISTS (SELECT 1 FROM sync_events x WHERE x.epoch = e.epoch AND x.kind IN ('gap', 'stopped'))
LEFT JOIN LATERAL (
    SELECT u.update_id, u.time FROM depth_updates u
    WHERE u.instrument_id = i.id AND u.time >= e.time
    ORDER BY u.time DESC, u.update_id DESC LIMIT 1) d ON true
LEFT JOIN LATERAL (
    SELECT p.update_id, p.levels FROM book_checkpoints p
    WHERE p.instrument_id = i.id AND p.epoch = e.epoch
    ORDER BY p.time DESC, p.update_id DESC LIMIT 1) c ON true";

/// Reads the resume points of `instruments` (see [`Resume`]); run by a takeover once the
/// previous holder can no longer commit.
pub async fn resume_points(
    db: &Client,
    instruments: &[i32],
) -> Result<HashMap<i32, Resume>, tokio_postgres::Error> {
    let ids = instruments.to_vec();
    let rows = db
        .query_typed(RESUME_POINTS, &[(&ids, Type::INT4_ARRAY)])
        .await?;
    let id = |v: Option<i64>| v.map(|v| v as u64);
    let ms = id;
    let mut out = HashMap::new();
    for r in &rows {
        let open = match (r.get::<_, Option<i64>>(1), id(r.get(2)), ms(r.get(3))) {
            (Some(epoch), Some(last_update), Some(last_time)) => Some(OpenEpoch {
                epoch,
                last_update,
                last_time,
                at_last: at_last(r.get(4)),
                last_checkpoint: id(r.get(5)).unwrap_or(0),
                window: r.get::<_, Option<i32>>(6).map(|n| n as u32),
            }),
            _ => None,
        };
        let resume = Resume {
            warm: true,
            open,
            last_top: ms(r.get(7)),
            last_ticker: id(r.get(8)),
            last_trade: id(r.get(9)),
            last_mark: ms(r.get(10)),
            last_depth: id(r.get(11)),
        };
        out.insert(r.get::<_, i32>(0), resume);
    }
    Ok(out)
}

/// `side:price_e8` strings back into levels.
fn at_last(levels: Option<Vec<String>>) -> HashSet<(Side, i64)> {
    levels
        .unwrap_or_default()
        .iter()
        .filter_map(|l| {
            let (side, price) = l.split_once(':')?;
            let side = match side {
                "bid" => Side::Bid,
                "ask" => Side::Ask,
                _ => return None,
            };
            Some((side, price.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{CheckpointRow, DepthRow, SyncKind, SyncRow, TradeRow};

    fn depth(update_id: u64, side: Side, price: i64) -> Row {
        Row::Depth(DepthRow {
            time: update_id,
            instrument_id: 1,
            first_update_id: update_id,
            update_id,
            prev_update_id: None,
            side,
            price,
            qty: 1,
            received_at: 0,
        })
    }

    fn open() -> OpenEpoch {
        OpenEpoch {
            epoch: 7,
            last_update: 10,
            last_time: 10,
            at_last: [(Side::Bid, 100)].into_iter().collect(),
            last_checkpoint: 8,
            window: None,
        }
    }

    #[test]
    fn a_continuation_writes_only_what_the_epoch_lacks() {
        let r = Resume::default();
        let o = open();
        let kept = |mut row: Row| r.keep_continuing(&o, &mut row);
        assert!(!kept(depth(9, Side::Ask, 1)), "stored before");
        assert!(
            !kept(depth(10, Side::Bid, 100)),
            "the last event's stored level"
        );
        assert!(
            kept(depth(10, Side::Ask, 101)),
            "the last event's level a batch left out"
        );
        assert!(kept(depth(11, Side::Bid, 100)));
        let sync = Row::Sync(SyncRow {
            time: 11,
            instrument_id: 1,
            epoch: Some(99),
            kind: SyncKind::Synced,
            first_update_id: None,
            last_update_id: None,
            detail: None,
        });
        assert!(!kept(sync), "the standby's own epoch is not written");
    }

    #[test]
    fn a_kept_checkpoint_moves_into_the_continued_epoch() {
        let r = Resume::default();
        let o = open();
        let checkpoint = |update_id| {
            Row::Checkpoint(CheckpointRow {
                time: update_id,
                instrument_id: 1,
                epoch: 99,
                update_id,
                kind: CheckpointKind::Snapshot,
                bids: vec![],
                asks: vec![],
                received_at: 0,
                levels: None,
            })
        };
        let mut row = checkpoint(10);
        assert!(!r.keep_continuing(&o, &mut row), "not past the last event");
        let mut row = checkpoint(12);
        assert!(r.keep_continuing(&o, &mut row));
        let Row::Checkpoint(c) = row else {
            unreachable!("a checkpoint stays one")
        };
        assert_eq!((c.epoch, c.kind), (7, CheckpointKind::Periodic));
    }

    #[test]
    fn the_feeds_rows_resume_after_the_newest_stored() {
        let r = Resume {
            last_trade: Some(5),
            ..Resume::default()
        };
        let trade = |agg_trade_id| {
            Row::Trade(TradeRow {
                time: 1,
                instrument_id: 1,
                agg_trade_id,
                price: 1,
                qty: 1,
                first_trade_id: 1,
                last_trade_id: 1,
                buyer_is_maker: false,
                event_time: 1,
                received_at: 1,
            })
        };
        assert!(!r.keep_feed(&trade(5)));
        assert!(r.keep_feed(&trade(6)));
        assert!(!r.keep_feed(&depth(11, Side::Bid, 1)), "not the feed's");
    }

    fn event(first: u64, last: u64) -> DepthEvent {
        DepthEvent {
            event_time_ms: last,
            first_update_id: first,
            final_update_id: last,
            prev_final_update_id: None,
            bids: vec![],
            asks: vec![],
        }
    }

    #[test]
    fn without_a_floor_a_sync_starts_as_it_is() {
        let bridge = [event(8, 12)];
        assert_eq!(
            start_past(None, Some(12), 9, &bridge),
            Some((9, &bridge[..]))
        );
    }

    #[test]
    fn a_sync_past_what_is_stored_starts_as_it_is() {
        let bridge = [event(10, 14)];
        assert_eq!(
            start_past(Some(10), Some(14), 11, &bridge),
            Some((11, &bridge[..]))
        );
        assert_eq!(
            start_past(Some(10), Some(14), 10, &[event(11, 14)]).map(|s| s.0),
            Some(10),
            "a snapshot at the last stored event"
        );
    }

    /// A snapshot fetched before the previous holder's last commit: its bridging event is
    /// stored already, so the epoch starts at the book, past it.
    #[test]
    fn a_snapshot_behind_what_is_stored_starts_at_the_book() {
        let bridge = [event(8, 10), event(11, 13)];
        assert_eq!(
            start_past(Some(10), Some(13), 9, &bridge),
            Some((13, &[][..]))
        );
        // USD-M: the event that ends at the snapshot bridges it, and is stored already.
        assert_eq!(
            start_past(Some(10), Some(10), 10, &[event(7, 10)]),
            None,
            "the book is not past what is stored"
        );
    }

    #[test]
    fn a_book_not_past_what_is_stored_syncs_again() {
        assert_eq!(start_past(Some(10), Some(10), 10, &[]), None);
        assert_eq!(start_past(Some(10), Some(9), 7, &[event(5, 9)]), None);
        assert_eq!(
            start_past(Some(10), Some(11), 11, &[]).map(|s| s.0),
            Some(11)
        );
    }

    #[test]
    fn stored_levels_read_back() {
        let l = at_last(Some(vec!["bid:100".into(), "ask:5".into(), "x:1".into()]));
        assert_eq!(l.len(), 2);
        assert!(l.contains(&(Side::Ask, 5)));
    }
}
