//! Depth kept within a window: only the best N levels of each side. A windowed book is stored
//! as what changed *inside the window* — a level that enters it (because a better one went)
//! is written with its quantity, one that leaves it (pushed out by a better one) is written
//! with quantity 0 — so replaying those changes onto a windowed checkpoint gives exactly the
//! best N levels of the real book after every event.

use crate::Levels;

/// The changes that turn `before` into `after`, both one side's best levels (best first, as
/// [`crate::OrderBook::top`] gives them): `(price, qty)` for every level new or changed in
/// `after`, `(price, 0)` for every level of `before` that `after` lacks. Best first.
pub fn changes(before: &[(i64, i64)], after: &[(i64, i64)], bids: bool) -> Levels {
    // Best first means descending prices for bids and ascending for asks; compare keys
    // that ascend either way.
    let key = |p: i64| if bids { -(p as i128) } else { p as i128 };
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < before.len() || j < after.len() {
        match (before.get(i), after.get(j)) {
            (Some(&(pb, qb)), Some(&(pa, qa))) if pb == pa => {
                if qb != qa {
                    out.push((pa, qa));
                }
                i += 1;
                j += 1;
            }
            (Some(&(pb, _)), Some(&(pa, _))) if key(pb) < key(pa) => {
                out.push((pb, 0));
                i += 1;
            }
            (Some(&(pb, _)), None) => {
                out.push((pb, 0));
                i += 1;
            }
            (_, Some(&(pa, qa))) => {
                out.push((pa, qa));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Whether `price` lies inside a side's window `kept` (best first, at most `n` levels): a
/// window not yet full holds every price; a full one those at or better than its worst.
pub fn inside(kept: &[(i64, i64)], n: usize, price: i64, bids: bool) -> bool {
    match kept.last() {
        Some(&(worst, _)) if kept.len() >= n => {
            if bids {
                price >= worst
            } else {
                price <= worst
            }
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OrderBook, Side};

    fn apply(book: &mut OrderBook, side: Side, levels: &[(i64, i64)]) {
        for &(p, q) in levels {
            book.set(side, p, q);
        }
    }

    #[test]
    fn a_level_pushed_out_is_written_as_removed_and_one_pulled_in_with_its_qty() {
        let before = [(100, 1), (99, 2)];
        let after = [(101, 5), (100, 1)];
        assert_eq!(changes(&before, &after, true), vec![(101, 5), (99, 0)]);
        let before = [(10, 1), (11, 2)];
        let after = [(11, 3), (12, 4)];
        assert_eq!(
            changes(&before, &after, false),
            vec![(10, 0), (11, 3), (12, 4)]
        );
        assert!(changes(&after, &after, false).is_empty());
    }

    /// Replaying the window's changes onto the first window gives, after every event, exactly
    /// the best N levels of the full book — whatever happens outside the window.
    #[test]
    fn replayed_changes_give_the_top_n_after_every_event() {
        const N: usize = 5;
        let mut full = OrderBook::default();
        let mut stored = OrderBook::default();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5_000 {
            let (before_b, before_a) = full.top(N);
            for _ in 0..(next() % 4 + 1) {
                let bid = next() % 2 == 0;
                // Bids 1..=40, asks 41..=80, so the book never crosses.
                let price = (next() % 40 + if bid { 1 } else { 41 }) as i64;
                let qty = if next() % 3 == 0 {
                    0
                } else {
                    (next() % 9 + 1) as i64
                };
                full.set(if bid { Side::Bid } else { Side::Ask }, price, qty);
            }
            let (after_b, after_a) = full.top(N);
            apply(&mut stored, Side::Bid, &changes(&before_b, &after_b, true));
            apply(&mut stored, Side::Ask, &changes(&before_a, &after_a, false));
            assert_eq!(stored.top(usize::MAX), (after_b, after_a));
        }
    }

    #[test]
    fn a_window_not_yet_full_holds_every_price() {
        assert!(inside(&[(100, 1)], 2, 1, true));
        assert!(!inside(&[(100, 1), (99, 1)], 2, 98, true));
        assert!(inside(&[(100, 1), (99, 1)], 2, 99, true));
        assert!(!inside(&[(10, 1), (11, 1)], 2, 12, false));
        assert!(inside(&[], 1, 12, false));
    }
}
