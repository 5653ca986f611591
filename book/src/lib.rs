//! The order book model: exact e8 prices and quantities, Binance's snapshot + diff
//! synchronisation as a pure state machine (no I/O, so every rule is unit-tested), and the
//! top-of-book features stored in `book_top`.

pub mod features;
pub mod sync;
pub mod window;

/// Bid or ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Bid,
    Ask,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Bid => "bid",
            Side::Ask => "ask",
        }
    }
}

/// `(price, qty)` in e8 units, best first.
pub type Levels = Vec<(i64, i64)>;

/// A full order book, in e8 units: per side a vector of `(price, qty)` sorted so that the best
/// level is last.
///
/// A sorted vector holds a level in 16 bytes where a B-tree map needs about twice that, and
/// almost every change lands near the top of the book, which is the vector's cheap end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderBook {
    /// Ascending price: the best bid last.
    bids: Vec<(i64, i64)>,
    /// Descending price: the best ask last.
    asks: Vec<(i64, i64)>,
}

impl OrderBook {
    /// The book these levels make when set in order (a later level at the same price wins).
    pub fn from_levels(bids: &[(i64, i64)], asks: &[(i64, i64)]) -> OrderBook {
        OrderBook {
            bids: sorted_side(bids, |p| p),
            asks: sorted_side(asks, |p| -p),
        }
    }

    /// Quantity 0 removes the level; removing an absent level is fine (Binance says so).
    pub fn set(&mut self, side: Side, price: i64, qty: i64) {
        let (levels, found) = match side {
            Side::Bid => {
                let found = self.bids.binary_search_by(|l| l.0.cmp(&price));
                (&mut self.bids, found)
            }
            Side::Ask => {
                let found = self.asks.binary_search_by(|l| price.cmp(&l.0));
                (&mut self.asks, found)
            }
        };
        match (found, qty) {
            (Ok(i), 0) => {
                levels.remove(i);
            }
            (Ok(i), q) => levels[i].1 = q,
            (Err(_), 0) => {}
            (Err(i), q) => levels.insert(i, (price, q)),
        }
    }

    pub fn best_bid(&self) -> Option<(i64, i64)> {
        self.bids.last().copied()
    }

    pub fn best_ask(&self) -> Option<(i64, i64)> {
        self.asks.last().copied()
    }

    /// Best `n` levels per side, best first.
    pub fn top(&self, n: usize) -> (Levels, Levels) {
        (
            self.bids.iter().rev().take(n).copied().collect(),
            self.asks.iter().rev().take(n).copied().collect(),
        )
    }

    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }

    /// A crossed book (best bid at or above best ask) cannot be a correct Binance book.
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.0 >= a.0)
    }
}

/// One side's levels in the order `key` sorts them ascending, the last of each price kept and
/// empty levels left out: the result of setting them one by one, without shifting the vector
/// for each (a snapshot arrives best first, the opposite of the stored order on the bid side).
fn sorted_side(levels: &[(i64, i64)], key: fn(i64) -> i64) -> Vec<(i64, i64)> {
    let mut v = levels.to_vec();
    // Stable: of two levels at one price, the later stays after the earlier.
    v.sort_by_key(|l| key(l.0));
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
    for l in v {
        match out.last_mut() {
            Some(last) if last.0 == l.0 => *last = l,
            _ => out.push(l),
        }
    }
    out.retain(|l| l.1 != 0);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// The obvious model: a map per side.
    #[derive(Default)]
    struct Model {
        bids: BTreeMap<i64, i64>,
        asks: BTreeMap<i64, i64>,
    }

    impl Model {
        fn set(&mut self, side: Side, p: i64, q: i64) {
            let m = match side {
                Side::Bid => &mut self.bids,
                Side::Ask => &mut self.asks,
            };
            if q == 0 {
                m.remove(&p);
            } else {
                m.insert(p, q);
            }
        }

        fn top(&self) -> (Levels, Levels) {
            (
                self.bids.iter().rev().map(|(p, q)| (*p, *q)).collect(),
                self.asks.iter().map(|(p, q)| (*p, *q)).collect(),
            )
        }
    }

    fn side() -> impl Strategy<Value = Side> {
        prop_oneof![Just(Side::Bid), Just(Side::Ask)]
    }

    /// Few prices and quantities that are often 0, so levels collide, vanish and return.
    fn level() -> impl Strategy<Value = (i64, i64)> {
        (-20i64..60, prop_oneof![Just(0i64), 1i64..4])
    }

    proptest! {
        #[test]
        fn the_sorted_book_matches_a_map_per_side(
            snap_bids in prop::collection::vec(level(), 0..40),
            snap_asks in prop::collection::vec(level(), 0..40),
            changes in prop::collection::vec((side(), level()), 0..300),
        ) {
            let mut model = Model::default();
            for &(p, q) in &snap_bids {
                model.set(Side::Bid, p, q);
            }
            for &(p, q) in &snap_asks {
                model.set(Side::Ask, p, q);
            }
            let mut book = OrderBook::from_levels(&snap_bids, &snap_asks);
            prop_assert_eq!(book.top(usize::MAX), model.top());
            for (s, (p, q)) in changes {
                book.set(s, p, q);
                model.set(s, p, q);
                prop_assert_eq!(book.top(usize::MAX), model.top());
                prop_assert_eq!(book.best_bid(), model.top().0.first().copied());
                prop_assert_eq!(book.best_ask(), model.top().1.first().copied());
                prop_assert_eq!(book.depth(), (model.bids.len(), model.asks.len()));
            }
        }
    }

    #[test]
    fn top_n_is_the_best_n_best_first() {
        let book = OrderBook::from_levels(&[(99, 1), (97, 2), (98, 3)], &[(103, 4), (101, 5)]);
        assert_eq!(
            book.top(2),
            (vec![(99, 1), (98, 3)], vec![(101, 5), (103, 4)])
        );
        assert!(!book.is_crossed());
    }
}
