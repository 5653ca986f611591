//! One task per symbol: the sync state machine fed by the depth stream, snapshots requested
//! through the venue's tiered queue (`snapshots`), and every consequence written: depth rows,
//! checkpoints, sync events, `book_top` samples. One handler per thing that can happen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use binance::units::parse_levels;
use binance::wire::DepthSnapshot;
use binance::Venue;
use book::sync::{DepthEvent, Gap, Outcome, Rules, Snapshot, SyncMachine};
use book::{Levels, Side};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lease::Fence;
use crate::metrics::Metrics;
use crate::rest_client::RestError;
use crate::row::{CheckpointKind, CheckpointRow, DepthRow, Row, SyncKind, SyncRow, TopRow};
use crate::snapshots::{SnapshotQueue, SnapshotResult};
use crate::standby::{OpenEpoch, Resume, Standby};
use crate::universe::Instrument;
use crate::writer::Writer;
use crate::{now_ms, FeedMsg};

/// Events kept while a snapshot is fetched (a few minutes of a busy symbol).
const MAX_BUFFER: usize = 5_000;
/// Pause before asking again after a failed snapshot.
const SNAPSHOT_RETRY: Duration = Duration::from_millis(500);

/// Epoch ids come from the collector's clock, so a book can start while the database is down:
/// milliseconds since 1970 shifted left 12 bits, plus a counter.
fn new_epoch() -> i64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    ((now_ms() as i64) << 12) | (COUNTER.fetch_add(1, Ordering::Relaxed) & 0xfff) as i64
}

/// Settings of the symbol tasks.
#[derive(Debug, Clone)]
pub struct SymbolConfig {
    pub checkpoint_every: Duration,
    /// A checkpoint also after this many depth rows since the last one (or
    /// [`ROWS_PER_CHECKPOINT_LEVEL`] per level of that checkpoint, if more), so `book_at` never
    /// replays more than that onto a checkpoint however busy the symbol is.
    pub checkpoint_rows: usize,
    pub top_every: Duration,
    pub top_levels: usize,
}

/// A row-count checkpoint waits for at least this many depth rows per level the last
/// checkpoint held. A deep book (a major's 10 000 levels) checkpointed every 5 000 rows stored
/// more in its checkpoints than in its updates (real recordings, `bench/REPORT.md` §7); at two
/// rows per level the checkpoints cost a fraction of the updates, and `book_at` replays at most
/// twice what it reads from the checkpoint anyway.
pub const ROWS_PER_CHECKPOINT_LEVEL: usize = 2;

/// What happened to a book since its last checkpoint: the next is due after
/// `checkpoint_every`, or after `checkpoint_rows` (at least [`ROWS_PER_CHECKPOINT_LEVEL`] per
/// level of the last checkpoint), whichever comes first.
#[derive(Debug)]
struct SinceCheckpoint {
    at: tokio::time::Instant,
    rows: usize,
    /// Levels (both sides) the last checkpoint held.
    levels: usize,
}

impl Default for SinceCheckpoint {
    fn default() -> Self {
        SinceCheckpoint {
            at: tokio::time::Instant::now(),
            rows: 0,
            levels: 0,
        }
    }
}

impl SinceCheckpoint {
    /// Just after a checkpoint of the book in `m` kept in `window`.
    fn after(m: &SyncMachine, window: Option<u32>, rows: usize) -> SinceCheckpoint {
        let (bids, asks) = m.book().depth();
        let n = window.map_or(usize::MAX, |n| n as usize);
        SinceCheckpoint {
            rows,
            levels: bids.min(n) + asks.min(n),
            ..SinceCheckpoint::default()
        }
    }

    fn rows_due(&self, floor: usize) -> bool {
        self.rows >= floor.max(ROWS_PER_CHECKPOINT_LEVEL * self.levels)
    }
}

/// A standby symbol task's part: the shared state, and the message that makes it live.
#[derive(Debug)]
pub struct Role {
    pub shared: Arc<Standby>,
    /// `None` once answered or abandoned.
    pub promote: Option<oneshot::Receiver<Promotion>>,
}

/// A standby symbol's shard was taken: write under `fence` from `resume` on.
#[derive(Debug)]
pub struct Promotion {
    pub fence: Fence,
    /// `None`: its book was not warm at the takeover, which closed its open epoch.
    pub resume: Option<Resume>,
}

/// A symbol's task.
#[derive(Debug)]
pub struct SymbolTask {
    pub inst: Instrument,
    pub cfg: SymbolConfig,
    pub writer: Writer,
    pub snapshots: SnapshotQueue,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// The depth window its tier asks for now (`Instrument::depth_levels` when it started).
    pub depth_levels: watch::Receiver<Option<u32>>,
    /// While it stands by for a shard another collector holds (`--standby`).
    pub standby: Option<Role>,
}

/// What a task knows between messages.
struct State {
    machine: SyncMachine,
    /// The epoch the book is in; `None` while it is not synced.
    epoch: Option<i64>,
    /// The book's update id when its epoch began, and when its current window did.
    epoch_from: u64,
    window_since: u64,
    /// The snapshot asked for and not answered yet.
    pending: Option<oneshot::Receiver<SnapshotResult>>,
    /// Not before this time may a snapshot be asked for again (after a failure).
    retry_at: Option<Instant>,
    /// A rate-limit delay is recorded once per run of them.
    rate_limited_noted: bool,
    since: SinceCheckpoint,
    /// The best levels per side that rows and checkpoints keep; `None`: every level.
    window: Option<u32>,
    /// A new window, taken at the next event with a checkpoint of its own (mid-epoch, so a
    /// stored book never mixes two windows).
    next_window: Option<Option<u32>>,
    /// After a takeover that did not continue the stored epoch: the newest stored event's id,
    /// which the next epoch must not repeat (see [`crate::standby::start_past`]).
    floor: Option<u64>,
}

impl State {
    fn retry_later(&mut self) {
        self.retry_at = Some(Instant::now() + SNAPSHOT_RETRY);
    }
}

impl SymbolTask {
    fn venue(&self) -> &'static str {
        self.inst.venue.as_str()
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<FeedMsg>) {
        let rules = match self.inst.venue {
            Venue::Spot => Rules::Spot,
            Venue::Usdm => Rules::Usdm,
        };
        let mut st = State {
            machine: SyncMachine::new(rules, MAX_BUFFER),
            epoch: None,
            epoch_from: 0,
            window_since: 0,
            pending: None,
            retry_at: None,
            rate_limited_noted: false,
            since: SinceCheckpoint::default(),
            window: *self.depth_levels.borrow_and_update(),
            next_window: None,
            floor: None,
        };
        let mut top_tick = tokio::time::interval(self.cfg.top_every);
        top_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.ask_for_snapshot(&mut st);
            let retry_due = st.retry_at.filter(|_| st.pending.is_none());
            let snapshot = async {
                match st.pending.as_mut() {
                    Some(p) => p.await.ok(),
                    None => std::future::pending().await,
                }
            };
            let retry = async {
                match retry_due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = retry => st.retry_at = None,
                res = snapshot => {
                    st.pending = None;
                    self.on_snapshot(&mut st, res).await;
                }
                _ = top_tick.tick() => self.on_tick(&mut st).await,
                Some(p) = promotion(&mut self.standby) => self.on_promote(&mut st, p).await,
                Ok(()) = self.depth_levels.changed() => {
                    let w = *self.depth_levels.borrow_and_update();
                    on_window(&mut st, w);
                }
                msg = rx.recv() => match msg {
                    // The connections are gone: shutdown.
                    None => break,
                    Some(FeedMsg::Disconnected(reason)) => self.on_disconnect(&st, reason).await,
                    Some(FeedMsg::Depth(ev, received_at)) => self.on_depth(&mut st, ev, received_at).await,
                },
            }
        }
        self.stop(&st).await;
    }

    /// Asks for a snapshot once something is buffered, none is under way and no retry waits.
    fn ask_for_snapshot(&self, st: &mut State) {
        if st.pending.is_none()
            && st.machine.wants_snapshot()
            && st.retry_at.is_none_or(|t| t <= Instant::now())
        {
            st.pending = Some(self.snapshots.request(self.inst.tier, &self.inst.symbol));
            st.retry_at = None;
        }
    }

    /// The snapshot queue answered (`None`: it stopped before answering).
    async fn on_snapshot(&self, st: &mut State, res: Option<SnapshotResult>) {
        let venue = self.venue();
        let symbol = &self.inst.symbol;
        match res {
            Some(Ok(snap)) => {
                st.rate_limited_noted = false;
                self.apply_snapshot(st, snap).await;
            }
            Some(Err(RestError::RateLimited {
                status,
                retry_after,
            })) => {
                if !st.rate_limited_noted {
                    let detail = format!("HTTP {status}, retry after {}s", retry_after.as_secs());
                    self.sync_event(
                        now_ms(),
                        None,
                        SyncKind::RateLimited,
                        None,
                        None,
                        Some(detail),
                    )
                    .await;
                    st.rate_limited_noted = true;
                }
                st.retry_later();
            }
            Some(Err(e)) => {
                tracing::warn!(venue, symbol = %symbol, error = %e, "snapshot request failed");
                st.retry_later();
            }
            None => st.retry_later(),
        }
    }

    async fn apply_snapshot(&self, st: &mut State, snap: DepthSnapshot) {
        let venue = self.venue();
        let symbol = &self.inst.symbol;
        let (Ok(bids), Ok(asks)) = (parse_levels(&snap.bids), parse_levels(&snap.asks)) else {
            self.metrics.parse_errors.with_label_values(&[venue]).inc();
            return st.retry_later();
        };
        let last = snap.last_update_id;
        let snapshot = Snapshot {
            last_update_id: last,
            bids,
            asks,
        };
        match st.machine.on_snapshot(snapshot) {
            Ok(Some(synced)) => self.begin(st, last, &synced.applied).await,
            Ok(None) => {
                tracing::debug!(venue, symbol = %symbol, last_update_id = last, "snapshot ahead of the stream; waiting for the event that bridges it");
            }
            Err(e) => {
                tracing::info!(venue, symbol = %symbol, error = %e, "snapshot not usable; fetching again");
                st.retry_later();
            }
        }
    }

    /// The book sample on every tick, and a periodic checkpoint when one is due.
    async fn on_tick(&self, st: &mut State) {
        let m = &st.machine;
        if let (true, Some(update_id), Some(t)) = (m.is_synced(), m.book_id(), m.last_time_ms()) {
            let (bids, asks) = m.book().top(self.cfg.top_levels);
            let features = Box::new(book::features::compute(&bids, &asks));
            let row = TopRow {
                time: t.max(now_ms()),
                instrument_id: self.inst.id,
                update_id,
                bids,
                asks,
                features,
            };
            self.writer.send(Row::Top(row)).await;
        }
        if st.since.at.elapsed() >= self.cfg.checkpoint_every {
            self.checkpoint(st).await;
        }
    }

    /// The stream may continue seamlessly after the reconnect; if not, the next event reveals
    /// the gap.
    async fn on_disconnect(&self, st: &State, reason: &'static str) {
        let detail = Some(reason.to_owned());
        self.sync_event(now_ms(), st.epoch, SyncKind::Disconnect, None, None, detail)
            .await;
    }

    async fn on_depth(&self, st: &mut State, ev: DepthEvent, received_at: u64) {
        let was_synced = st.machine.is_synced();
        let before = st
            .window
            .filter(|_| was_synced)
            .map(|n| st.machine.book().top(n as usize));
        match st.machine.on_event(ev.clone()) {
            Outcome::Synced { snapshot_id } => {
                self.begin(st, snapshot_id, std::slice::from_ref(&ev)).await
            }
            Outcome::Applied => {
                st.since.rows += match before {
                    Some(before) => self.write_window(&ev, received_at, before, st).await,
                    None => self.write_depth(&ev, received_at).await,
                };
                if let Some(w) = st.next_window.take() {
                    st.window = w;
                    st.window_since = ev.final_update_id;
                    self.checkpoint(st).await;
                } else if st.since.rows_due(self.cfg.checkpoint_rows) {
                    self.checkpoint(st).await;
                }
            }
            Outcome::Buffered | Outcome::Ignored => {}
            Outcome::Gap(g) => self.on_gap(st, g, false, was_synced).await,
            Outcome::Crossed(g) => self.on_gap(st, g, true, was_synced).await,
        }
    }

    /// The epoch ends at the last good event; the machine already buffers for a resync.
    async fn on_gap(&self, st: &mut State, g: Gap, crossed: bool, was_synced: bool) {
        let venue = self.venue();
        self.metrics.gaps.with_label_values(&[venue]).inc();
        self.metrics.resyncs.with_label_values(&[venue]).inc();
        tracing::warn!(venue, symbol = %self.inst.symbol, from = g.missing_from, to = g.missing_to, crossed, "gap; resyncing");
        let detail = crossed.then(|| "crossed book".to_owned());
        let range = (Some(g.missing_from), Some(g.missing_to));
        self.sync_event(
            g.last_good_time_ms,
            st.epoch,
            SyncKind::Gap,
            range.0,
            range.1,
            detail,
        )
        .await;
        self.sync_event(now_ms(), st.epoch, SyncKind::Resync, None, None, None)
            .await;
        st.epoch = None;
        if was_synced {
            self.set_synced(false);
        }
    }

    /// A book just synced: its epoch starts, unless it would repeat what a previous holder
    /// stored (then the book syncs again).
    async fn begin(&self, st: &mut State, snapshot_id: u64, applied: &[DepthEvent]) {
        let start =
            crate::standby::start_past(st.floor, st.machine.book_id(), snapshot_id, applied);
        let Some((snapshot_id, applied)) = start else {
            tracing::info!(venue = self.venue(), symbol = %self.inst.symbol, snapshot_id, "synced behind what the previous holder stored; syncing again");
            return st.machine.reset();
        };
        st.floor = None;
        if let Some(w) = st.next_window.take() {
            st.window = w;
        }
        let (epoch, rows) = self
            .start_epoch(&st.machine, st.window, snapshot_id, applied)
            .await;
        st.epoch = Some(epoch);
        st.epoch_from = st.machine.book_id().unwrap_or(snapshot_id);
        st.window_since = st.epoch_from;
        st.since = SinceCheckpoint::after(&st.machine, st.window, rows);
        self.set_synced(true);
    }

    /// Its shard was taken over: it continues the open epoch the database holds, writing what
    /// it kept past its resume points, if its book covers everything since; otherwise that
    /// epoch ends at its last stored update and the book, if synced, starts a new one at once.
    async fn on_promote(&mut self, st: &mut State, p: Promotion) {
        if st.epoch.is_some() {
            self.set_synced(false);
        }
        self.standby = None;
        let resume = p.resume.unwrap_or_default();
        let dropped = self.writer.dropped_depth().await;
        let go_on = resume.open.as_ref().filter(|o| continues(st, o, dropped));
        let how = if let Some(o) = go_on {
            let keep = |row: &mut Row| resume.keep_continuing(o, row);
            self.writer.go_live(p.fence, keep).await;
            st.epoch = Some(o.epoch);
            self.set_synced(true);
            "continued"
        } else {
            self.writer
                .go_live(p.fence, |row| resume.keep_feed(row))
                .await;
            if let Some(o) = &resume.open {
                let why = Some(crate::epochs::LEASE_TAKEN_OVER.to_owned());
                let (t, id) = (o.last_time, Some(o.last_update));
                self.sync_event(t, Some(o.epoch), SyncKind::Stopped, id, None, why)
                    .await;
            }
            st.epoch = None;
            st.floor = resume.last_depth;
            if let Some(id) = st.machine.book_id() {
                self.begin(st, id, &[]).await;
            }
            "restarted"
        };
        self.metrics
            .leases
            .promotions
            .with_label_values(&[how])
            .inc();
        tracing::info!(venue = self.venue(), symbol = %self.inst.symbol, how, "standby book promoted");
    }

    fn set_synced(&self, on: bool) {
        let venue = self.venue();
        if let Some(role) = &self.standby {
            role.shared.set_warm(self.inst.id, on);
            let g = self
                .metrics
                .leases
                .standby_books
                .with_label_values(&[venue]);
            return if on { g.inc() } else { g.dec() };
        }
        let g = self.metrics.books_synced.with_label_values(&[venue]);
        if on {
            g.inc()
        } else {
            g.dec()
        }
        self.metrics
            .book_synced
            .with_label_values(&[venue, &self.inst.symbol])
            .set(i64::from(on));
    }

    async fn sync_event(
        &self,
        time: u64,
        epoch: Option<i64>,
        kind: SyncKind,
        first_update_id: Option<u64>,
        last_update_id: Option<u64>,
        detail: Option<String>,
    ) {
        let row = SyncRow {
            time,
            instrument_id: self.inst.id,
            epoch,
            kind,
            first_update_id,
            last_update_id,
            detail,
        };
        self.writer.send(Row::Sync(row)).await;
    }

    /// Writes the event's level changes; returns how many rows that was.
    async fn write_depth(&self, ev: &DepthEvent, received_at: u64) -> usize {
        self.write_levels(ev, received_at, [&ev.bids, &ev.asks])
            .await
    }

    /// Writes what the event changed inside the window (`before`: the window's levels before
    /// it), levels pushed out or pulled in included; returns how many rows that was.
    async fn write_window(
        &self,
        ev: &DepthEvent,
        received_at: u64,
        before: (Levels, Levels),
        st: &State,
    ) -> usize {
        let n = st.window.map_or(usize::MAX, |n| n as usize);
        let (bids, asks) = st.machine.book().top(n);
        let bids = book::window::changes(&before.0, &bids, true);
        let asks = book::window::changes(&before.1, &asks, false);
        self.write_levels(ev, received_at, [&bids, &asks]).await
    }

    /// One row per level of `[bids, asks]`, with the event's times and ids.
    async fn write_levels(&self, ev: &DepthEvent, received_at: u64, sides: [&Levels; 2]) -> usize {
        let mut rows = 0;
        for (side, levels) in [Side::Bid, Side::Ask].into_iter().zip(sides) {
            for &(price, qty) in levels {
                let row = DepthRow {
                    time: ev.event_time_ms,
                    instrument_id: self.inst.id,
                    first_update_id: ev.first_update_id,
                    update_id: ev.final_update_id,
                    prev_update_id: ev.prev_final_update_id,
                    side,
                    price,
                    qty,
                    received_at,
                };
                self.writer.send(Row::Depth(row)).await;
            }
            rows += levels.len();
        }
        rows
    }

    /// The book (its `window` best levels per side, or all) as a checkpoint of `kind` in
    /// `epoch`, if the book has an id and a time.
    async fn write_checkpoint(
        &self,
        m: &SyncMachine,
        (epoch, window): (i64, Option<u32>),
        kind: CheckpointKind,
    ) {
        let (Some(update_id), Some(time)) = (m.book_id(), m.last_time_ms()) else {
            return;
        };
        let (bids, asks) = m.book().top(window.map_or(usize::MAX, |n| n as usize));
        let row = CheckpointRow {
            time,
            instrument_id: self.inst.id,
            epoch,
            update_id,
            kind,
            bids,
            asks,
            received_at: now_ms(),
            levels: window,
        };
        self.writer.send(Row::Checkpoint(row)).await;
    }

    /// Stores the current book as a periodic checkpoint (if it is synced) and restarts the
    /// count towards the next one.
    async fn checkpoint(&self, st: &mut State) {
        let Some(epoch) = st.epoch else {
            return;
        };
        if st.machine.book_id().is_none() || st.machine.last_time_ms().is_none() {
            return;
        }
        self.write_checkpoint(&st.machine, (epoch, st.window), CheckpointKind::Periodic)
            .await;
        st.since = SinceCheckpoint::after(&st.machine, st.window, 0);
    }

    /// Starts an epoch on a book just synced: its checkpoint is the book after the events that
    /// bridged the snapshot, at the last one's time (the snapshot itself matches no instant we
    /// can date: its id may fall inside an event, and events it contains may still be on their
    /// way). The bridging events are stored too (in a window, their changes inside the
    /// opening book's window). Returns the epoch and the rows written.
    async fn start_epoch(
        &self,
        m: &SyncMachine,
        window: Option<u32>,
        snapshot_id: u64,
        applied: &[DepthEvent],
    ) -> (i64, usize) {
        let e = new_epoch();
        let (Some(book_id), Some(time)) = (m.book_id(), m.last_time_ms()) else {
            return (e, 0);
        };
        self.write_checkpoint(m, (e, window), CheckpointKind::Snapshot)
            .await;
        let ids = (Some(snapshot_id), Some(book_id));
        self.sync_event(time, Some(e), SyncKind::Synced, ids.0, ids.1, None)
            .await;
        let n = window.map_or(usize::MAX, |n| n as usize);
        let (top_bids, top_asks) = m.book().top(n);
        let mut rows = 0;
        for ev in applied {
            let keep = |side: &[(i64, i64)], kept: &[(i64, i64)], bids| -> Levels {
                let inside = |p| book::window::inside(kept, n, p, bids);
                side.iter().copied().filter(|&(p, _)| inside(p)).collect()
            };
            let bids = keep(&ev.bids, &top_bids, true);
            let asks = keep(&ev.asks, &top_asks, false);
            rows += self.write_levels(ev, now_ms(), [&bids, &asks]).await;
        }
        tracing::info!(venue = self.venue(), symbol = %self.inst.symbol, last_update_id = snapshot_id, book_id, "book synced");
        (e, rows)
    }

    /// Ends the epoch: the book was exact up to the last applied event.
    async fn stop(&self, st: &State) {
        let m = &st.machine;
        if let (Some(e), Some(id), Some(t)) = (st.epoch, m.book_id(), m.last_time_ms()) {
            let detail = Some("shutdown".to_owned());
            self.sync_event(t, Some(e), SyncKind::Stopped, Some(id), None, detail)
                .await;
            self.set_synced(false);
        }
    }
}

/// The standby's promotion, once (never, for a task that is not standing by).
async fn promotion(role: &mut Option<Role>) -> Option<Promotion> {
    let rx = role.as_mut().and_then(|r| r.promote.as_mut());
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    let p = rx.await.ok();
    if let Some(r) = role.as_mut() {
        r.promote = None;
    }
    p
}

/// Can a standby book continue `open`? Its epoch began at or before the last stored event, it
/// has reached it, nothing of that event or since was let go for age (the event's levels a
/// batch left out are written from what was kept), and it has kept the same depth window since
/// before that event.
fn continues(st: &State, open: &OpenEpoch, dropped: u64) -> bool {
    let last = open.last_update;
    st.epoch.is_some()
        && st.next_window.is_none()
        && st.epoch_from <= last
        && st.machine.book_id().is_some_and(|b| b >= last)
        && dropped < last
        && st.window == open.window
        && (st.window.is_none() || st.window_since < last)
}

/// The tier's window changed: a book not synced takes it at its next sync, a synced one at its
/// next event, with a checkpoint.
fn on_window(st: &mut State, w: Option<u32>) {
    if st.epoch.is_none() {
        st.window = w;
        st.next_window = None;
    } else if w != st.window {
        st.next_window = Some(w);
    } else {
        st.next_window = None;
    }
}
