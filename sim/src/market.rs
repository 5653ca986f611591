//! The market generator: one deterministic random process per symbol that changes its book the
//! way a real one changes — most activity at the top, trades consuming the best levels, orders
//! joining and leaving, a drifting mid, bursts — and reports every change with its update id.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::book::{Book, Side};
use crate::universe::SymbolSpec;

/// One level change, as one exchange update id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub id: u64,
    pub side: Side,
    pub price: i64,
    pub qty: i64,
}

/// One aggregated trade (several fills at one price by one taker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trade {
    pub agg_id: u64,
    pub first_trade_id: u64,
    pub last_trade_id: u64,
    pub price: i64,
    pub qty: i64,
    pub buyer_is_maker: bool,
}

/// Best bid and ask after the change with update id `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Top {
    pub id: u64,
    pub bid: (i64, i64),
    pub ask: (i64, i64),
}

/// What one generator step (one depth interval) produced.
#[derive(Debug, Default)]
pub struct Step {
    pub changes: Vec<Change>,
    pub trades: Vec<Trade>,
    pub tops: Vec<Top>,
}

/// Knobs of the process, shared by every symbol of a venue.
#[derive(Debug, Clone, Copy)]
pub struct Activity {
    /// Mean level changes per depth interval for the busiest symbol.
    pub changes_per_event: f64,
    /// Multiplies every rate (benchmarks drive many times Binance's rates).
    pub multiplier: f64,
    /// Levels per side the book hovers around.
    pub levels: usize,
    /// Largest gap between consecutive update ids (1 = contiguous, as on spot; USD-M ids jump).
    pub max_id_step: u64,
}

/// The random process of one symbol.
#[derive(Debug)]
pub struct Generator {
    rng: ChaCha8Rng,
    tick: i64,
    step: i64,
    activity: f64,
    burst_left: u32,
    drift: f64,
    next_agg_id: u64,
    next_trade_id: u64,
    /// Largest gap between consecutive update ids (from `Activity`).
    id_step: u64,
}

impl Generator {
    /// A generator and the symbol's starting book; same seed and spec, same market.
    pub fn new(spec: &SymbolSpec, seed: u64, levels: usize) -> (Generator, Book) {
        let mut h: u64 = seed ^ 0x9E37_79B9_7F4A_7C15;
        for b in spec.symbol.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
        let mut g = Generator {
            rng: ChaCha8Rng::seed_from_u64(h),
            tick: spec.tick_e8,
            step: spec.step_e8,
            activity: spec.activity,
            burst_left: 0,
            drift: 0.0,
            next_agg_id: 1_000_000,
            next_trade_id: 5_000_000,
            id_step: 1,
        };
        let mut book = Book::default();
        let half = spec.start_mid_e8 / spec.tick_e8;
        let (mut bid, mut ask) = (half - 1, half + 1);
        for _ in 0..levels {
            let q = g.qty();
            book.bids.insert(bid * g.tick, q);
            let q = g.qty();
            book.asks.insert(ask * g.tick, q);
            bid -= 1 + g.gap();
            ask += 1 + g.gap();
        }
        (g, book)
    }

    fn gap(&mut self) -> i64 {
        // Mostly adjacent ticks, sometimes holes: deep books are not contiguous.
        if self.rng.gen_bool(0.7) {
            0
        } else {
            self.rng.gen_range(1..4)
        }
    }

    /// Order sizes are heavy-tailed: many small, a few walls.
    fn qty(&mut self) -> i64 {
        let lots = (self.rng.gen_range(0.0f64..9.0)).exp().ceil() as i64;
        lots.max(1) * self.step
    }

    /// Geometric distance from the top: most changes happen within a few levels.
    fn depth_index(&mut self, len: usize) -> usize {
        let mut k = 0;
        while k + 1 < len && self.rng.gen_bool(0.75) {
            k += 1;
            if k > 40 {
                return self.rng.gen_range(0..len);
            }
        }
        k
    }

    /// Advances one depth interval, applying every change to `book` and numbering it after
    /// `*last_id`.
    pub fn step(&mut self, book: &mut Book, last_id: &mut u64, act: &Activity) -> Step {
        self.begin_interval();
        self.advance(book, last_id, act, 1.0)
    }

    /// Starts a depth interval: bursts and the drift move once per interval, whatever the
    /// number of slices it is generated in.
    pub fn begin_interval(&mut self) {
        if self.burst_left > 0 {
            self.burst_left -= 1;
        } else if self.rng.gen_bool(0.002) {
            self.burst_left = self.rng.gen_range(10..60);
        }
        self.drift = (self.drift * 0.98 + self.rng.gen_range(-0.05..0.05)).clamp(-0.4, 0.4);
    }

    /// Generates `share` (0 < share ≤ 1) of the current depth interval's activity.
    pub fn advance(
        &mut self,
        book: &mut Book,
        last_id: &mut u64,
        act: &Activity,
        share: f64,
    ) -> Step {
        let mut out = Step::default();
        self.id_step = act.max_id_step;
        let burst = if self.burst_left > 0 { 4.0 } else { 1.0 };
        let mean = act.changes_per_event * act.multiplier * self.activity * burst * share;
        // A spread of outcomes around the mean, including quiet intervals.
        let n = if mean < 1.0 {
            usize::from(self.rng.gen_bool(mean.max(0.0)))
        } else {
            self.rng.gen_range(0..=(2.0 * mean).round() as usize)
        };
        for _ in 0..n {
            self.one_change(book, last_id, act, &mut out);
        }
        out
    }

    fn next_id(&mut self, last_id: &mut u64) -> u64 {
        *last_id += if self.id_step > 1 {
            self.rng.gen_range(1..=self.id_step)
        } else {
            1
        };
        *last_id
    }

    fn set(
        &mut self,
        book: &mut Book,
        side: Side,
        price: i64,
        qty: i64,
        last_id: &mut u64,
        out: &mut Step,
    ) {
        let before = (book.best_bid(), book.best_ask());
        book.set(side, price, qty);
        let id = self.next_id(last_id);
        out.changes.push(Change {
            id,
            side,
            price,
            qty,
        });
        let after = (book.best_bid(), book.best_ask());
        if before != after {
            if let (Some(bid), Some(ask)) = after {
                out.tops.push(Top { id, bid, ask });
            }
        }
    }

    /// One random change: a trade (15 %), a resized level (35 %), a new order near the top
    /// (22 %), a cancelled level (20 %), or the far book kept at its size (8 %).
    fn one_change(&mut self, book: &mut Book, last_id: &mut u64, act: &Activity, out: &mut Step) {
        let side = if self.rng.gen_bool(0.5) {
            Side::Bid
        } else {
            Side::Ask
        };
        let roll: f64 = self.rng.gen();
        let (Some((best_bid, _)), Some((best_ask, _))) = (book.best_bid(), book.best_ask()) else {
            return;
        };
        let mut c = Landing { book, last_id, out };
        if roll < 0.15 {
            self.take(&mut c, best_bid, best_ask);
        } else if roll < 0.50 {
            let len = c.book.side(side).len();
            let k = self.depth_index(len);
            if let Some(p) = c.book.nth_from_top(side, k) {
                let q = self.qty();
                self.apply(&mut c, side, p, q);
            }
        } else if roll < 0.72 {
            self.place_near_top(&mut c, side, best_bid, best_ask);
        } else if roll < 0.92 {
            let len = c.book.side(side).len();
            if len > act.levels / 2 + 2 {
                let k = self.depth_index(len);
                if let Some(p) = c.book.nth_from_top(side, k) {
                    self.apply(&mut c, side, p, 0);
                }
            }
        } else {
            self.keep_far_book(&mut c, side, act.levels);
        }
    }

    fn apply(&mut self, c: &mut Landing<'_>, side: Side, price: i64, qty: i64) {
        self.set(c.book, side, price, qty, c.last_id, c.out);
    }

    /// A taker: buyers lift asks more often when the drift is up.
    fn take(&mut self, c: &mut Landing<'_>, best_bid: i64, best_ask: i64) {
        let buy = self.rng.gen_bool((0.5 + self.drift).clamp(0.05, 0.95));
        let (maker_side, price) = if buy {
            (Side::Ask, best_ask)
        } else {
            (Side::Bid, best_bid)
        };
        let Some(&level_qty) = c.book.side(maker_side).get(&price) else {
            return;
        };
        let take = if self.rng.gen_bool(0.3) {
            level_qty
        } else {
            let lots = level_qty / self.step;
            self.rng.gen_range(1..=lots.max(1)) * self.step
        }
        .min(level_qty);
        let fills = self.rng.gen_range(1..=3u64);
        c.out.trades.push(Trade {
            agg_id: self.next_agg_id,
            first_trade_id: self.next_trade_id,
            last_trade_id: self.next_trade_id + fills - 1,
            price,
            qty: take,
            buyer_is_maker: !buy,
        });
        self.next_agg_id += 1;
        self.next_trade_id += fills;
        self.apply(c, maker_side, price, level_qty - take);
    }

    /// A new order near the top, sometimes inside the spread.
    fn place_near_top(&mut self, c: &mut Landing<'_>, side: Side, best_bid: i64, best_ask: i64) {
        let spread_ticks = (best_ask - best_bid) / self.tick;
        let d = self.depth_index(50) as i64 - i64::from(spread_ticks > 1 && self.rng.gen_bool(0.3));
        let price = match side {
            Side::Bid => (best_bid - d * self.tick).min(best_ask - self.tick),
            Side::Ask => (best_ask + d * self.tick).max(best_bid + self.tick),
        };
        if price > 0 {
            let q = self.qty();
            self.apply(c, side, price, q);
        }
    }

    /// The far book: keep its size around the target.
    fn keep_far_book(&mut self, c: &mut Landing<'_>, side: Side, levels: usize) {
        let len = c.book.side(side).len();
        if len < levels {
            let price = match side {
                Side::Bid => c
                    .book
                    .bids
                    .keys()
                    .next()
                    .map(|w| w - (1 + self.gap()) * self.tick),
                Side::Ask => c
                    .book
                    .asks
                    .keys()
                    .next_back()
                    .map(|w| w + (1 + self.gap()) * self.tick),
            };
            if let Some(p) = price.filter(|p| *p > 0) {
                let q = self.qty();
                self.apply(c, side, p, q);
            }
            return;
        }
        let k = self.rng.gen_range(0..len);
        let price = c.book.side(side).keys().nth(k).copied();
        if let Some(p) = price {
            let q = if self.rng.gen_bool(0.5) {
                0
            } else {
                self.qty()
            };
            self.apply(c, side, p, q);
        }
    }
}

/// Where one change lands: the book, the id counter, and the step's output.
struct Landing<'a> {
    book: &'a mut Book,
    last_id: &'a mut u64,
    out: &'a mut Step,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::universe::generate;

    fn act() -> Activity {
        Activity {
            changes_per_event: 20.0,
            multiplier: 1.0,
            levels: 500,
            max_id_step: 1,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_market() {
        let spec = &generate(1)[0];
        let run = |seed| {
            let (mut g, mut book) = Generator::new(spec, seed, 500);
            let mut id = 100;
            let mut all = Vec::new();
            for _ in 0..200 {
                all.push(g.step(&mut book, &mut id, &act()).changes);
            }
            (all, book)
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7).1, run(8).1);
    }

    #[test]
    fn the_book_stays_valid_and_ids_contiguous() {
        let spec = &generate(3)[2];
        let (mut g, mut book) = Generator::new(spec, 1, 500);
        let mut id = 0;
        let mut last_seen = 0;
        for _ in 0..3000 {
            let s = g.step(&mut book, &mut id, &act());
            for c in &s.changes {
                assert_eq!(c.id, last_seen + 1, "spot ids advance by one");
                last_seen = c.id;
                assert_eq!(c.price % spec.tick_e8, 0, "prices on ticks");
                assert_eq!(c.qty % spec.step_e8, 0, "quantities on steps");
            }
            let (b, a) = (book.best_bid().expect("bid"), book.best_ask().expect("ask"));
            assert!(b.0 < a.0, "never crossed");
            for t in &s.trades {
                assert!(t.qty > 0 && t.last_trade_id >= t.first_trade_id);
            }
        }
        assert!(
            book.bids.len() > 200 && book.asks.len() > 200,
            "depth is kept"
        );
    }
}
