//! The order book model: exact e8 prices and quantities, Binance's snapshot + diff
//! synchronisation as a pure state machine (no I/O, so every rule is unit-tested), and the
//! top-of-book features stored in `book_top`.

pub mod features;
pub mod sync;
pub mod window;

use std::collections::BTreeMap;

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

/// A full order book, price → quantity per side, in e8 units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderBook {
    bids: BTreeMap<i64, i64>,
    asks: BTreeMap<i64, i64>,
}

impl OrderBook {
    pub fn from_levels(bids: &[(i64, i64)], asks: &[(i64, i64)]) -> OrderBook {
        let mut b = OrderBook::default();
        for &(p, q) in bids {
            b.set(Side::Bid, p, q);
        }
        for &(p, q) in asks {
            b.set(Side::Ask, p, q);
        }
        b
    }

    /// Quantity 0 removes the level; removing an absent level is fine (Binance says so).
    pub fn set(&mut self, side: Side, price: i64, qty: i64) {
        let m = match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        };
        if qty == 0 {
            m.remove(&price);
        } else {
            m.insert(price, qty);
        }
    }

    pub fn best_bid(&self) -> Option<(i64, i64)> {
        self.bids.iter().next_back().map(|(p, q)| (*p, *q))
    }

    pub fn best_ask(&self) -> Option<(i64, i64)> {
        self.asks.iter().next().map(|(p, q)| (*p, *q))
    }

    /// Best `n` levels per side, best first.
    pub fn top(&self, n: usize) -> (Levels, Levels) {
        (
            self.bids
                .iter()
                .rev()
                .take(n)
                .map(|(p, q)| (*p, *q))
                .collect(),
            self.asks.iter().take(n).map(|(p, q)| (*p, *q)).collect(),
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
