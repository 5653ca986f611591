//! Binance's "how to manage a local order book correctly", as a state machine per symbol.
//!
//! Spot: buffer the diff stream, note the first event's `U`; fetch a snapshot; if its
//! `lastUpdateId` is below that first `U`, fetch again; drop buffered events with
//! `u <= lastUpdateId`; then apply in order, where an event with `U > book_id + 1` means a lost
//! message (a gap: resync), an event with `u <= book_id` is old (ignored), and every applied
//! event sets `book_id = u`.
//!
//! USD-M: drop buffered events with `u < lastUpdateId`; the first applied event must have
//! `U <= lastUpdateId <= u` (or `pu == lastUpdateId`); afterwards every event's `pu` must equal
//! the previous event's `u`, else a gap. USD-M ids are not contiguous, so only `pu` proves
//! continuity.
//!
//! A snapshot is a state the exchange's book passed through at no event boundary we can date:
//! its `lastUpdateId` often falls inside an event. So a sync is complete, and the book exact
//! at a known instant, only once the first event that bridges the snapshot is applied: the
//! book then equals the exchange's after that event, at that event's time. When the snapshot
//! answers before the bridging event arrives, the machine holds it (`Bridging`) and checks the
//! next events against the first-event rule, not the continuity rule.

use std::collections::VecDeque;

use crate::{OrderBook, Side};

/// Which venue's rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    Spot,
    Usdm,
}

/// One diff depth event, prices and quantities in e8 units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthEvent {
    pub event_time_ms: u64,
    pub first_update_id: u64,
    pub final_update_id: u64,
    pub prev_final_update_id: Option<u64>,
    pub bids: Vec<(i64, i64)>,
    pub asks: Vec<(i64, i64)>,
}

impl DepthEvent {
    fn apply_to(&self, book: &mut OrderBook) {
        for &(p, q) in &self.bids {
            book.set(Side::Bid, p, q);
        }
        for &(p, q) in &self.asks {
            book.set(Side::Ask, p, q);
        }
    }
}

/// A REST depth snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub last_update_id: u64,
    pub bids: Vec<(i64, i64)>,
    pub asks: Vec<(i64, i64)>,
}

/// What happened to one live event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not synced yet: kept for the snapshot.
    Buffered,
    /// Older than the book (a duplicate or replay): nothing to do.
    Ignored,
    /// Applied; the book now stands at the event's `u`.
    Applied,
    /// This event bridged the snapshot (its `lastUpdateId` given) held since `on_snapshot`: the
    /// book is synced now, standing at the event's `u`, exact from the event's time.
    Synced { snapshot_id: u64 },
    /// Update ids are missing between the book and this event. The machine is back to
    /// buffering (this event is its first); the caller records the gap and fetches a snapshot.
    Gap(Gap),
    /// Applying the event would leave a crossed book: the book cannot be trusted; treated as
    /// a gap by the caller.
    Crossed(Gap),
}

/// A recorded loss: the book was exact up to `last_good_id` (at `last_good_time_ms`); ids
/// `missing_from..=missing_to` were never seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub last_good_id: u64,
    pub last_good_time_ms: u64,
    pub missing_from: u64,
    pub missing_to: u64,
}

/// Why a snapshot cannot start a book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot lastUpdateId {last} is older than the first buffered event (U = {first}): fetch again")]
    Stale { last: u64, first: u64 },
    #[error("no buffered event yet: wait for the stream before fetching a snapshot")]
    NothingBuffered,
    #[error("the buffered events do not continue from the snapshot (lastUpdateId {last}, next U {next}): fetch again")]
    Discontinuous { last: u64, next: u64 },
}

/// A sync completed from the buffer: the events applied on top of the snapshot (they must be
/// stored too). The book is exact from the last one's time ([`SyncMachine::last_time_ms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub applied: Vec<DepthEvent>,
}

#[derive(Debug)]
enum State {
    Buffering(VecDeque<DepthEvent>),
    /// The book holds a snapshot at `last_update_id`; no event has bridged it yet.
    Bridging {
        last_update_id: u64,
    },
    Synced {
        book_id: u64,
        last_time_ms: u64,
    },
}

/// The per-symbol machine. The book it holds is only meaningful while synced.
#[derive(Debug)]
pub struct SyncMachine {
    rules: Rules,
    state: State,
    book: OrderBook,
    max_buffer: usize,
}

impl SyncMachine {
    /// `max_buffer`: events kept while waiting for a snapshot (the oldest go first: a snapshot
    /// fetched later must be newer than them anyway).
    pub fn new(rules: Rules, max_buffer: usize) -> SyncMachine {
        SyncMachine {
            rules,
            state: State::Buffering(VecDeque::new()),
            book: OrderBook::default(),
            max_buffer: max_buffer.max(1),
        }
    }

    pub fn is_synced(&self) -> bool {
        matches!(self.state, State::Synced { .. })
    }

    /// The update id the book stands at, when synced.
    pub fn book_id(&self) -> Option<u64> {
        match self.state {
            State::Synced { book_id, .. } => Some(book_id),
            _ => None,
        }
    }

    /// Event time of the last applied event, when synced.
    pub fn last_time_ms(&self) -> Option<u64> {
        match self.state {
            State::Synced { last_time_ms, .. } => Some(last_time_ms),
            _ => None,
        }
    }

    /// Whether `e` is already contained in a snapshot at `last`.
    fn contained(&self, e: &DepthEvent, last: u64) -> bool {
        match self.rules {
            Rules::Spot => e.final_update_id <= last,
            Rules::Usdm => e.final_update_id < last,
        }
    }

    /// Binance's rule for the first event applied on a snapshot at `last`.
    fn bridges(&self, e: &DepthEvent, last: u64) -> bool {
        match self.rules {
            Rules::Spot => e.first_update_id <= last + 1 && last < e.final_update_id,
            Rules::Usdm => {
                (e.first_update_id <= last && last <= e.final_update_id)
                    || e.prev_final_update_id == Some(last)
            }
        }
    }

    pub fn book(&self) -> &OrderBook {
        &self.book
    }

    /// Whether a snapshot can be requested now (an event must be buffered first).
    pub fn wants_snapshot(&self) -> bool {
        matches!(&self.state, State::Buffering(b) if !b.is_empty())
    }

    /// Drops the book and starts buffering again (a reconnect without continuity, a stop).
    pub fn reset(&mut self) {
        self.state = State::Buffering(VecDeque::new());
    }

    pub fn on_event(&mut self, ev: DepthEvent) -> Outcome {
        match &mut self.state {
            State::Bridging { last_update_id } => {
                let last = *last_update_id;
                if self.contained(&ev, last) {
                    return Outcome::Ignored;
                }
                if !self.bridges(&ev, last) {
                    // Events between the snapshot and this one were lost: buffer again from
                    // here and fetch a newer snapshot (no epoch had started).
                    self.state = State::Buffering(VecDeque::from([ev]));
                    return Outcome::Buffered;
                }
                ev.apply_to(&mut self.book);
                if self.book.is_crossed() {
                    self.state = State::Buffering(VecDeque::new());
                    return Outcome::Buffered;
                }
                self.state = State::Synced {
                    book_id: ev.final_update_id,
                    last_time_ms: ev.event_time_ms,
                };
                Outcome::Synced { snapshot_id: last }
            }
            State::Buffering(buf) => {
                if buf.len() == self.max_buffer {
                    buf.pop_front();
                }
                buf.push_back(ev);
                Outcome::Buffered
            }
            State::Synced {
                book_id,
                last_time_ms,
            } => {
                let (id, t) = (*book_id, *last_time_ms);
                if ev.final_update_id <= id {
                    return Outcome::Ignored;
                }
                let continuous = match self.rules {
                    Rules::Spot => ev.first_update_id <= id + 1,
                    Rules::Usdm => ev.prev_final_update_id == Some(id),
                };
                if !continuous {
                    let missing_to = match (self.rules, ev.prev_final_update_id) {
                        (Rules::Usdm, Some(pu)) if pu > id => pu,
                        _ => ev.first_update_id.saturating_sub(1).max(id + 1),
                    };
                    let gap = Gap {
                        last_good_id: id,
                        last_good_time_ms: t,
                        missing_from: id + 1,
                        missing_to,
                    };
                    self.state = State::Buffering(VecDeque::from([ev]));
                    return Outcome::Gap(gap);
                }
                ev.apply_to(&mut self.book);
                if self.book.is_crossed() {
                    let gap = Gap {
                        last_good_id: id,
                        last_good_time_ms: t,
                        missing_from: ev.first_update_id,
                        missing_to: ev.final_update_id,
                    };
                    self.state = State::Buffering(VecDeque::new());
                    return Outcome::Crossed(gap);
                }
                self.state = State::Synced {
                    book_id: ev.final_update_id,
                    last_time_ms: ev.event_time_ms.max(t),
                };
                Outcome::Applied
            }
        }
    }

    /// Starts the book from a snapshot and the buffered events. `Ok(Some)`: synced, exact from
    /// the last applied event's time. `Ok(None)`: every buffered event is older than the
    /// snapshot (or a sync is not needed); the next event that bridges it completes the sync
    /// ([`Outcome::Synced`]). On an error the machine keeps buffering and a new snapshot
    /// should be fetched.
    pub fn on_snapshot(&mut self, snap: Snapshot) -> Result<Option<Synced>, SnapshotError> {
        let State::Buffering(buf) = &mut self.state else {
            // Synced or holding a snapshot already: a late answer is not needed.
            return Ok(None);
        };
        let Some(first) = buf.front() else {
            return Err(SnapshotError::NothingBuffered);
        };
        let last = snap.last_update_id;
        let stale = match self.rules {
            Rules::Spot => last < first.first_update_id,
            Rules::Usdm => last < first.first_update_id && first.prev_final_update_id != Some(last),
        };
        if stale {
            return Err(SnapshotError::Stale {
                last,
                first: first.first_update_id,
            });
        }
        let buffered: Vec<DepthEvent> = std::mem::take(buf).into();
        let keep: Vec<DepthEvent> = buffered
            .into_iter()
            .filter(|e| !self.contained(e, last))
            .collect();
        let mut book = OrderBook::from_levels(&snap.bids, &snap.asks);
        let Some(first) = keep.first() else {
            self.book = book;
            self.state = State::Bridging {
                last_update_id: last,
            };
            return Ok(None);
        };
        let mut id = last;
        let mut t = first.event_time_ms;
        for (i, e) in keep.iter().enumerate() {
            let ok = match (self.rules, i) {
                (_, 0) => self.bridges(e, last),
                (Rules::Spot, _) => e.first_update_id <= id + 1,
                (Rules::Usdm, _) => e.prev_final_update_id == Some(id),
            };
            if !ok {
                // Keep buffering from here; the next snapshot must cover this event.
                self.state = State::Buffering(keep[i..].iter().cloned().collect());
                return Err(SnapshotError::Discontinuous {
                    last: id,
                    next: e.first_update_id,
                });
            }
            e.apply_to(&mut book);
            id = e.final_update_id;
            t = t.max(e.event_time_ms);
        }
        self.book = book;
        self.state = State::Synced {
            book_id: id,
            last_time_ms: t,
        };
        Ok(Some(Synced { applied: keep }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(first: u64, last: u64, pu: Option<u64>, bids: &[(i64, i64)]) -> DepthEvent {
        DepthEvent {
            event_time_ms: last * 10,
            first_update_id: first,
            final_update_id: last,
            prev_final_update_id: pu,
            bids: bids.to_vec(),
            asks: vec![(1000, 1)],
        }
    }

    fn snap(last: u64) -> Snapshot {
        Snapshot {
            last_update_id: last,
            bids: vec![(100, 1), (99, 2)],
            asks: vec![(1000, 1)],
        }
    }

    #[test]
    fn spot_sync_drops_old_events_and_applies_the_rest() {
        let mut m = SyncMachine::new(Rules::Spot, 100);
        assert!(!m.wants_snapshot());
        assert_eq!(m.on_snapshot(snap(10)), Err(SnapshotError::NothingBuffered));
        for e in [
            ev(5, 8, None, &[(98, 1)]),
            ev(9, 12, None, &[(99, 0)]),
            ev(13, 13, None, &[(101, 5)]),
        ] {
            assert_eq!(m.on_event(e), Outcome::Buffered);
        }
        assert_eq!(
            m.on_snapshot(snap(4)),
            Err(SnapshotError::Stale { last: 4, first: 5 })
        );
        let s = m.on_snapshot(snap(10)).expect("syncs").expect("synced");
        assert_eq!(
            s.applied.len(),
            2,
            "the event straddling the snapshot and the next"
        );
        assert_eq!(
            m.last_time_ms(),
            Some(130),
            "exact from the last applied event, never from a dropped one"
        );
        assert_eq!(m.book_id(), Some(13));
        assert_eq!(
            m.book().top(5).0,
            vec![(101, 5), (100, 1)],
            "99 removed, 101 added, 98 never applied"
        );
        assert_eq!(
            m.on_event(ev(12, 13, None, &[])),
            Outcome::Ignored,
            "duplicate"
        );
        assert_eq!(m.on_event(ev(14, 15, None, &[])), Outcome::Applied);
        match m.on_event(ev(18, 20, None, &[])) {
            Outcome::Gap(g) => assert_eq!(
                (
                    g.last_good_id,
                    g.missing_from,
                    g.missing_to,
                    g.last_good_time_ms
                ),
                (15, 16, 17, 150)
            ),
            other => panic!("expected a gap, got {other:?}"),
        }
        assert!(!m.is_synced());
        assert!(m.wants_snapshot(), "the gap's event starts the new buffer");
    }

    #[test]
    fn spot_snapshot_older_than_the_buffer_after_trimming_is_refused() {
        let mut m = SyncMachine::new(Rules::Spot, 2);
        for i in 0..5 {
            m.on_event(ev(10 + 2 * i, 11 + 2 * i, None, &[]));
        }
        // The buffer kept 16..19 only; a snapshot at 12 cannot continue into it.
        assert!(matches!(
            m.on_snapshot(snap(12)),
            Err(SnapshotError::Stale { .. })
        ));
        assert!(m.on_snapshot(snap(17)).is_ok());
    }

    #[test]
    fn usdm_uses_pu_for_continuity() {
        let mut m = SyncMachine::new(Rules::Usdm, 100);
        m.on_event(ev(90, 95, Some(80), &[]));
        m.on_event(ev(97, 103, Some(95), &[(97, 3)]));
        m.on_event(ev(106, 110, Some(103), &[]));
        let s = m
            .on_snapshot(snap(100))
            .expect("U <= lastUpdateId <= u")
            .expect("synced");
        assert_eq!(s.applied.len(), 2);
        assert_eq!(m.book_id(), Some(110));
        // Ids jump on USD-M: U is not book_id + 1, pu proves continuity.
        assert_eq!(m.on_event(ev(115, 120, Some(110), &[])), Outcome::Applied);
        match m.on_event(ev(130, 135, Some(125), &[])) {
            Outcome::Gap(g) => assert_eq!((g.missing_from, g.missing_to), (121, 125)),
            other => panic!("expected a gap, got {other:?}"),
        }
    }

    #[test]
    fn usdm_accepts_pu_equal_to_last_update_id() {
        let mut m = SyncMachine::new(Rules::Usdm, 100);
        m.on_event(ev(105, 108, Some(100), &[]));
        m.on_snapshot(snap(100)).expect("pu == lastUpdateId");
        assert_eq!(m.book_id(), Some(108));
    }

    #[test]
    fn a_crossed_book_is_not_kept() {
        let mut m = SyncMachine::new(Rules::Spot, 10);
        // Binance: a snapshot below the first buffered U is refetched, even when U = id + 1.
        m.on_event(ev(11, 11, None, &[]));
        assert!(matches!(
            m.on_snapshot(snap(10)),
            Err(SnapshotError::Stale { .. })
        ));
        m.on_event(ev(12, 12, None, &[]));
        m.on_snapshot(snap(11)).expect("sync");
        assert!(matches!(
            m.on_event(ev(13, 13, None, &[(2000, 1)])),
            Outcome::Crossed(_)
        ));
        assert!(!m.is_synced());
    }

    #[test]
    fn reordered_events_are_a_gap_not_a_wrong_book() {
        let mut m = SyncMachine::new(Rules::Spot, 10);
        m.on_event(ev(10, 12, None, &[]));
        m.on_snapshot(snap(10)).expect("sync");
        assert!(
            matches!(m.on_event(ev(15, 16, None, &[])), Outcome::Gap(_)),
            "13-14 arrive late"
        );
    }

    /// Real USD-M: the snapshot answers before the next diff, and its lastUpdateId falls
    /// inside that diff (`U <= L <= u`, `pu < L`). That event bridges it: no false gap.
    #[test]
    fn usdm_snapshot_before_the_bridging_event_is_not_a_gap() {
        let mut m = SyncMachine::new(Rules::Usdm, 100);
        m.on_event(ev(90, 95, Some(80), &[]));
        assert_eq!(m.on_snapshot(snap(100)), Ok(None), "waits for the bridge");
        assert!(!m.is_synced() && !m.wants_snapshot());
        assert_eq!(
            m.on_event(ev(97, 103, Some(95), &[(97, 3)])),
            Outcome::Synced { snapshot_id: 100 }
        );
        assert_eq!((m.book_id(), m.last_time_ms()), (Some(103), Some(1030)));
        assert_eq!(m.on_event(ev(104, 110, Some(103), &[])), Outcome::Applied);
    }

    /// The USD-M event whose `u` equals lastUpdateId is applied, and the sync is exact only
    /// after it: its levels outside the snapshot's depth are in the book.
    #[test]
    fn usdm_event_ending_at_the_snapshot_is_part_of_the_synced_book() {
        let mut m = SyncMachine::new(Rules::Usdm, 100);
        m.on_event(ev(90, 100, Some(80), &[(50, 8)]));
        let s = m.on_snapshot(snap(100)).expect("sync").expect("synced");
        assert_eq!(s.applied.len(), 1);
        assert_eq!(m.last_time_ms(), Some(1000));
        assert!(m.book().top(10).0.contains(&(50, 8)));
    }

    /// Spot: the snapshot answers before the events it contains reach the task. Those are
    /// ignored, and the book is exact only from the first event after the snapshot.
    #[test]
    fn spot_snapshot_ahead_of_the_stream_waits_for_its_next_event() {
        let mut m = SyncMachine::new(Rules::Spot, 100);
        m.on_event(ev(5, 8, None, &[]));
        assert_eq!(m.on_snapshot(snap(10)), Ok(None));
        assert_eq!(m.on_event(ev(9, 10, None, &[(98, 1)])), Outcome::Ignored);
        assert_eq!(m.last_time_ms(), None, "not exact at any instant yet");
        assert_eq!(
            m.on_event(ev(11, 12, None, &[])),
            Outcome::Synced { snapshot_id: 10 }
        );
        assert_eq!((m.book_id(), m.last_time_ms()), (Some(12), Some(120)));
        assert!(
            !m.book().top(10).0.contains(&(98, 1)),
            "an event the snapshot contains is not applied twice"
        );
    }

    /// A held snapshot that the stream skips past cannot start a book: fetch another.
    #[test]
    fn a_held_snapshot_the_stream_skips_is_dropped() {
        let mut m = SyncMachine::new(Rules::Spot, 100);
        m.on_event(ev(5, 8, None, &[]));
        assert_eq!(m.on_snapshot(snap(10)), Ok(None));
        assert_eq!(m.on_event(ev(13, 14, None, &[])), Outcome::Buffered);
        assert!(!m.is_synced());
        assert!(m.wants_snapshot());
    }
}
