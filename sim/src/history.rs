//! Ground truth: the book of a symbol at any update id within a retained window, kept as
//! periodic checkpoints plus every depth event since the oldest one.

use std::collections::VecDeque;

use crate::book::{Book, Side};

/// One published depth event: ids `first..=last` and the final quantity per changed level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub first: u64,
    pub last: u64,
    pub levels: Vec<(Side, i64, i64)>,
}

/// Why a truth request cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TruthError {
    #[error("update id {requested} is older than the retained window (oldest {oldest})")]
    TooOld { requested: u64, oldest: u64 },
    #[error("update id {requested} is in the future (latest {latest})")]
    Future { requested: u64, latest: u64 },
}

#[derive(Debug)]
pub struct History {
    every: usize,
    keep: usize,
    checkpoints: VecDeque<(u64, Book)>,
    events: VecDeque<Event>,
    since_checkpoint: usize,
}

impl History {
    /// A checkpoint every `every` events, `keep` checkpoints retained (the window is about
    /// `every * keep` events).
    pub fn new(start_id: u64, book: &Book, every: usize, keep: usize) -> History {
        let mut checkpoints = VecDeque::new();
        checkpoints.push_back((start_id, book.clone()));
        History {
            every: every.max(1),
            keep: keep.max(1),
            checkpoints,
            events: VecDeque::new(),
            since_checkpoint: 0,
        }
    }

    /// Records an event already applied to `book` (the book after it).
    pub fn push(&mut self, event: Event, book_after: &Book) {
        let last = event.last;
        self.events.push_back(event);
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.every {
            self.since_checkpoint = 0;
            self.checkpoints.push_back((last, book_after.clone()));
            while self.checkpoints.len() > self.keep {
                self.checkpoints.pop_front();
            }
            let oldest = self.checkpoints.front().map(|c| c.0).unwrap_or(0);
            while self.events.front().is_some_and(|e| e.last <= oldest) {
                self.events.pop_front();
            }
        }
    }

    /// The latest id recorded.
    pub fn latest(&self) -> u64 {
        self.events
            .back()
            .map(|e| e.last)
            .or_else(|| self.checkpoints.back().map(|c| c.0))
            .unwrap_or(0)
    }

    /// The book after every event whose last id is at most `id`, and that event's last id.
    pub fn book_at(&self, id: u64) -> Result<(u64, Book), TruthError> {
        let latest = self.latest();
        if id > latest {
            return Err(TruthError::Future {
                requested: id,
                latest,
            });
        }
        let Some(idx) = self.checkpoints.iter().rposition(|c| c.0 <= id) else {
            let oldest = self.checkpoints.front().map(|c| c.0).unwrap_or(0);
            return Err(TruthError::TooOld {
                requested: id,
                oldest,
            });
        };
        let (from, mut book) = (self.checkpoints[idx].0, self.checkpoints[idx].1.clone());
        let mut at = from;
        for e in self.events.iter().filter(|e| e.last > from && e.last <= id) {
            for (side, price, qty) in &e.levels {
                book.set(*side, *price, *qty);
            }
            at = e.last;
        }
        Ok((at, book))
    }

    /// The last id of the event `n` events before the newest (for stale snapshots).
    pub fn id_behind(&self, n: usize) -> u64 {
        let len = self.events.len();
        if n >= len {
            return self.checkpoints.front().map(|c| c.0).unwrap_or(0);
        }
        self.events[len - 1 - n].last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_every_id_in_the_window() {
        let mut book = Book::default();
        book.set(Side::Bid, 100, 1);
        let mut h = History::new(10, &book, 3, 2);
        let mut snapshots = vec![(10, book.clone())];
        for i in 0..10u64 {
            let e = Event {
                first: 11 + 2 * i,
                last: 12 + 2 * i,
                levels: vec![(Side::Ask, 200 + i as i64, 5), (Side::Bid, 100, i as i64)],
            };
            for (s, p, q) in &e.levels {
                book.set(*s, *p, *q);
            }
            h.push(e, &book);
            snapshots.push((12 + 2 * i, book.clone()));
        }
        assert_eq!(h.latest(), 30);
        // Ids between events answer with the book after the last event at or before them.
        assert_eq!(h.book_at(29).expect("in window"), snapshots[9].clone());
        assert_eq!(h.book_at(30).expect("latest"), snapshots[10].clone());
        assert!(matches!(h.book_at(31), Err(TruthError::Future { .. })));
        assert!(matches!(h.book_at(12), Err(TruthError::TooOld { .. })));
        assert_eq!(h.id_behind(0), 30);
        assert_eq!(h.id_behind(2), 26);
    }
}
