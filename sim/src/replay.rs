//! Replay: serve recorded Binance messages instead of the generator.
//!
//! A replay directory holds
//! * `messages.jsonl`: one message per line, as received on a combined connection
//!   (`{"stream":"btcusdt@depth@100ms","data":{...}}`) or a raw payload (the stream is then
//!   derived from the payload);
//! * `snapshots/<SYMBOL>.json`: the REST depth snapshot recorded beside the stream.
//!
//! Messages are sent byte for byte as recorded, paced by their event times (`speed` times as
//! fast), or flat out (0): as fast as the slowest subscriber reads, never so fast that one
//! falls a buffer behind and is cut. Flat out, a symbol's first depth event waits for its first
//! REST snapshot (a book keeper asks for one once it has buffered an event), so a book can sync
//! before the recording has gone by. Depth events after a symbol's snapshot are applied to its
//! book, so REST snapshots and the ground truth follow the replay. Playback starts when every
//! recorded stream has a subscriber (or `AUDIENCE_WAIT` after the first client connected).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use binance::streams::StreamKind;
use binance::units::{decimals_of, parse_e8, parse_levels, ONE};
use binance::wire::{DepthSnapshot, DepthUpdate};

use sonic_rs::JsonValueTrait;

use crate::book::{Book, Side};
use crate::history::{Event, History};
use crate::universe::SymbolSpec;
use crate::venue::{Frame, VenueState};

#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub dir: PathBuf,
    /// Pace multiplier; 0 sends flat out, as fast as the slowest subscriber reads.
    pub speed: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {why}")]
    Parse {
        path: String,
        line: usize,
        why: String,
    },
    #[error("{0} holds no snapshots/<SYMBOL>.json")]
    NoSnapshots(String),
}

/// One recorded message, ready to send.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub frame: Arc<Frame>,
    pub event_time: Option<u64>,
    /// Upper-case symbol and the parsed event, for depth messages.
    pub depth: Option<(String, DepthUpdate)>,
}

#[derive(Debug, Clone)]
pub struct ReplayData {
    pub specs: Vec<SymbolSpec>,
    pub snapshots: HashMap<String, DepthSnapshot>,
    pub messages: Vec<Recorded>,
    pub speed: f64,
}

fn finest_step(values: impl Iterator<Item = i64>) -> i64 {
    let d = values.map(decimals_of).max().unwrap_or(2);
    10i64.pow(8 - d.min(8))
}

fn spec_for(symbol: &str, snap: &DepthSnapshot) -> SymbolSpec {
    let prices = snap
        .bids
        .iter()
        .chain(&snap.asks)
        .filter_map(|[p, _]| parse_e8(p).ok());
    let qtys = snap
        .bids
        .iter()
        .chain(&snap.asks)
        .filter_map(|[_, q]| parse_e8(q).ok());
    let quote = ["USDT", "USDC", "FDUSD", "BTC", "ETH", "BNB"]
        .into_iter()
        .find(|q| symbol.ends_with(q) && symbol.len() > q.len())
        .unwrap_or("USDT");
    SymbolSpec {
        symbol: symbol.to_owned(),
        base: symbol.trim_end_matches(quote).to_owned(),
        quote: quote.to_owned(),
        tick_e8: finest_step(prices),
        step_e8: finest_step(qtys),
        start_mid_e8: snap
            .bids
            .first()
            .and_then(|[p, _]| parse_e8(p).ok())
            .unwrap_or(ONE),
        activity: 1.0,
        quote_volume_24h: 1_000_000,
    }
}

fn derive_stream(data: &str) -> Option<(String, StreamKind)> {
    let e: Option<String> = sonic_rs::get(data, &["e"])
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned));
    let s: String = sonic_rs::get(data, &["s"])
        .ok()
        .and_then(|v| v.as_str().map(str::to_ascii_lowercase))?;
    let kind = match e.as_deref() {
        Some("depthUpdate") => StreamKind::Depth100ms,
        Some("aggTrade") => StreamKind::AggTrade,
        Some("markPriceUpdate") => StreamKind::MarkPrice1s,
        Some("bookTicker") | None => StreamKind::BookTicker,
        Some(_) => return None,
    };
    Some((kind.name(&s), kind))
}

/// Reads and checks a replay directory.
pub fn load(cfg: &ReplayConfig) -> Result<ReplayData, ReplayError> {
    let snapshots = load_snapshots(&cfg.dir.join("snapshots"))?;
    if snapshots.is_empty() {
        return Err(ReplayError::NoSnapshots(cfg.dir.display().to_string()));
    }
    let mut specs: Vec<SymbolSpec> = snapshots
        .iter()
        .map(|(s, snap)| spec_for(s, snap))
        .collect();
    specs.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    let path = cfg.dir.join("messages.jsonl");
    let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
    let mut messages = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        messages.push(parse_line(line).map_err(|why| ReplayError::Parse {
            path: path.display().to_string(),
            line: i + 1,
            why,
        })?);
    }
    Ok(ReplayData {
        specs,
        snapshots,
        messages,
        speed: cfg.speed,
    })
}

fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ReplayError {
    let path = path.display().to_string();
    move |source| ReplayError::Io { path, source }
}

/// `snapshots/<symbol>.json`, by upper-case symbol.
fn load_snapshots(dir: &std::path::Path) -> Result<HashMap<String, DepthSnapshot>, ReplayError> {
    let mut snapshots = HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let Some(symbol) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_ascii_uppercase)
        else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        let snap: DepthSnapshot = sonic_rs::from_str(&text).map_err(|e| ReplayError::Parse {
            path: path.display().to_string(),
            line: 1,
            why: e.to_string(),
        })?;
        snapshots.insert(symbol, snap);
    }
    Ok(snapshots)
}

/// One recorded message: a combined-stream frame, or a bare payload whose stream is derived.
fn parse_line(line: &str) -> Result<Recorded, String> {
    let (stream, kind, data) = match sonic_rs::get(line, &["data"]) {
        Ok(data) => {
            let stream = sonic_rs::get(line, &["stream"])
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .ok_or("no stream")?;
            let (_, kind) =
                StreamKind::parse(&stream).ok_or_else(|| format!("unknown stream {stream}"))?;
            (stream, kind, data.as_raw_str().to_owned())
        }
        Err(_) => {
            let (stream, kind) = derive_stream(line).ok_or("not a market-data message")?;
            (stream, kind, line.to_owned())
        }
    };
    let event_time = sonic_rs::get(&data, &["E"]).ok().and_then(|v| v.as_u64());
    let depth = if kind == StreamKind::Depth100ms {
        let d: DepthUpdate = sonic_rs::from_str(&data).map_err(|e| e.to_string())?;
        Some((d.symbol.to_ascii_uppercase(), d))
    } else {
        None
    };
    Ok(Recorded {
        frame: Arc::new(Frame::new(stream, kind, data)),
        event_time,
        depth,
    })
}

/// Puts each symbol's recorded snapshot in place of the generated book.
pub fn install(state: &VenueState, data: &ReplayData) {
    for sym in &state.symbols {
        let Some(snap) = data.snapshots.get(&sym.spec.symbol) else {
            continue;
        };
        let mut book = Book::default();
        for (p, q) in parse_levels(&snap.bids).unwrap_or_default() {
            book.set(Side::Bid, p, q);
        }
        for (p, q) in parse_levels(&snap.asks).unwrap_or_default() {
            book.set(Side::Ask, p, q);
        }
        if let Ok(mut inner) = sym.inner.lock() {
            inner.history = History::new(
                snap.last_update_id,
                &book,
                state.cfg.truth_checkpoint_every,
                state.cfg.truth_checkpoints,
            );
            inner.book = book;
            inner.last_id = snap.last_update_id;
            inner.replay_time_ms = snap.event_time;
            inner.generator = None;
        }
    }
}

/// How long a replay waits, after the first client connects, for every recorded stream to be
/// subscribed before it starts anyway.
const AUDIENCE_WAIT: Duration = Duration::from_secs(30);

/// Flat out, a frame waits while more than this share of the broadcast buffer is unread: the
/// slowest subscriber sets the pace and none falls the whole buffer behind (which cuts it).
const FLAT_OUT_BACKLOG_SHARE: usize = 4;

/// Frames sent flat out between two yields to the runtime, so the connections' tasks run.
const FLAT_OUT_BURST: usize = 256;

/// Flat out, how long a symbol's first depth event waits for someone to fetch its snapshot.
const FLAT_OUT_SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// Waits until a snapshot of `symbol` was served, at most `FLAT_OUT_SNAPSHOT_WAIT`; false on
/// shutdown.
async fn snapshot_served(state: &VenueState, symbol: &str) -> bool {
    let Some(sym) = state.symbol(symbol) else {
        return true;
    };
    let start = tokio::time::Instant::now();
    while sym.inner.lock().is_ok_and(|i| i.snapshots_served == 0)
        && start.elapsed() < FLAT_OUT_SNAPSHOT_WAIT
    {
        tokio::select! {
            _ = state.shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    true
}

/// Waits until the slowest subscriber has read all but `1 / FLAT_OUT_BACKLOG_SHARE` of the
/// buffer; false on shutdown.
async fn backlog_drained(state: &VenueState) -> bool {
    let limit = (state.cfg.broadcast_capacity / FLAT_OUT_BACKLOG_SHARE).max(1);
    while state.tx.len() >= limit {
        tokio::select! {
            _ = state.shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    true
}

/// Waits until every recorded stream is subscribed, or `AUDIENCE_WAIT` after the first client
/// connected; false on shutdown.
async fn audience(state: &VenueState, data: &ReplayData) -> bool {
    let streams: std::collections::BTreeSet<&str> = data
        .messages
        .iter()
        .map(|m| m.frame.stream.as_str())
        .collect();
    let mut first_client: Option<tokio::time::Instant> = None;
    loop {
        if state.tx.receiver_count() > 0 {
            let since = *first_client.get_or_insert_with(tokio::time::Instant::now);
            if streams.iter().all(|s| state.conns.subscribed(s)) {
                return true;
            }
            if since.elapsed() >= AUDIENCE_WAIT {
                tracing::warn!("replay starting although not every recorded stream is subscribed");
                return true;
            }
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// Sends the recording once, paced by event time, starting when every stream it holds has a
/// subscriber (a frame played to nobody would be lost; a client subscribes after it connects,
/// and a collector spreads streams over several connections), or `AUDIENCE_WAIT` after the
/// first client connected.
pub async fn run(state: Arc<VenueState>, data: ReplayData) {
    if !audience(&state, &data).await {
        return;
    }
    let start = tokio::time::Instant::now();
    let first_e = data.messages.iter().find_map(|m| m.event_time);
    let flat_out = data.speed <= 0.0;
    let mut announced = std::collections::HashSet::new();
    for (i, m) in data.messages.iter().enumerate() {
        if flat_out {
            if !backlog_drained(&state).await {
                return;
            }
            if i % FLAT_OUT_BURST == FLAT_OUT_BURST - 1 {
                tokio::task::yield_now().await;
            }
        } else if let (Some(e0), Some(e)) = (first_e, m.event_time) {
            let due =
                start + Duration::from_secs_f64(e.saturating_sub(e0) as f64 / 1000.0 / data.speed);
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        if state.shutdown.is_cancelled() {
            return;
        }
        match &m.depth {
            Some((symbol, d)) => {
                play_depth(&state, symbol, d, &m.frame);
                if flat_out
                    && announced.insert(symbol.as_str())
                    && !snapshot_served(&state, symbol).await
                {
                    return;
                }
            }
            None => state.send_frame(m.frame.clone()),
        }
    }
    tracing::info!(messages = data.messages.len(), "replay finished");
}

/// Applies a recorded depth event to the symbol's book and truth (once: a recording may repeat
/// an event already in its snapshot) and sends it.
fn play_depth(state: &VenueState, symbol: &str, d: &DepthUpdate, frame: &Arc<Frame>) {
    let Some(sym) = state.symbol(symbol) else {
        return;
    };
    let Ok(mut guard) = sym.inner.lock() else {
        return;
    };
    let inner = &mut *guard;
    if d.final_update_id > inner.last_id {
        let (Some(b), Some(a)) = (parse_levels(&d.bids).ok(), parse_levels(&d.asks).ok()) else {
            return;
        };
        let mut evl = Vec::with_capacity(b.len() + a.len());
        for (p, q) in b {
            inner.book.set(Side::Bid, p, q);
            evl.push((Side::Bid, p, q));
        }
        for (p, q) in a {
            inner.book.set(Side::Ask, p, q);
            evl.push((Side::Ask, p, q));
        }
        inner.last_id = d.final_update_id;
        inner.replay_time_ms = Some(d.event_time);
        inner.history.push(
            Event {
                first: d.first_update_id,
                last: d.final_update_id,
                levels: evl,
            },
            &inner.book,
        );
    }
    state.send_depth(inner, symbol, frame.clone());
}
