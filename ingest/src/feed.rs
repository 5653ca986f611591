//! WebSocket connections: combined streams sharded under the per-connection limit, the USD-M
//! `/public` and `/market` paths, paced subscriptions, reconnects with jittered exponential
//! backoff, a stale-stream watchdog, and make-before-break rotation before Binance's 24 h cut.
//! Messages are parsed here and routed: depth events to their symbol's task, everything else
//! straight to the writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use binance::streams::StreamKind;
use binance::units::{parse_e8, parse_e8_signed, parse_levels};
use binance::wire::{AggTrade, BookTicker, DepthUpdate, MarkPrice};
use binance::Venue;
use book::sync::DepthEvent;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use sonic_rs::JsonValueTrait;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::writer::{Row, Writer};
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
    /// Dedupe across overlapping connections (rotation): highest ids seen.
    last_agg: AtomicU64,
    last_ticker: AtomicU64,
    last_mark: AtomicU64,
}

impl Route {
    pub fn new(iid: i32, depth: mpsc::Sender<FeedMsg>) -> Route {
        Route {
            iid,
            depth,
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
    pub writer: Writer,
    pub metrics: Arc<Metrics>,
    pub lifetime: Duration,
    pub stale_after: Duration,
    pub subscribe_interval: Duration,
    pub shutdown: CancellationToken,
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

/// Runs one shard until shutdown: connect, read, reconnect, rotate.
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

pub async fn run_shard(
    ctx: Arc<FeedCtx>,
    mut shard: Shard,
    mut cmds: mpsc::UnboundedReceiver<ShardCmd>,
) {
    let mut cmds_open = true;
    let mut next_id: u64 = 1_000;
    let venue = ctx.venue.as_str();
    let mut backoff = BACKOFF_START;
    // Stagger rotations so connections never all reconnect together.
    let stagger = ctx.lifetime / 10 * (shard.index as u32 % 10) / 10;
    let mut ws = loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        match open(&ctx, &shard).await {
            Ok(ws) => break ws,
            Err(e) => {
                tracing::warn!(venue, shard = shard.index, error = %e, "connection failed");
                ctx.metrics
                    .reconnects
                    .with_label_values(&[venue, "connect_failed"])
                    .inc();
                if sleep_or_shutdown(&ctx, jitter(backoff)).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_CAP);
            }
        }
    };
    ctx.metrics.connections.inc();
    let mut rotate_at = tokio::time::Instant::now() + ctx.lifetime.saturating_sub(stagger);
    loop {
        let reason = tokio::select! {
            cmd = cmds.recv(), if cmds_open => {
                match cmd {
                    Some(cmd) => match apply_cmd(&ctx, &mut ws, &mut shard, cmd, &mut next_id).await {
                        Ok(()) => continue,
                        // The stream list is updated; the reconnect subscribes it whole.
                        Err(_) => "error",
                    },
                    None => {
                        cmds_open = false;
                        continue;
                    }
                }
            }
            _ = ctx.shutdown.cancelled() => {
                let _ = ws.close(None).await;
                ctx.metrics.connections.dec();
                return;
            }
            _ = tokio::time::sleep_until(rotate_at) => {
                // Make before break: the new connection is subscribed, then both are read for
                // an overlap so nothing falls between them. The old one's messages are
                // dispatched as they come; the new one's are held and dispatched after, where
                // the ones already seen are ignored (depth by id, tickers, trades and mark
                // prices by their ids and times).
                match open(&ctx, &shard).await {
                    Ok(mut new) => {
                        let overlap_end = tokio::time::Instant::now() + (ctx.lifetime / 4).min(ROTATION_OVERLAP);
                        let mut held: Vec<String> = Vec::new();
                        loop {
                            tokio::select! {
                                _ = tokio::time::sleep_until(overlap_end) => break,
                                m = ws.next() => match m {
                                    Some(Ok(Message::Text(t))) => dispatch(&ctx, t.as_str()).await,
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
                        ws = new;
                        for t in &held {
                            dispatch(&ctx, t).await;
                        }
                        ctx.metrics.reconnects.with_label_values(&[venue, "rotation"]).inc();
                        rotate_at = tokio::time::Instant::now() + ctx.lifetime;
                    }
                    Err(e) => {
                        tracing::warn!(venue, shard = shard.index, error = %e, "rotation failed; retrying");
                        rotate_at = tokio::time::Instant::now() + jitter(backoff);
                    }
                }
                continue;
            }
            msg = tokio::time::timeout(ctx.stale_after, ws.next()) => match msg {
                Err(_) => {
                    ctx.metrics.stale_streams.with_label_values(&[venue]).inc();
                    "stale"
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    backoff = BACKOFF_START;
                    dispatch(&ctx, t.as_str()).await;
                    continue;
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) => "closed",
                Ok(Some(Err(_))) => "error",
                Ok(Some(Ok(_))) => continue,
            }
        };
        // Lost the connection: every symbol on it may have missed events.
        ctx.metrics.connections.dec();
        ctx.metrics
            .reconnects
            .with_label_values(&[venue, reason])
            .inc();
        tracing::warn!(
            venue,
            shard = shard.index,
            reason,
            "connection lost; reconnecting"
        );
        notify_disconnect(&ctx, &shard, reason).await;
        ws = loop {
            if sleep_or_shutdown(&ctx, jitter(backoff)).await {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
            match open(&ctx, &shard).await {
                Ok(ws) => break ws,
                Err(e) => {
                    tracing::warn!(venue, shard = shard.index, error = %e, "reconnect failed");
                    ctx.metrics
                        .reconnects
                        .with_label_values(&[venue, "connect_failed"])
                        .inc();
                }
            }
        };
        ctx.metrics.connections.inc();
        rotate_at = tokio::time::Instant::now() + ctx.lifetime.saturating_sub(stagger);
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

/// Parses one combined-stream message and routes it. Bad input is counted, never fatal.
pub async fn dispatch(ctx: &FeedCtx, text: &str) {
    let venue = ctx.venue.as_str();
    let recv = now_ms();
    let bad = || ctx.metrics.parse_errors.with_label_values(&[venue]).inc();
    let (Ok(stream), Ok(data)) = (
        sonic_rs::get(text, &["stream"]),
        sonic_rs::get(text, &["data"]),
    ) else {
        // Subscription replies carry an id; anything else is unexpected.
        if sonic_rs::get(text, &["id"]).is_err() {
            bad();
            tracing::warn!(venue, message = %text.chars().take(200).collect::<String>(), "unexpected message");
        } else if sonic_rs::get(text, &["code"]).is_ok() {
            tracing::error!(venue, reply = %text, "subscription refused");
        }
        return;
    };
    let Some(stream) = stream.as_str() else {
        return bad();
    };
    let Some((sym, kind)) = StreamKind::parse(stream) else {
        return bad();
    };
    let Some(route) = ctx.routes.read().ok().and_then(|r| r.get(sym).cloned()) else {
        return;
    };
    let raw = data.as_raw_str();
    ctx.metrics
        .messages
        .with_label_values(&[venue, kind.suffix()])
        .inc();
    ctx.metrics
        .bytes
        .with_label_values(&[venue, kind.suffix()])
        .inc_by(text.len() as u64);
    match kind {
        StreamKind::Depth100ms => {
            let Ok(d) = sonic_rs::from_str::<DepthUpdate>(raw) else {
                return bad();
            };
            let (Some(bids), Some(asks)) = (parse_levels(&d.bids).ok(), parse_levels(&d.asks).ok())
            else {
                return bad();
            };
            let ev = DepthEvent {
                event_time_ms: d.event_time,
                first_update_id: d.first_update_id,
                final_update_id: d.final_update_id,
                prev_final_update_id: d.prev_final_update_id,
                bids,
                asks,
            };
            // Backpressure: a full symbol queue slows this connection down.
            let _ = route.depth.send(FeedMsg::Depth(ev, recv)).await;
        }
        StreamKind::BookTicker => {
            let Ok(t) = sonic_rs::from_str::<BookTicker>(raw) else {
                return bad();
            };
            if route.last_ticker.fetch_max(t.update_id, Ordering::Relaxed) >= t.update_id {
                return;
            }
            let (Ok(bid), Ok(bq), Ok(ask), Ok(aq)) = (
                parse_e8(&t.bid_price),
                parse_e8(&t.bid_qty),
                parse_e8(&t.ask_price),
                parse_e8(&t.ask_qty),
            ) else {
                return bad();
            };
            let time = t.event_time.unwrap_or(recv);
            ctx.writer
                .send(Row::Ticker {
                    time,
                    iid: route.iid,
                    update_id: t.update_id,
                    bid,
                    bid_qty: bq,
                    ask,
                    ask_qty: aq,
                    recv,
                })
                .await;
        }
        StreamKind::AggTrade => {
            let Ok(t) = sonic_rs::from_str::<AggTrade>(raw) else {
                return bad();
            };
            if route.last_agg.fetch_max(t.agg_trade_id, Ordering::Relaxed) >= t.agg_trade_id
                && t.agg_trade_id != 0
            {
                return;
            }
            let (Ok(price), Ok(qty)) = (parse_e8(&t.price), parse_e8(&t.qty)) else {
                return bad();
            };
            ctx.writer
                .send(Row::Trade {
                    time: t.trade_time,
                    iid: route.iid,
                    agg_id: t.agg_trade_id,
                    price,
                    qty,
                    first: t.first_trade_id,
                    last: t.last_trade_id,
                    maker: t.buyer_is_maker,
                    event: t.event_time,
                    recv,
                })
                .await;
        }
        StreamKind::MarkPrice1s => {
            let Ok(m) = sonic_rs::from_str::<MarkPrice>(raw) else {
                return bad();
            };
            if route.last_mark.fetch_max(m.event_time, Ordering::Relaxed) >= m.event_time {
                return;
            }
            let Ok(mark) = parse_e8(&m.mark_price) else {
                return bad();
            };
            ctx.writer
                .send(Row::Mark {
                    time: m.event_time,
                    iid: route.iid,
                    mark,
                    index: parse_e8(&m.index_price).ok(),
                    settle: parse_e8(&m.estimated_settle_price).ok(),
                    funding: parse_e8_signed(&m.funding_rate).ok(),
                    next_funding: (m.next_funding_time > 0).then_some(m.next_funding_time),
                    recv,
                })
                .await;
        }
    }
}
