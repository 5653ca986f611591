//! A standby symbol's rows (`--standby`), kept in memory for a while instead of written: the
//! writer of a standby symbol task keeps them here until its shard is taken over.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::lease::Fence;
use crate::row::Row;

/// A standby symbol's rows, kept for `--standby-keep-secs` and written only if its shard is taken
/// over (the writer's `go_live`).
#[derive(Debug)]
pub struct Hold {
    pub(crate) state: tokio::sync::Mutex<HoldState>,
    keep: Duration,
}

#[derive(Debug)]
pub(crate) struct HoldState {
    /// `None` once live.
    pub(crate) kept: Option<VecDeque<(Instant, Row)>>,
    /// The lease its rows are written under once live.
    pub(crate) fence: Option<Fence>,
    /// The highest update id of a depth row let go for age: a takeover continues an epoch only
    /// if that is not past the epoch's last stored event.
    pub(crate) dropped_depth: u64,
}

impl Hold {
    pub fn new(keep: Duration) -> Hold {
        Hold {
            state: tokio::sync::Mutex::new(HoldState {
                kept: Some(VecDeque::new()),
                fence: None,
                dropped_depth: 0,
            }),
            keep,
        }
    }

    pub(crate) fn keep(&self, st: &mut HoldState, row: Row) {
        self.keep_at(st, row, Instant::now());
    }

    fn keep_at(&self, st: &mut HoldState, row: Row, now: Instant) {
        let Some(kept) = st.kept.as_mut() else {
            return;
        };
        while let Some((at, _)) = kept.front() {
            if now.duration_since(*at) <= self.keep {
                break;
            }
            if let Some((_, Row::Depth(d))) = kept.pop_front() {
                st.dropped_depth = st.dropped_depth.max(d.update_id);
            }
        }
        kept.push_back((now, row));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(update_id: u64) -> Row {
        Row::Depth(crate::row::DepthRow {
            time: update_id,
            instrument_id: 1,
            first_update_id: update_id,
            update_id,
            prev_update_id: None,
            side: book::Side::Bid,
            price: 1,
            qty: 1,
            received_at: 0,
        })
    }

    #[tokio::test]
    async fn a_hold_lets_go_of_old_rows_and_remembers_the_depth_it_dropped() {
        let hold = Hold::new(Duration::from_secs(1));
        let mut st = hold.state.lock().await;
        let t = Instant::now();
        hold.keep_at(&mut st, depth(3), t);
        hold.keep_at(&mut st, depth(4), t + Duration::from_secs(1));
        assert_eq!(st.dropped_depth, 0, "not older than a second yet");
        hold.keep_at(&mut st, depth(5), t + Duration::from_millis(1001));
        assert_eq!(st.dropped_depth, 3);
        assert_eq!(st.kept.as_ref().map(VecDeque::len), Some(2));
    }
}
