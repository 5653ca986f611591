//! One simulated venue (spot or USD-M): its symbols, the generator loop that turns market steps
//! into Binance frames, and the shared state the WebSocket, REST and control handlers read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use binance::streams::StreamKind;
use binance::units::{decimals_of, format_e8, SCALE};
use binance::wire::{AggTrade, BookTicker, DepthUpdate, MarkPrice};
use binance::Venue;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::book::{wire_levels, Book, Side};
use crate::faults::{Faults, FrameFault};
use crate::history::{Event, History};
use crate::market::{Activity, Change, Generator, Step, Top, Trade};
use crate::universe::SymbolSpec;
use crate::VenueConfig;

/// One message as sent: its stream, and its text on raw (`/ws`) and combined (`/stream`)
/// connections, serialized once for every connection.
#[derive(Debug)]
pub struct Frame {
    pub stream: String,
    pub kind: StreamKind,
    pub raw: String,
    pub combined: String,
}

impl Frame {
    pub fn new(stream: String, kind: StreamKind, raw: String) -> Frame {
        let combined = format!("{{\"stream\":\"{stream}\",\"data\":{raw}}}");
        Frame {
            stream,
            kind,
            raw,
            combined,
        }
    }

    /// The same frame with its text replaced (malformed and truncated faults).
    fn mangled(&self, fault: FrameFault) -> Frame {
        let cut = |s: &str| s[..s.len() / 2].to_owned();
        let (raw, combined) = match fault {
            FrameFault::Truncated => (cut(&self.raw), cut(&self.combined)),
            _ => (
                "{\"e\":\"depthUpdate\",\"E\":}".to_owned(),
                "{\"stream\":\"x\",\"data\":{,}".to_owned(),
            ),
        };
        Frame {
            stream: self.stream.clone(),
            kind: self.kind,
            raw,
            combined,
        }
    }
}

/// A symbol's live state.
#[derive(Debug)]
pub struct SymbolState {
    pub spec: SymbolSpec,
    pub inner: Mutex<SymbolInner>,
}

#[derive(Debug)]
pub struct SymbolInner {
    pub book: Book,
    pub last_id: u64,
    pub history: History,
    /// Generated mode only (replay has no generator).
    pub generator: Option<Generator>,
    /// A depth frame held back by a reorder fault.
    pub held: Option<Arc<Frame>>,
    /// The latest event's changes (each with its own id) and the id before it: a snapshot
    /// can stand inside that event.
    pub last_event: Option<(u64, Vec<crate::market::Change>)>,
    /// Replay: the event time of the latest recorded depth event (a snapshot's `E` is the
    /// recording's clock, not the wall clock).
    pub replay_time_ms: Option<u64>,
    /// REST depth snapshots served for this symbol (a flat-out replay waits for the first).
    pub snapshots_served: u64,
    /// When the generator last published this symbol (trade and ticker times follow it).
    pub last_publish_ms: u64,
    /// Changes generated since the last depth event, and the update id before the first:
    /// the next depth event carries them.
    pub pending: (u64, Vec<Change>),
    pub last_price: i64,
    pub volume_e8: i64,
    pub trade_count: u64,
    pub status: String,
    /// What ticker/24hr reports (the spec's, until `/_control/volume` changes it): the
    /// collector's ranking, and so its tiers, follow it.
    pub quote_volume_24h: i64,
}

/// Counters the control endpoint reports.
#[derive(Debug, Default)]
pub struct Stats {
    pub frames: AtomicU64,
    pub depth_events: AtomicU64,
    pub dropped: AtomicU64,
    pub rest_requests: AtomicU64,
    pub connections_opened: AtomicU64,
    /// Depth snapshots served (every other one inside an event, when configured).
    pub snapshots: AtomicU64,
    /// Connections cut because they fell `broadcast_capacity` frames behind: the frames they
    /// missed are the only ones the simulator loses without a fault.
    pub slow_consumers: AtomicU64,
}

/// Everything one venue's server shares.
#[derive(Debug)]
pub struct VenueState {
    pub venue: Venue,
    pub cfg: VenueConfig,
    pub symbols: Vec<Arc<SymbolState>>,
    pub by_name: HashMap<String, usize>,
    pub tx: broadcast::Sender<Arc<Frame>>,
    pub faults: Faults,
    pub conns: crate::conns::Registry,
    pub limiter: crate::limiter::Limiter,
    pub stats: Stats,
    pub shutdown: CancellationToken,
}

impl SymbolInner {
    /// The book at an update id strictly inside the latest event (after its changes up to the
    /// middle one), with that id; `None` when the event has a single id.
    pub fn book_inside_last_event(&self) -> Option<(u64, Book)> {
        let (prev, changes) = self.last_event.as_ref()?;
        let last = changes.last()?.id;
        let inside = changes.get(changes.len().checked_sub(1)? / 2)?.id;
        if inside >= last {
            return None;
        }
        let (at, mut book) = self.history.book_at(*prev).ok()?;
        if at != *prev {
            return None;
        }
        for c in changes.iter().take_while(|c| c.id <= inside) {
            book.set(c.side, c.price, c.qty);
        }
        Some((inside, book))
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl VenueState {
    pub fn new(
        venue: Venue,
        cfg: VenueConfig,
        seed: u64,
        specs: Vec<SymbolSpec>,
        shutdown: CancellationToken,
    ) -> VenueState {
        let (tx, _) = broadcast::channel(cfg.broadcast_capacity);
        let symbols: Vec<Arc<SymbolState>> = specs
            .into_iter()
            .map(|spec| {
                let (generator, book) = Generator::new(&spec, seed, cfg.levels);
                let start_id = 1_000_000 + (spec.symbol.len() as u64) * 1000;
                let history = History::new(
                    start_id,
                    &book,
                    cfg.truth_checkpoint_every,
                    cfg.truth_checkpoints,
                );
                let (last_price, quote_volume_24h) = (spec.start_mid_e8, spec.quote_volume_24h);
                Arc::new(SymbolState {
                    spec,
                    inner: Mutex::new(SymbolInner {
                        book,
                        last_id: start_id,
                        history,
                        generator: Some(generator),
                        held: None,
                        last_event: None,
                        replay_time_ms: None,
                        snapshots_served: 0,
                        last_publish_ms: 0,
                        pending: (start_id, Vec::new()),
                        last_price,
                        volume_e8: 0,
                        trade_count: 0,
                        status: "TRADING".to_owned(),
                        quote_volume_24h,
                    }),
                })
            })
            .collect();
        let by_name = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.spec.symbol.clone(), i))
            .collect();
        let limiter = crate::limiter::Limiter::new(cfg.weight_limit, cfg.weight_window, cfg.ban);
        VenueState {
            venue,
            cfg,
            symbols,
            by_name,
            tx,
            faults: Faults::default(),
            conns: crate::conns::Registry::default(),
            limiter,
            stats: Stats::default(),
            shutdown,
        }
    }

    pub fn symbol(&self, name: &str) -> Option<&Arc<SymbolState>> {
        self.by_name
            .get(&name.to_ascii_uppercase())
            .map(|i| &self.symbols[*i])
    }

    pub fn price_decimals(&self, spec: &SymbolSpec) -> u32 {
        // Spot formats every value with 8 decimals; USD-M with the tick's precision.
        match self.venue {
            Venue::Spot => SCALE,
            Venue::Usdm => decimals_of(spec.tick_e8),
        }
    }

    pub fn qty_decimals(&self, spec: &SymbolSpec) -> u32 {
        match self.venue {
            Venue::Spot => SCALE,
            Venue::Usdm => decimals_of(spec.step_e8),
        }
    }

    pub(crate) fn send_frame(&self, frame: Arc<Frame>) {
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        // No receivers is fine: nobody is connected.
        let _ = self.tx.send(frame);
    }

    /// Sends a depth frame through the armed faults.
    pub(crate) fn send_depth(&self, inner: &mut SymbolInner, symbol: &str, frame: Arc<Frame>) {
        self.stats.depth_events.fetch_add(1, Ordering::Relaxed);
        let fault = if self.faults.any_frame_faults() {
            self.faults.take_frame(symbol)
        } else {
            None
        };
        match fault {
            None => {
                self.send_frame(frame);
                if let Some(h) = inner.held.take() {
                    self.send_frame(h);
                }
            }
            Some(FrameFault::Drop) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(FrameFault::Duplicate) => {
                self.send_frame(frame.clone());
                self.send_frame(frame);
            }
            Some(FrameFault::Reorder) => {
                if let Some(h) = inner.held.replace(frame) {
                    self.send_frame(h);
                }
            }
            Some(f @ (FrameFault::Malformed | FrameFault::Truncated)) => {
                self.send_frame(Arc::new(frame.mangled(f)));
            }
        }
    }

    /// Publishes one slice of a symbol's activity: its trades and ticker changes at once, its
    /// level changes with the depth event that ends the interval (`ends_interval`).
    pub fn publish(
        &self,
        sym: &SymbolState,
        inner: &mut SymbolInner,
        step: Step,
        ends_interval: bool,
    ) {
        let e = now_ms();
        // Several trades or ticker changes of one slice happened through it, not at its end:
        // the k-th of n is stamped at its share of the slice, the last at `e` (never before the
        // previous slice, so times only grow).
        let slice_ms = self.slice().as_millis() as u64;
        let since = e - e.saturating_sub(slice_ms).max(inner.last_publish_ms).min(e);
        inner.last_publish_ms = e;
        let times = Spread { end: e, since };
        self.publish_trades(&sym.spec, inner, &step.trades, times);
        self.publish_tops(&sym.spec, &step.tops, times);
        inner.pending.1.extend(step.changes);
        if ends_interval {
            let (prev, changes) =
                std::mem::replace(&mut inner.pending, (inner.last_id, Vec::new()));
            self.publish_depth(&sym.spec, inner, changes, prev, e);
        }
    }

    /// One slice of a depth interval (see [`VenueConfig::publish_interval`]).
    fn slice(&self) -> Duration {
        self.cfg.depth_interval / self.slices()
    }

    /// Slices per depth interval: at least one, and none shorter than a millisecond.
    fn slices(&self) -> u32 {
        let interval_ms = self.cfg.depth_interval.as_millis().max(1);
        let per = interval_ms / self.cfg.publish_interval.as_millis().max(1);
        u32::try_from(per.clamp(1, interval_ms)).unwrap_or(1)
    }

    fn publish_trades(
        &self,
        spec: &SymbolSpec,
        inner: &mut SymbolInner,
        trades: &[Trade],
        times: Spread,
    ) {
        let lower = spec.symbol.to_ascii_lowercase();
        let (pd, qd) = (self.price_decimals(spec), self.qty_decimals(spec));
        for (k, t) in trades.iter().enumerate() {
            let e = times.at(k, trades.len());
            inner.last_price = t.price;
            inner.volume_e8 += t.qty;
            inner.trade_count += t.last_trade_id - t.first_trade_id + 1;
            let msg = AggTrade {
                event_type: "aggTrade".into(),
                event_time: e,
                symbol: spec.symbol.clone(),
                agg_trade_id: t.agg_id,
                price: format_e8(t.price, pd),
                qty: format_e8(t.qty, qd),
                first_trade_id: t.first_trade_id,
                last_trade_id: t.last_trade_id,
                trade_time: e.saturating_sub(1),
                buyer_is_maker: t.buyer_is_maker,
                ignore: (self.venue == Venue::Spot).then_some(true),
            };
            self.send_json(StreamKind::AggTrade, &lower, &msg);
        }
    }

    fn publish_tops(&self, spec: &SymbolSpec, tops: &[Top], times: Spread) {
        let lower = spec.symbol.to_ascii_lowercase();
        let (pd, qd) = (self.price_decimals(spec), self.qty_decimals(spec));
        let usdm = self.venue == Venue::Usdm;
        for (k, top) in tops.iter().enumerate() {
            let e = times.at(k, tops.len());
            let msg = BookTicker {
                event_type: usdm.then(|| "bookTicker".into()),
                update_id: top.id,
                event_time: usdm.then_some(e),
                transaction_time: usdm.then_some(e.saturating_sub(1)),
                symbol: spec.symbol.clone(),
                bid_price: format_e8(top.bid.0, pd),
                bid_qty: format_e8(top.bid.1, qd),
                ask_price: format_e8(top.ask.0, pd),
                ask_qty: format_e8(top.ask.1, qd),
            };
            self.send_json(StreamKind::BookTicker, &lower, &msg);
        }
    }

    /// One diff-depth event carrying the final quantity of every level changed in the step;
    /// recorded in the ground truth before it is sent.
    fn publish_depth(
        &self,
        spec: &SymbolSpec,
        inner: &mut SymbolInner,
        changes: Vec<Change>,
        prev_last_id: u64,
        e: u64,
    ) {
        let (Some(first), Some(last)) = (changes.first(), changes.last()) else {
            return;
        };
        let (first, last) = (first.id, last.id);
        let mut finals: HashMap<(Side, i64), i64> = HashMap::with_capacity(changes.len());
        for c in &changes {
            finals.insert((c.side, c.price), c.qty);
        }
        let mut levels: Vec<(Side, i64, i64)> =
            finals.into_iter().map(|((s, p), q)| (s, p, q)).collect();
        levels.sort_by_key(|(s, p, _)| (*s == Side::Ask, if *s == Side::Bid { -*p } else { *p }));
        let side = |want: Side| -> Vec<(i64, i64)> {
            levels
                .iter()
                .filter(|l| l.0 == want)
                .map(|l| (l.1, l.2))
                .collect()
        };
        let (pd, qd) = (self.price_decimals(spec), self.qty_decimals(spec));
        let usdm = self.venue == Venue::Usdm;
        let msg = DepthUpdate {
            event_type: "depthUpdate".into(),
            event_time: e,
            transaction_time: usdm.then_some(e.saturating_sub(1)),
            symbol: spec.symbol.clone(),
            first_update_id: first,
            final_update_id: last,
            prev_final_update_id: usdm.then_some(prev_last_id),
            bids: wire_levels(&side(Side::Bid), pd, qd),
            asks: wire_levels(&side(Side::Ask), pd, qd),
        };
        inner.history.push(
            Event {
                first,
                last,
                levels,
            },
            &inner.book,
        );
        inner.last_event = Some((prev_last_id, changes));
        if let Ok(raw) = sonic_rs::to_string(&msg) {
            let lower = spec.symbol.to_ascii_lowercase();
            let kind = StreamKind::Depth100ms;
            let frame = Arc::new(Frame::new(kind.name(&lower), kind, raw));
            self.send_depth(inner, &spec.symbol, frame);
        }
    }

    fn send_json<T: serde::Serialize>(&self, kind: StreamKind, lower: &str, msg: &T) {
        if let Ok(raw) = sonic_rs::to_string(msg) {
            self.send_frame(Arc::new(Frame::new(kind.name(lower), kind, raw)));
        }
    }

    /// USD-M mark price for every symbol (once per second).
    pub fn publish_mark_prices(&self) {
        let e = now_ms();
        // Funding every 8 h at 00:00, 08:00, 16:00 UTC.
        let eight_h = 8 * 3600 * 1000;
        let next_funding = (e / eight_h + 1) * eight_h;
        for sym in &self.symbols {
            let Ok(inner) = sym.inner.lock() else {
                continue;
            };
            let (Some((b, _)), Some((a, _))) = (inner.book.best_bid(), inner.book.best_ask())
            else {
                continue;
            };
            drop(inner);
            let spec = &sym.spec;
            let mid = (a + b) / 2;
            let pd = decimals_of(spec.tick_e8).max(2) + 2;
            let msg = MarkPrice {
                event_type: "markPriceUpdate".into(),
                event_time: e,
                symbol: spec.symbol.clone(),
                mark_price: format_e8(mid, pd.min(SCALE)),
                index_price: format_e8(mid - spec.tick_e8 / 2, SCALE),
                estimated_settle_price: format_e8(mid, SCALE),
                funding_rate: "0.00010000".into(),
                next_funding_time: next_funding,
            };
            self.send_json(
                StreamKind::MarkPrice1s,
                &spec.symbol.to_ascii_lowercase(),
                &msg,
            );
        }
    }

    /// The generator loop: every slice of a depth interval, one slice of activity per symbol;
    /// every interval's last slice also sends its depth events.
    pub async fn run_generator(self: Arc<Self>) {
        let act = Activity {
            changes_per_event: self.cfg.changes_per_event,
            multiplier: self.cfg.rate_multiplier,
            levels: self.cfg.levels,
            max_id_step: if self.venue == Venue::Usdm { 3 } else { 1 },
        };
        let slices = self.slices();
        let mut tick = tokio::time::interval(self.slice());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let per_second = (Duration::from_secs(1).as_millis()
            / self.cfg.depth_interval.as_millis().max(1)) as u64;
        let (mut n, mut slice): (u64, u32) = (0, 0);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for sym in &self.symbols {
                self.generate_slice(sym, &act, slice, slices);
            }
            slice = (slice + 1) % slices;
            if slice != 0 {
                continue;
            }
            n += 1;
            if self.venue == Venue::Usdm && n.is_multiple_of(per_second.max(1)) {
                self.publish_mark_prices();
            }
        }
    }

    /// Slice `slice` of `slices` of one symbol's depth interval.
    fn generate_slice(&self, sym: &SymbolState, act: &Activity, slice: u32, slices: u32) {
        let Ok(mut guard) = sym.inner.lock() else {
            return;
        };
        let inner = &mut *guard;
        // A symbol that stops trading still sends the depth event of what it did before.
        let step = match inner.generator.as_mut() {
            Some(g) if inner.status == "TRADING" => {
                if slice == 0 {
                    g.begin_interval();
                }
                g.advance(
                    &mut inner.book,
                    &mut inner.last_id,
                    act,
                    1.0 / f64::from(slices),
                )
            }
            _ => Step::default(),
        };
        self.publish(sym, inner, step, slice + 1 == slices);
    }
}

/// Event times spread over a step: the k-th of n at its share of the time `since` before `end`.
#[derive(Debug, Clone, Copy)]
struct Spread {
    end: u64,
    since: u64,
}

impl Spread {
    fn at(self, k: usize, n: usize) -> u64 {
        self.end - (n - 1 - k) as u64 * self.since / n as u64
    }
}
