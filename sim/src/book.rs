//! The simulator's exact order book: price → quantity in e8 units, per side.

use std::collections::BTreeMap;

use binance::units::format_e8;
use binance::wire::Level;

/// Levels best first, `(price, qty)` in e8 units.
pub type Levels = Vec<(i64, i64)>;

/// Bid or ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Bid,
    Ask,
}

/// A full book. Bids and asks are keyed by price (e8); best bid is the last bid key, best ask
/// the first ask key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    pub bids: BTreeMap<i64, i64>,
    pub asks: BTreeMap<i64, i64>,
}

impl Book {
    pub fn side(&self, side: Side) -> &BTreeMap<i64, i64> {
        match side {
            Side::Bid => &self.bids,
            Side::Ask => &self.asks,
        }
    }

    pub fn side_mut(&mut self, side: Side) -> &mut BTreeMap<i64, i64> {
        match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    /// Sets a level; quantity 0 removes it (as a Binance diff does).
    pub fn set(&mut self, side: Side, price: i64, qty: i64) {
        if qty == 0 {
            self.side_mut(side).remove(&price);
        } else {
            self.side_mut(side).insert(price, qty);
        }
    }

    /// The price `k` levels from the best on `side` (0: the best).
    pub fn nth_from_top(&self, side: Side, k: usize) -> Option<i64> {
        match side {
            Side::Bid => self.bids.keys().rev().nth(k).copied(),
            Side::Ask => self.asks.keys().nth(k).copied(),
        }
    }

    pub fn best_bid(&self) -> Option<(i64, i64)> {
        self.bids.iter().next_back().map(|(p, q)| (*p, *q))
    }

    pub fn best_ask(&self) -> Option<(i64, i64)> {
        self.asks.iter().next().map(|(p, q)| (*p, *q))
    }

    /// Levels best first, at most `limit` per side.
    pub fn top(&self, limit: usize) -> (Levels, Levels) {
        (
            self.bids
                .iter()
                .rev()
                .take(limit)
                .map(|(p, q)| (*p, *q))
                .collect(),
            self.asks
                .iter()
                .take(limit)
                .map(|(p, q)| (*p, *q))
                .collect(),
        )
    }
}

/// Levels as Binance's `[["price","qty"], ...]` strings.
pub fn wire_levels(levels: &[(i64, i64)], price_decimals: u32, qty_decimals: u32) -> Vec<Level> {
    levels
        .iter()
        .map(|(p, q)| [format_e8(*p, price_decimals), format_e8(*q, qty_decimals)])
        .collect()
}
