//! One task per symbol: the sync state machine fed by the depth stream, snapshots requested
//! through the venue's tiered queue, and every consequence written: depth rows, checkpoints,
//! sync events, `book_top` samples.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use binance::units::parse_levels;
use binance::Venue;
use book::sync::{DepthEvent, Outcome, Rules, Snapshot, SyncMachine};
use book::Side;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::rest::{Rest, RestError};
use crate::universe::{Instrument, Tier};
use crate::writer::{Row, Writer};
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

type SnapshotReply = oneshot::Sender<Result<binance::wire::DepthSnapshot, RestError>>;

struct Request {
    tier: Tier,
    seq: u64,
    symbol: String,
    reply: SnapshotReply,
}

impl PartialEq for Request {
    fn eq(&self, o: &Self) -> bool {
        (self.tier, self.seq) == (o.tier, o.seq)
    }
}
impl Eq for Request {}
impl PartialOrd for Request {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Request {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Max-heap: the most important tier, then the oldest request, first.
        Reverse((self.tier, self.seq)).cmp(&Reverse((o.tier, o.seq)))
    }
}

/// Snapshot requests of a venue, served one at a time by priority of tier.
#[derive(Debug, Clone)]
pub struct SnapshotQueue {
    tx: mpsc::UnboundedSender<(Tier, String, SnapshotReply)>,
}

impl SnapshotQueue {
    /// `limit_for(tier)`: how many levels to ask for.
    pub fn start(
        rest: Arc<Rest>,
        limit_for: fn(Venue, Tier) -> u32,
        shutdown: CancellationToken,
    ) -> SnapshotQueue {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Tier, String, SnapshotReply)>();
        tokio::spawn(async move {
            let mut heap = BinaryHeap::new();
            let mut seq = 0u64;
            loop {
                if heap.is_empty() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = rx.recv() => match r {
                            Some((tier, symbol, reply)) => { heap.push(Request { tier, seq, symbol, reply }); seq += 1; }
                            None => return,
                        }
                    }
                }
                while let Ok((tier, symbol, reply)) = rx.try_recv() {
                    heap.push(Request {
                        tier,
                        seq,
                        symbol,
                        reply,
                    });
                    seq += 1;
                }
                let Some(req) = heap.pop() else { continue };
                if req.reply.is_closed() {
                    continue;
                }
                let res = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = rest.depth(&req.symbol, limit_for(rest.venue, req.tier)) => r,
                };
                let _ = req.reply.send(res);
            }
        });
        SnapshotQueue { tx }
    }

    fn request(
        &self,
        tier: Tier,
        symbol: &str,
    ) -> oneshot::Receiver<Result<binance::wire::DepthSnapshot, RestError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send((tier, symbol.to_owned(), tx));
        rx
    }
}

/// Settings of the symbol tasks.
#[derive(Debug, Clone)]
pub struct SymbolConfig {
    pub checkpoint_every: Duration,
    /// A checkpoint also after this many depth rows since the last one, so `book_at` never
    /// replays more than that onto a checkpoint however busy the symbol is.
    pub checkpoint_rows: usize,
    pub top_every: Duration,
    pub top_levels: usize,
}

/// What happened to a book since its last checkpoint: the next is due after
/// `checkpoint_every` or `checkpoint_rows`, whichever comes first.
#[derive(Debug)]
struct SinceCheckpoint {
    at: tokio::time::Instant,
    rows: usize,
}

impl Default for SinceCheckpoint {
    fn default() -> Self {
        SinceCheckpoint {
            at: tokio::time::Instant::now(),
            rows: 0,
        }
    }
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
}

impl SymbolTask {
    fn venue(&self) -> &'static str {
        self.inst.venue.as_str()
    }

    async fn sync_event(
        &self,
        time: u64,
        epoch: Option<i64>,
        kind: &'static str,
        first: Option<u64>,
        last: Option<u64>,
        detail: Option<String>,
    ) {
        self.writer
            .send(Row::Sync {
                time,
                iid: self.inst.id,
                epoch,
                kind,
                first,
                last,
                detail,
            })
            .await;
    }

    /// Writes the event's level changes; returns how many rows that was.
    async fn write_depth(&self, ev: &DepthEvent, recv: u64) -> usize {
        for (side, levels) in [(Side::Bid, &ev.bids), (Side::Ask, &ev.asks)] {
            for &(price, qty) in levels.iter() {
                self.writer
                    .send(Row::Depth {
                        time: ev.event_time_ms,
                        iid: self.inst.id,
                        first: ev.first_update_id,
                        last: ev.final_update_id,
                        prev: ev.prev_final_update_id,
                        side,
                        price,
                        qty,
                        recv,
                    })
                    .await;
            }
        }
        ev.bids.len() + ev.asks.len()
    }

    /// Stores the current book as a periodic checkpoint (if it is synced) and restarts the
    /// count towards the next one.
    async fn checkpoint(&self, m: &SyncMachine, epoch: Option<i64>, since: &mut SinceCheckpoint) {
        let (Some(epoch), Some(update_id), Some(time)) = (epoch, m.book_id(), m.last_time_ms())
        else {
            return;
        };
        let (bids, asks) = m.book().top(usize::MAX);
        self.writer
            .send(Row::Checkpoint {
                time,
                iid: self.inst.id,
                epoch,
                update_id,
                periodic: true,
                bids,
                asks,
                recv: now_ms(),
            })
            .await;
        *since = SinceCheckpoint::default();
    }

    /// Starts an epoch on a book just synced: its checkpoint is the book after the events that
    /// bridged the snapshot, at the last one's time (the snapshot itself matches no instant we
    /// can date: its id may fall inside an event, and events it contains may still be on their
    /// way). The bridging events are stored too. Returns the epoch and the rows written.
    async fn start_epoch(
        &self,
        m: &SyncMachine,
        snapshot_id: u64,
        applied: &[DepthEvent],
    ) -> (i64, usize) {
        let e = new_epoch();
        let (Some(book_id), Some(time)) = (m.book_id(), m.last_time_ms()) else {
            return (e, 0);
        };
        let (bids, asks) = m.book().top(usize::MAX);
        self.writer
            .send(Row::Checkpoint {
                time,
                iid: self.inst.id,
                epoch: e,
                update_id: book_id,
                periodic: false,
                bids,
                asks,
                recv: now_ms(),
            })
            .await;
        self.sync_event(
            time,
            Some(e),
            "synced",
            Some(snapshot_id),
            Some(book_id),
            None,
        )
        .await;
        let mut rows = 0;
        for ev in applied {
            rows += self.write_depth(ev, now_ms()).await;
        }
        tracing::info!(venue = self.venue(), symbol = %self.inst.symbol, last_update_id = snapshot_id, book_id, "book synced");
        (e, rows)
    }

    /// Ends the epoch: the book was exact up to the last applied event.
    async fn stop(&self, m: &SyncMachine, epoch: Option<i64>, set_synced: &impl Fn(bool)) {
        if let (Some(e), Some(id), Some(t)) = (epoch, m.book_id(), m.last_time_ms()) {
            self.sync_event(
                t,
                Some(e),
                "stopped",
                Some(id),
                None,
                Some("shutdown".into()),
            )
            .await;
            set_synced(false);
        }
    }

    pub async fn run(self, mut rx: mpsc::Receiver<FeedMsg>) {
        let rules = match self.inst.venue {
            Venue::Spot => Rules::Spot,
            Venue::Usdm => Rules::Usdm,
        };
        let sym = self.inst.symbol.clone();
        let venue = self.venue();
        let mut m = SyncMachine::new(rules, MAX_BUFFER);
        let mut epoch: Option<i64> = None;
        let mut pending: Option<
            oneshot::Receiver<Result<binance::wire::DepthSnapshot, RestError>>,
        > = None;
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut rate_limited_noted = false;
        let mut since = SinceCheckpoint::default();
        let mut top_tick = tokio::time::interval(self.cfg.top_every);
        top_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let set_synced = |on: bool| {
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
        };
        loop {
            // Ask for a snapshot once something is buffered and none is under way.
            if pending.is_none()
                && m.wants_snapshot()
                && retry_at.is_none_or(|t| t <= tokio::time::Instant::now())
            {
                pending = Some(self.snapshots.request(self.inst.tier, &sym));
                retry_at = None;
            }
            let retry_due = retry_at.filter(|_| pending.is_none());
            let snapshot = async {
                match pending.as_mut() {
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
                _ = self.shutdown.cancelled() => {
                    self.stop(&m, epoch, &set_synced).await;
                    return;
                }
                _ = retry => { retry_at = None; }
                res = snapshot => {
                    pending = None;
                    match res {
                        Some(Ok(snap)) => {
                            rate_limited_noted = false;
                            let (Some(bids), Some(asks)) = (parse_levels(&snap.bids).ok(), parse_levels(&snap.asks).ok()) else {
                                self.metrics.parse_errors.with_label_values(&[venue]).inc();
                                retry_at = Some(tokio::time::Instant::now() + SNAPSHOT_RETRY);
                                continue;
                            };
                            let last = snap.last_update_id;
                            match m.on_snapshot(Snapshot { last_update_id: last, bids, asks }) {
                                Ok(Some(synced)) => {
                                    let (e, rows) = self.start_epoch(&m, last, &synced.applied).await;
                                    epoch = Some(e);
                                    since = SinceCheckpoint { rows, ..SinceCheckpoint::default() };
                                    set_synced(true);
                                }
                                Ok(None) => {
                                    tracing::debug!(venue, symbol = %sym, last_update_id = last, "snapshot ahead of the stream; waiting for the event that bridges it");
                                }
                                Err(e) => {
                                    tracing::info!(venue, symbol = %sym, error = %e, "snapshot not usable; fetching again");
                                    retry_at = Some(tokio::time::Instant::now() + SNAPSHOT_RETRY);
                                }
                            }
                        }
                        Some(Err(RestError::RateLimited { status, retry_after })) => {
                            if !rate_limited_noted {
                                self.sync_event(now_ms(), None, "rate_limited", None, None, Some(format!("HTTP {status}, retry after {}s", retry_after.as_secs()))).await;
                                rate_limited_noted = true;
                            }
                            retry_at = Some(tokio::time::Instant::now() + SNAPSHOT_RETRY);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(venue, symbol = %sym, error = %e, "snapshot request failed");
                            retry_at = Some(tokio::time::Instant::now() + SNAPSHOT_RETRY);
                        }
                        None => retry_at = Some(tokio::time::Instant::now() + SNAPSHOT_RETRY),
                    }
                }
                _ = top_tick.tick() => {
                    if let (true, Some(id), Some(t)) = (m.is_synced(), m.book_id(), m.last_time_ms()) {
                        let (bids, asks) = m.book().top(self.cfg.top_levels);
                        let f = book::features::compute(&bids, &asks);
                        self.writer.send(Row::Top { time: t.max(now_ms()), iid: self.inst.id, update_id: id, bids, asks, f: Box::new(f) }).await;
                    }
                    if since.at.elapsed() >= self.cfg.checkpoint_every {
                        self.checkpoint(&m, epoch, &mut since).await;
                    }
                }
                msg = rx.recv() => match msg {
                    // The connections are gone: shutdown.
                    None => {
                        self.stop(&m, epoch, &set_synced).await;
                        return;
                    }
                    Some(FeedMsg::Disconnected(reason)) => {
                        // The stream may continue seamlessly after the reconnect; if not, the
                        // next event reveals the gap.
                        self.sync_event(now_ms(), epoch, "disconnect", None, None, Some(reason.to_owned())).await;
                    }
                    Some(FeedMsg::Depth(ev, recv)) => {
                        let was_synced = m.is_synced();
                        match m.on_event(ev.clone()) {
                            Outcome::Synced { snapshot_id } => {
                                let (e, rows) = self.start_epoch(&m, snapshot_id, std::slice::from_ref(&ev)).await;
                                epoch = Some(e);
                                since = SinceCheckpoint { rows, ..SinceCheckpoint::default() };
                                set_synced(true);
                            }
                            Outcome::Applied => {
                                since.rows += self.write_depth(&ev, recv).await;
                                if since.rows >= self.cfg.checkpoint_rows {
                                    self.checkpoint(&m, epoch, &mut since).await;
                                }
                            }
                            Outcome::Buffered | Outcome::Ignored => {}
                            outcome @ (Outcome::Gap(_) | Outcome::Crossed(_)) => {
                                let (g, crossed) = match outcome {
                                    Outcome::Crossed(g) => (g, true),
                                    Outcome::Gap(g) => (g, false),
                                    _ => continue,
                                };
                                self.metrics.gaps.with_label_values(&[venue]).inc();
                                self.metrics.resyncs.with_label_values(&[venue]).inc();
                                tracing::warn!(venue, symbol = %sym, from = g.missing_from, to = g.missing_to, crossed, "gap; resyncing");
                                self.sync_event(g.last_good_time_ms, epoch, "gap", Some(g.missing_from), Some(g.missing_to), crossed.then(|| "crossed book".to_owned())).await;
                                self.sync_event(now_ms(), epoch, "resync", None, None, None).await;
                                epoch = None;
                                if was_synced {
                                    set_synced(false);
                                }
                            }
                        }
                    }
                },
            }
        }
    }
}
