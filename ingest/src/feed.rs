//! WebSocket connections: combined streams sharded under the per-connection limit, the USD-M
//! `/public` and `/market` paths, paced subscriptions, reconnects with jittered exponential
//! backoff, a stale-stream watchdog, and make-before-break rotation before Binance's 24 h cut.
//! Frames are decoded by `decode` and routed here: depth events to their symbol's task,
//! everything else straight to the writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use binance::streams::StreamKind;
use binance::Venue;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::decode::{self, DecodeError, Event, Frame};
use crate::metrics::Metrics;
use crate::row::{MarkRow, Row, TickerRow, TradeRow};
use crate::writer::Writer;
use crate::{now_ms, FeedMsg};

/// Streams per SUBSCRIBE message (Binance sets no documented cap; small frames are safer).
const SUBSCRIBE_CHUNK: usize = 100;
/// Backoff bounds for reconnects.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How long both connections are read during a rotation (at most a quarter of the lifetime).
const ROTATION_OVERLAP: Duration = Duration::from_secs(2);

/// Where one symbol's messages go.
#[derive(Debug)]
pub struct Route {
    pub iid: i32,
    pub depth: mpsc::Sender<FeedMsg>,
    /// The symbol's other rows go here (fenced with its shard's lease, if any).
    pub writer: Writer,
    /// Dedupe across overlapping connections (rotation): highest ids seen.
    last_agg: AtomicU64,
    last_ticker: AtomicU64,
    last_mark: AtomicU64,
}

impl Route {
    pub fn new(iid: i32, depth: mpsc::Sender<FeedMsg>, writer: Writer) -> Route {
        Route {
            iid,
            depth,
            writer,
            last_agg: AtomicU64::new(0),
            last_ticker: AtomicU64::new(0),
            last_mark: AtomicU64::new(0),
        }
    }
}

/// Shared by every connection of a venue.
#[derive(Debug)]
pub struct FeedCtx {
    pub venue: Venue,
    pub ws_base: String,
    /// Lower-case symbol → route.
    pub routes: std::sync::RwLock<HashMap<String, Arc<Route>>>,
    pub metrics: Arc<Metrics>,
    pub lifetime: Duration,
    pub stale_after: Duration,
    pub subscribe_interval: Duration,
    pub shutdown: CancellationToken,
    /// `messages` and `bytes` of this venue per stream kind, looked up once: a label lookup
    /// hashes its values, and this runs for every message.
    pub counted: StreamCounters,
}

/// A venue's message and byte counters per [`StreamKind`].
#[derive(Debug)]
pub struct StreamCounters(Vec<(StreamKind, prometheus::IntCounter, prometheus::IntCounter)>);

impl StreamCounters {
    pub fn new(metrics: &Metrics, venue: Venue) -> StreamCounters {
        let labels = |k: StreamKind| [venue.as_str(), k.suffix()];
        StreamCounters(
            StreamKind::ALL
                .iter()
                .map(|&k| {
                    let messages = metrics.messages.with_label_values(&labels(k));
                    (k, messages, metrics.bytes.with_label_values(&labels(k)))
                })
                .collect(),
        )
    }

    fn count(&self, kind: StreamKind, bytes: usize) {
        if let Some((_, messages, counted)) = self.0.iter().find(|c| c.0 == kind) {
            messages.inc();
            counted.inc_by(bytes as u64);
        }
    }
}

/// One connection's share of the streams.
#[derive(Debug, Clone)]
pub struct Shard {
    pub index: usize,
    pub path: &'static str,
    pub streams: Vec<String>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(ctx: &FeedCtx, shard: &Shard) -> Result<Ws, String> {
    let url = format!("{}{}", ctx.ws_base.trim_end_matches('/'), shard.path);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    for (i, chunk) in shard.streams.chunks(SUBSCRIBE_CHUNK).enumerate() {
        if i > 0 {
            // Subscriptions count against the incoming-message limit: pace them.
            tokio::time::sleep(ctx.subscribe_interval).await;
        }
        let req = format!(
            r#"{{"method":"SUBSCRIBE","params":{},"id":{}}}"#,
            sonic_rs::to_string(chunk).unwrap_or_default(),
            i + 1
        );
        ws.send(Message::Text(req.into()))
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
    }
    Ok(ws)
}

/// Changes to a running shard's streams (listings and delistings).
#[derive(Debug, Clone)]
pub enum ShardCmd {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
}

async fn apply_cmd(
    ctx: &FeedCtx,
    ws: &mut Ws,
    shard: &mut Shard,
    cmd: ShardCmd,
    next_id: &mut u64,
) -> Result<(), String> {
    let (method, names) = match cmd {
        ShardCmd::Subscribe(n) => {
            shard.streams.extend(n.iter().cloned());
            ("SUBSCRIBE", n)
        }
        ShardCmd::Unsubscribe(n) => {
            shard.streams.retain(|s| !n.contains(s));
            ("UNSUBSCRIBE", n)
        }
    };
    for chunk in names.chunks(SUBSCRIBE_CHUNK) {
        tokio::time::sleep(ctx.subscribe_interval).await;
        *next_id += 1;
        let req = format!(
            r#"{{"method":"{method}","params":{},"id":{next_id}}}"#,
            sonic_rs::to_string(chunk).unwrap_or_default()
        );
        ws.send(Message::Text(req.into()))
            .await
            .map_err(|e| format!("{method}: {e}"))?;
    }
    Ok(())
}

/// Runs one shard until shutdown: connect, read, reconnect, rotate.
pub async fn run_shard(ctx: Arc<FeedCtx>, shard: Shard, cmds: mpsc::UnboundedReceiver<ShardCmd>) {
    // Stagger rotations so connections never all reconnect together.
    let stagger = ctx.lifetime / 10 * (shard.index as u32 % 10) / 10;
    let mut conn = Connection {
        ctx,
        shard,
        cmds,
        cmds_open: true,
        next_id: 1_000,
        backoff: BACKOFF_START,
        stagger,
        rotate_at: tokio::time::Instant::now(),
    };
    let Some(mut ws) = conn.connect(false).await else {
        return;
    };
    while let Some(reason) = conn.read(&mut ws).await {
        conn.lost(reason).await;
        ws = match conn.connect(true).await {
            Some(ws) => ws,
            None => return,
        };
    }
}

/// One shard's connection and what it needs across reconnects.
struct Connection {
    ctx: Arc<FeedCtx>,
    shard: Shard,
    cmds: mpsc::UnboundedReceiver<ShardCmd>,
    cmds_open: bool,
    next_id: u64,
    backoff: Duration,
    stagger: Duration,
    rotate_at: tokio::time::Instant,
}

impl Connection {
    fn venue(&self) -> &'static str {
        self.ctx.venue.as_str()
    }

    /// Opens the shard's connection, with backoff (first a wait, `after_loss`); `None` on
    /// shutdown.
    async fn connect(&mut self, after_loss: bool) -> Option<Ws> {
        let mut wait = after_loss;
        loop {
            if wait {
                if sleep_or_shutdown(&self.ctx, jitter(self.backoff)).await {
                    return None;
                }
                self.backoff = (self.backoff * 2).min(BACKOFF_CAP);
            } else if self.ctx.shutdown.is_cancelled() {
                return None;
            }
            wait = true;
            match open(&self.ctx, &self.shard).await {
                Ok(ws) => {
                    self.ctx.metrics.connections.inc();
                    self.rotate_at = tokio::time::Instant::now()
                        + self.ctx.lifetime.saturating_sub(self.stagger);
                    return Some(ws);
                }
                Err(e) => {
                    let what = if after_loss {
                        "reconnect failed"
                    } else {
                        "connection failed"
                    };
                    tracing::warn!(venue = self.venue(), shard = self.shard.index, error = %e, "{what}");
                    self.ctx
                        .metrics
                        .reconnects
                        .with_label_values(&[self.venue(), "connect_failed"])
                        .inc();
                }
            }
        }
    }

    /// Reads until the connection is lost (why) or shutdown (`None`), applying stream changes
    /// and rotating on the way.
    async fn read(&mut self, ws: &mut Ws) -> Option<&'static str> {
        loop {
            tokio::select! {
                cmd = self.cmds.recv(), if self.cmds_open => match cmd {
                    Some(cmd) => {
                        // On failure the stream list is updated; the reconnect subscribes it whole.
                        if apply_cmd(&self.ctx, ws, &mut self.shard, cmd, &mut self.next_id).await.is_err() {
                            return Some("error");
                        }
                    }
                    None => self.cmds_open = false,
                },
                _ = self.ctx.shutdown.cancelled() => {
                    let _ = ws.close(None).await;
                    self.ctx.metrics.connections.dec();
                    return None;
                }
                _ = tokio::time::sleep_until(self.rotate_at) => self.rotate(ws).await,
                msg = tokio::time::timeout(self.ctx.stale_after, ws.next()) => match msg {
                    Err(_) => {
                        self.ctx.metrics.stale_streams.with_label_values(&[self.venue()]).inc();
                        return Some("stale");
                    }
                    Ok(Some(Ok(Message::Text(t)))) => {
                        self.backoff = BACKOFF_START;
                        dispatch(&self.ctx, t.as_str()).await;
                    }
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None) => return Some("closed"),
                    Ok(Some(Err(_))) => return Some("error"),
                    Ok(Some(Ok(_))) => {}
                }
            }
        }
    }

    /// Make before break: the new connection is subscribed, then both are read for an overlap
    /// so nothing falls between them. The old one's messages are dispatched as they come; the
    /// new one's are held and dispatched after, where the ones already seen are ignored (depth
    /// by id, tickers, trades and mark prices by their ids and times).
    async fn rotate(&mut self, ws: &mut Ws) {
        let mut new = match open(&self.ctx, &self.shard).await {
            Ok(new) => new,
            Err(e) => {
                tracing::warn!(venue = self.venue(), shard = self.shard.index, error = %e, "rotation failed; retrying");
                self.rotate_at = tokio::time::Instant::now() + jitter(self.backoff);
                return;
            }
        };
        let overlap_end =
            tokio::time::Instant::now() + (self.ctx.lifetime / 4).min(ROTATION_OVERLAP);
        let mut held: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(overlap_end) => break,
                m = ws.next() => match m {
                    Some(Ok(Message::Text(t))) => dispatch(&self.ctx, t.as_str()).await,
                    Some(Ok(_)) => {}
                    _ => break,
                },
                m = new.next() => match m {
                    Some(Ok(Message::Text(t))) => held.push(t.to_string()),
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
        let _ = ws.close(None).await;
        *ws = new;
        for t in &held {
            dispatch(&self.ctx, t).await;
        }
        self.ctx
            .metrics
            .reconnects
            .with_label_values(&[self.venue(), "rotation"])
            .inc();
        self.rotate_at = tokio::time::Instant::now() + self.ctx.lifetime;
    }

    /// The connection is gone: every symbol on it may have missed events.
    async fn lost(&mut self, reason: &'static str) {
        let venue = self.venue();
        self.ctx.metrics.connections.dec();
        self.ctx
            .metrics
            .reconnects
            .with_label_values(&[venue, reason])
            .inc();
        tracing::warn!(
            venue,
            shard = self.shard.index,
            reason,
            "connection lost; reconnecting"
        );
        notify_disconnect(&self.ctx, &self.shard, reason).await;
    }
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

/// Sleeps; true when shutdown came first.
async fn sleep_or_shutdown(ctx: &FeedCtx, d: Duration) -> bool {
    tokio::select! {
        _ = ctx.shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

async fn notify_disconnect(ctx: &FeedCtx, shard: &Shard, reason: &'static str) {
    let mut told = std::collections::HashSet::new();
    for s in &shard.streams {
        let Some((sym, kind)) = StreamKind::parse(s) else {
            continue;
        };
        if kind != StreamKind::Depth100ms || !told.insert(sym) {
            continue;
        }
        let route = ctx.routes.read().ok().and_then(|r| r.get(sym).cloned());
        if let Some(r) = route {
            let _ = r.depth.send(FeedMsg::Disconnected(reason)).await;
        }
    }
}

/// Decodes one combined-stream message and routes it. Bad input is counted, never fatal.
pub async fn dispatch(ctx: &FeedCtx, text: &str) {
    let venue = ctx.venue.as_str();
    let received_at = now_ms();
    let bad = || ctx.metrics.parse_errors.with_label_values(&[venue]).inc();
    let (symbol, kind, text) = match decode::frame(text) {
        Ok(Frame::Data { symbol, kind, text }) => (symbol, kind, text),
        Ok(Frame::Reply) => return,
        Ok(Frame::Refused) => {
            tracing::error!(venue, reply = %text, "subscription refused");
            return;
        }
        Err(DecodeError::Unexpected) => {
            bad();
            tracing::warn!(venue, message = %text.chars().take(200).collect::<String>(), "unexpected message");
            return;
        }
        Err(_) => return bad(),
    };
    let Some(route) = ctx.routes.read().ok().and_then(|r| r.get(symbol).cloned()) else {
        return;
    };
    ctx.counted.count(kind, text.len());
    match decode::event(kind, text) {
        Ok(ev) => route_event(&route, ev, received_at).await,
        Err(_) => bad(),
    }
}

/// Depth events to their symbol's task; the rest, unless already seen on another connection
/// (rotation overlap), as rows to the writer.
async fn route_event(route: &Route, ev: Event, received_at: u64) {
    let instrument_id = route.iid;
    let row = match ev {
        Event::Depth(ev) => {
            // Backpressure: a full symbol queue slows this connection down.
            let _ = route.depth.send(FeedMsg::Depth(ev, received_at)).await;
            return;
        }
        Event::Ticker(t) => {
            if route.last_ticker.fetch_max(t.update_id, Ordering::Relaxed) >= t.update_id {
                return;
            }
            Row::Ticker(TickerRow {
                time: t.event_time.unwrap_or(received_at),
                instrument_id,
                update_id: t.update_id,
                bid_price: t.bid_price,
                bid_qty: t.bid_qty,
                ask_price: t.ask_price,
                ask_qty: t.ask_qty,
                received_at,
            })
        }
        Event::Trade(t) => {
            if route.last_agg.fetch_max(t.agg_trade_id, Ordering::Relaxed) >= t.agg_trade_id
                && t.agg_trade_id != 0
            {
                return;
            }
            Row::Trade(TradeRow {
                time: t.trade_time,
                instrument_id,
                agg_trade_id: t.agg_trade_id,
                price: t.price,
                qty: t.qty,
                first_trade_id: t.first_trade_id,
                last_trade_id: t.last_trade_id,
                buyer_is_maker: t.buyer_is_maker,
                event_time: t.event_time,
                received_at,
            })
        }
        Event::Mark(m) => {
            if route.last_mark.fetch_max(m.event_time, Ordering::Relaxed) >= m.event_time {
                return;
            }
            Row::Mark(MarkRow {
                time: m.event_time,
                instrument_id,
                mark_price: m.mark_price,
                index_price: m.index_price,
                estimated_settle_price: m.estimated_settle_price,
                funding_rate: m.funding_rate,
                next_funding_time: m.next_funding_time,
                received_at,
            })
        }
    };
    route.writer.send(row).await;
}
