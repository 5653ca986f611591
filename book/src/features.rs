//! Top-of-book features for `book_top`. Sums and the mid are exact; ratios are
//! floats, since they are not prices.

use crate::Levels;

/// An exact decimal: `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec {
    pub mantissa: i128,
    pub scale: u32,
}

/// Levels of the book sampled, and what is computed from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// (best bid + best ask) / 2, exact (scale 9).
    pub mid: Option<Dec>,
    /// best ask − best bid, e8.
    pub spread_e8: Option<i64>,
    /// (bid · ask_qty + ask · bid_qty) / (bid_qty + ask_qty), rounded to 12 decimals.
    pub microprice: Option<Dec>,
    /// (bid qty − ask qty) / (bid qty + ask qty) over the top 1, 5, 10 levels.
    pub imbalance: [Option<f64>; 3],
    /// Quantity within 10 and 50 bps of the mid, per side, e8.
    pub bid_depth_bps: [i64; 2],
    pub ask_depth_bps: [i64; 2],
    /// Largest level among the sampled ones: price e8, qty e8, distance from mid in bps.
    pub bid_wall: Option<(i64, i64, f64)>,
    pub ask_wall: Option<(i64, i64, f64)>,
}

fn imbalance(bids: &Levels, asks: &Levels, k: usize) -> Option<f64> {
    let b: i128 = bids.iter().take(k).map(|l| i128::from(l.1)).sum();
    let a: i128 = asks.iter().take(k).map(|l| i128::from(l.1)).sum();
    (a + b > 0).then(|| (b - a) as f64 / (a + b) as f64)
}

fn wall(levels: &Levels, mid2: i128) -> Option<(i64, i64, f64)> {
    let &(p, q) = levels
        .iter()
        .max_by_key(|l| (l.1, std::cmp::Reverse(l.0)))?;
    let dist = ((i128::from(p) * 2 - mid2).abs() as f64) / mid2 as f64 * 10_000.0;
    Some((p, q, dist))
}

/// Features of a book given its best levels (best first).
pub fn compute(bids: &Levels, asks: &Levels) -> Features {
    let (Some(&(bb, bq)), Some(&(ba, aq))) = (bids.first(), asks.first()) else {
        return Features {
            mid: None,
            spread_e8: None,
            microprice: None,
            imbalance: [None; 3],
            bid_depth_bps: [0; 2],
            ask_depth_bps: [0; 2],
            bid_wall: None,
            ask_wall: None,
        };
    };
    // 2·mid in e8 keeps everything in integers.
    let mid2 = i128::from(bb) + i128::from(ba);
    let within = |levels: &Levels, bps: i128, bid: bool| -> i64 {
        // |2p − 2mid| · 10_000 <= bps · 2mid
        levels
            .iter()
            .filter(|(p, _)| {
                let d = (i128::from(*p) * 2 - mid2) * if bid { -1 } else { 1 };
                d * 10_000 <= bps * mid2
            })
            .map(|l| l.1)
            .sum()
    };
    let den = i128::from(bq) + i128::from(aq);
    let microprice = (den > 0).then(|| Dec {
        mantissa: (i128::from(bb) * i128::from(aq) + i128::from(ba) * i128::from(bq)) * 10_000
            / den,
        scale: 12,
    });
    Features {
        mid: Some(Dec {
            mantissa: mid2 * 5,
            scale: 9,
        }),
        spread_e8: Some(ba - bb),
        microprice,
        imbalance: [
            imbalance(bids, asks, 1),
            imbalance(bids, asks, 5),
            imbalance(bids, asks, 10),
        ],
        bid_depth_bps: [within(bids, 10, true), within(bids, 50, true)],
        ask_depth_bps: [within(asks, 10, false), within(asks, 50, false)],
        bid_wall: wall(bids, mid2),
        ask_wall: wall(asks, mid2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E8: i64 = 100_000_000;

    #[test]
    fn features_of_a_small_book() {
        // bid 100.00 x 3, 99.95 x 1, 99.00 x 10; ask 100.01 x 1, 100.50 x 2
        let bids = vec![
            (100 * E8, 3 * E8),
            (9995 * E8 / 100, E8),
            (99 * E8, 10 * E8),
        ];
        let asks = vec![(10001 * E8 / 100, E8), (10050 * E8 / 100, 2 * E8)];
        let f = compute(&bids, &asks);
        assert_eq!(
            f.mid,
            Some(Dec {
                mantissa: 100_005_000_000,
                scale: 9
            }),
            "100.005"
        );
        assert_eq!(f.spread_e8, Some(E8 / 100));
        // (100 * 1 + 100.01 * 3) / 4 = 100.0075
        assert_eq!(
            f.microprice,
            Some(Dec {
                mantissa: 100_007_500_000_000,
                scale: 12
            })
        );
        assert_eq!(f.imbalance[0], Some(0.5));
        assert_eq!(f.imbalance[1], Some((14.0 - 3.0) / 17.0));
        // 10 bps of 100.005 is ~0.1: bids 100.00 and 99.95 count, 99.00 not; ask 100.01 only.
        assert_eq!(f.bid_depth_bps[0], 4 * E8);
        assert_eq!(f.ask_depth_bps[0], E8);
        assert_eq!(f.ask_depth_bps[1], 3 * E8, "100.50 is within 50 bps");
        let (p, q, bps) = f.bid_wall.expect("wall");
        assert_eq!((p, q), (99 * E8, 10 * E8));
        assert!(
            (bps - 100.494_975).abs() < 1e-3,
            "(100.005 - 99) / 100.005 in bps: {bps}"
        );
        assert_eq!(compute(&vec![], &asks).mid, None);
    }
}
