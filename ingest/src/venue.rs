//! One venue's collection: its symbol tasks, its connections, and the universe refresh that
//! picks up listings and delistings while running.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use binance::streams::StreamKind;
use binance::Venue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::feed::{self, FeedCtx, Route, Shard, ShardCmd, StreamCounters};
use crate::lease::{Fence, Held};
use crate::metrics::Metrics;
use crate::rest_client::Rest;
use crate::snapshots::SnapshotQueue;
use crate::standby::Standby;
use crate::symbol::{Promotion, Role, SymbolConfig, SymbolTask};
use crate::universe::{self, Instrument, Selection, UniverseError};
use crate::writer::Writer;

/// Depth events queued per symbol before its connection is slowed down.
const SYMBOL_QUEUE: usize = 10_000;

struct ShardHandle {
    path: &'static str,
    streams: usize,
    tx: mpsc::UnboundedSender<ShardCmd>,
}

struct Active {
    inst: Instrument,
    stop: CancellationToken,
    /// Cancelled once its task has ended (its 'stopped' event queued).
    done: CancellationToken,
    /// (shard index, stream name)
    streams: Vec<(usize, String)>,
    /// Tells its task the depth window of its tier.
    depth_levels: watch::Sender<Option<u32>>,
    /// The lease it is collected under (`None` while it stands by).
    fence: Option<Fence>,
    /// Makes a standby symbol live, once.
    promote: Option<oneshot::Sender<Promotion>>,
}

/// Which of the universe's symbols this process collects.
#[derive(Debug, Clone, Default)]
pub enum Assignment {
    /// Every one (no `--shards`).
    #[default]
    All,
    /// Those of the shards whose lease it holds (`lease::shard_of`), each under its lease.
    Shards { count: u32, held: Held },
}

impl Assignment {
    /// `None`: not this process's symbol; `Some(fence)`: collected, under `fence`.
    fn fence(&self, venue: Venue, symbol: &str) -> Option<Option<Fence>> {
        match self {
            Assignment::All => Some(None),
            Assignment::Shards { count, held } => held
                .fence(crate::lease::shard_of(venue, symbol, *count))
                .map(Some),
        }
    }
}

/// Runs a venue: add and remove symbols, own their tasks and connections.
pub struct VenueManager {
    pub venue: Venue,
    ctx: Arc<FeedCtx>,
    rest: Arc<Rest>,
    snapshots: SnapshotQueue,
    writer: Writer,
    metrics: Arc<Metrics>,
    symbol_cfg: SymbolConfig,
    per_connection: usize,
    feed_stop: CancellationToken,
    shards: Vec<ShardHandle>,
    active: HashMap<String, Active>,
    /// The universe as last loaded, and the part of it this process collects.
    universe: Vec<Instrument>,
    assignment: Assignment,
    pub handles: Vec<JoinHandle<()>>,
    /// Symbols stopped since [`VenueManager::take_stopped`]: each token is cancelled once its
    /// task has ended.
    stopped: Vec<CancellationToken>,
    /// `--standby`: the symbols of shards held elsewhere are collected too, standing by.
    standby: Option<Arc<Standby>>,
}

impl std::fmt::Debug for VenueManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VenueManager")
            .field("venue", &self.venue)
            .field("symbols", &self.active.len())
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// How a venue is collected: where, how many streams per connection, connection lifetime and
/// watchdog, and the symbol tasks' settings.
#[derive(Debug, Clone)]
pub struct VenueSettings {
    pub ws_base: String,
    pub per_connection: usize,
    pub lifetime: Duration,
    pub stale_after: Duration,
    pub symbol: SymbolConfig,
}

impl VenueManager {
    pub fn new(
        venue: Venue,
        settings: VenueSettings,
        rest: Arc<Rest>,
        snapshots: SnapshotQueue,
        writer: Writer,
        metrics: Arc<Metrics>,
        feed_stop: CancellationToken,
    ) -> VenueManager {
        let ctx = Arc::new(FeedCtx {
            venue,
            ws_base: settings.ws_base,
            routes: std::sync::RwLock::new(HashMap::new()),
            metrics: metrics.clone(),
            lifetime: settings.lifetime,
            stale_after: settings.stale_after,
            subscribe_interval: binance::rules::subscribe_interval(venue),
            shutdown: feed_stop.clone(),
            counted: StreamCounters::new(&metrics, venue),
        });
        let per_connection = settings
            .per_connection
            .clamp(1, binance::rules::MAX_STREAMS_PER_CONNECTION);
        VenueManager {
            venue,
            ctx,
            rest,
            snapshots,
            writer,
            metrics,
            symbol_cfg: settings.symbol,
            per_connection,
            feed_stop,
            shards: Vec::new(),
            active: HashMap::new(),
            universe: Vec::new(),
            assignment: Assignment::All,
            handles: Vec::new(),
            stopped: Vec::new(),
            standby: None,
        }
    }

    /// Stands by for the shards it does not hold (`--standby`).
    pub fn with_standby(mut self, standby: Option<Arc<Standby>>) -> VenueManager {
        self.standby = standby;
        self
    }

    /// The symbols stopped since the last call, as tokens cancelled when each task has ended.
    pub fn take_stopped(&mut self) -> Vec<CancellationToken> {
        std::mem::take(&mut self.stopped)
    }

    /// The symbols it collects (not those standing by).
    pub fn symbols(&self) -> usize {
        self.active
            .values()
            .filter(|a| a.fence.is_some() || self.standby.is_none())
            .count()
    }

    /// Starts collecting `insts`, each under its lease: one task each, their streams on
    /// connections with room, new connections for the rest (one SUBSCRIBE burst per
    /// connection, not one per symbol).
    fn add(&mut self, insts: Vec<(Instrument, Option<Fence>)>) {
        let mut per_shard: HashMap<usize, Vec<String>> = HashMap::new();
        let mut fresh: HashMap<&'static str, Vec<(String, String)>> = HashMap::new();
        for (inst, fence) in insts {
            let lower = inst.symbol.to_ascii_lowercase();
            if self.active.contains_key(&lower) {
                continue;
            }
            let (stop, done, depth_levels, promote) = self.start_task(&inst, fence);
            let mut streams = Vec::new();
            for kind in StreamKind::ALL.into_iter().filter(|k| k.on(self.venue)) {
                let name = kind.name(&lower);
                let path = binance::streams::combined_path(self.venue, kind);
                let room = self
                    .shards
                    .iter()
                    .position(|s| s.path == path && s.streams < self.per_connection);
                match room {
                    Some(i) => {
                        self.shards[i].streams += 1;
                        per_shard.entry(i).or_default().push(name.clone());
                        streams.push((i, name));
                    }
                    None => fresh.entry(path).or_default().push((lower.clone(), name)),
                }
            }
            self.active.insert(
                lower,
                Active {
                    inst,
                    stop,
                    done,
                    streams,
                    depth_levels,
                    fence,
                    promote,
                },
            );
        }
        for (i, names) in per_shard {
            let _ = self.shards[i].tx.send(ShardCmd::Subscribe(names));
        }
        for (path, names) in fresh {
            for chunk in names.chunks(self.per_connection) {
                let index = self.shards.len();
                let (tx, rx) = mpsc::unbounded_channel();
                let streams: Vec<String> = chunk.iter().map(|(_, n)| n.clone()).collect();
                for (sym, n) in chunk {
                    if let Some(a) = self.active.get_mut(sym) {
                        a.streams.push((index, n.clone()));
                    }
                }
                self.shards.push(ShardHandle {
                    path,
                    streams: streams.len(),
                    tx,
                });
                let shard = Shard {
                    index,
                    path,
                    streams,
                };
                self.handles
                    .push(tokio::spawn(feed::run_shard(self.ctx.clone(), shard, rx)));
            }
        }
        self.update_gauges();
    }

    /// The symbol's task and route, its rows fenced with `fence` (standing by without one,
    /// with `--standby`): its stop token, a token cancelled when it has ended, the sender of
    /// its depth window, and its promotion's sender while it stands by.
    fn start_task(
        &mut self,
        inst: &Instrument,
        fence: Option<Fence>,
    ) -> (
        CancellationToken,
        CancellationToken,
        watch::Sender<Option<u32>>,
        Option<oneshot::Sender<Promotion>>,
    ) {
        let (tx, rx) = mpsc::channel(SYMBOL_QUEUE);
        let (writer, standby, promote) = self.task_writer(inst, fence);
        if let Ok(mut routes) = self.ctx.routes.write() {
            let route = Route::new(inst.id, tx, writer.clone());
            routes.insert(inst.symbol.to_ascii_lowercase(), Arc::new(route));
        }
        let stop = self.feed_stop.child_token();
        let (depth_levels, levels_rx) = watch::channel(inst.depth_levels);
        let task = SymbolTask {
            inst: inst.clone(),
            cfg: self.symbol_cfg.clone(),
            writer,
            snapshots: self.snapshots.clone(),
            metrics: self.metrics.clone(),
            shutdown: stop.clone(),
            depth_levels: levels_rx,
            standby,
        };
        let done = CancellationToken::new();
        let ended = done.clone().drop_guard();
        self.handles.push(tokio::spawn(async move {
            let _ended = ended;
            task.run(rx).await;
        }));
        (stop, done, depth_levels, promote)
    }

    /// The writer of a symbol task collecting under `fence`, and with `--standby` its role and
    /// promotion's sender. A live symbol of a shard just taken whose warm book's resume point
    /// waits (its standby task ended before it was promoted) starts promoted, so the open
    /// epoch is ended.
    fn task_writer(
        &self,
        inst: &Instrument,
        fence: Option<Fence>,
    ) -> (Writer, Option<Role>, Option<oneshot::Sender<Promotion>>) {
        let Some(shared) = self.standby.clone() else {
            return (self.writer.fenced(fence), None, None);
        };
        let resume = fence
            .and_then(|_| shared.take_resume(inst.id))
            .filter(|r| r.warm);
        if fence.is_some() && resume.is_none() {
            return (self.writer.fenced(fence), None, None);
        }
        let writer = self.writer.standby(shared.keep);
        let (tx, rx) = oneshot::channel();
        let tx = match fence {
            Some(fence) => {
                let _ = tx.send(Promotion { fence, resume });
                None
            }
            None => Some(tx),
        };
        let role = Role {
            shared,
            promote: Some(rx),
        };
        (writer, Some(role), tx)
    }

    /// Stops collecting `symbol` (delisted or dropped from the top N): its streams are
    /// unsubscribed and its task records the end of its epoch.
    pub fn remove(&mut self, symbol: &str) {
        let lower = symbol.to_ascii_lowercase();
        let Some(a) = self.active.remove(&lower) else {
            return;
        };
        let mut per_shard: HashMap<usize, Vec<String>> = HashMap::new();
        for (i, name) in a.streams {
            per_shard.entry(i).or_default().push(name);
        }
        for (i, names) in per_shard {
            self.shards[i].streams = self.shards[i].streams.saturating_sub(names.len());
            let _ = self.shards[i].tx.send(ShardCmd::Unsubscribe(names));
        }
        if let Ok(mut routes) = self.ctx.routes.write() {
            routes.remove(&lower);
        }
        a.stop.cancel();
        self.stopped.push(a.done);
        tracing::info!(venue = self.venue.as_str(), symbol = %a.inst.symbol, "stopped collecting");
        self.update_gauges();
    }

    /// Restarts `lower`'s task under `fence` (a lease taken again under a new generation, or
    /// a role that changed) on the streams it has. The old task ends its epoch; the new one
    /// syncs on the same subscription. Unsubscribing and subscribing again instead would leave
    /// the new book a gap right after its sync: events go by between the two requests, which a
    /// connection may only send `subscribe_interval` apart.
    fn restart(&mut self, lower: &str, fence: Option<Fence>) {
        let Some(inst) = self.active.get(lower).map(|a| a.inst.clone()) else {
            return;
        };
        let (stop, done, depth_levels, promote) = self.start_task(&inst, fence);
        let Some(a) = self.active.get_mut(lower) else {
            return;
        };
        std::mem::replace(&mut a.stop, stop).cancel();
        self.stopped.push(std::mem::replace(&mut a.done, done));
        a.depth_levels = depth_levels;
        a.fence = fence;
        a.promote = promote;
        let (venue, symbol) = (self.venue.as_str(), &inst.symbol);
        match fence {
            Some(f) => {
                tracing::info!(venue, %symbol, generation = f.generation, "restarted under a new lease")
            }
            None => {
                tracing::info!(venue, %symbol, "restarted standing by: its lease is held elsewhere")
            }
        }
    }

    fn update_gauges(&self) {
        self.metrics
            .symbols
            .with_label_values(&[self.venue.as_str()])
            .set(self.active.len() as i64);
    }

    /// Reloads the universe and applies the difference.
    pub async fn refresh(
        &mut self,
        db: &Client,
        sel: &Selection,
    ) -> Result<(usize, usize), UniverseError> {
        self.universe = universe::load(&self.rest, db, sel).await?;
        Ok(self.apply())
    }

    /// Collects the part of the universe `assignment` gives this process from now on.
    pub fn assign(
        &mut self,
        assignment: Assignment,
        universe: Option<Vec<Instrument>>,
    ) -> (usize, usize) {
        self.assignment = assignment;
        if let Some(u) = universe {
            self.universe = u;
        }
        self.apply()
    }

    /// Standby symbols of shards just taken go live where they are (their tasks continue).
    fn promote(&mut self, wanted: &HashMap<String, (Instrument, Option<Fence>)>) {
        let Some(shared) = &self.standby else {
            return;
        };
        for (lower, (inst, fence)) in wanted {
            let (Some(fence), Some(a)) = (fence, self.active.get_mut(lower)) else {
                continue;
            };
            let Some(tx) = a.promote.take().filter(|_| a.fence.is_none()) else {
                continue;
            };
            let resume = shared.take_resume(inst.id);
            let promotion = Promotion {
                fence: *fence,
                resume,
            };
            match tx.send(promotion) {
                Ok(()) => a.fence = Some(*fence),
                // Its task ended: it restarts live, with the resume point put back.
                Err(p) => {
                    if let Some(r) = p.resume {
                        shared.put_resume([(inst.id, r)].into());
                    }
                }
            }
        }
    }

    /// Starts and stops symbols to match the universe and the assignment; a symbol whose lease
    /// was taken again under a new generation, or whose role changed, restarts in place (a new
    /// epoch). Returns the tasks (started, stopped); a restart counts in both.
    fn apply(&mut self) -> (usize, usize) {
        let standby = self.standby.is_some();
        let wanted: HashMap<String, (Instrument, Option<Fence>)> = self
            .universe
            .iter()
            .filter_map(|i| {
                let fence = match self.assignment.fence(self.venue, &i.symbol) {
                    None if standby => None,
                    f => f?,
                };
                Some((i.symbol.to_ascii_lowercase(), (i.clone(), fence)))
            })
            .collect();
        self.promote(&wanted);
        let gone: Vec<String> = self
            .active
            .keys()
            .filter(|s| !wanted.contains_key(*s))
            .cloned()
            .collect();
        for s in &gone {
            self.remove(s);
        }
        let moved: Vec<(String, Option<Fence>)> = self
            .active
            .iter()
            .filter_map(|(s, a)| Some((s, wanted.get(s)?.1)).filter(|(_, f)| *f != a.fence))
            .map(|(s, f)| (s.clone(), f))
            .collect();
        let restarted = moved.len();
        for (s, fence) in moved {
            self.restart(&s, fence);
        }
        let mut new = Vec::new();
        for (lower, (inst, fence)) in wanted {
            match self.active.get_mut(&lower) {
                // A new tier may keep another depth window.
                Some(a) => {
                    if *a.depth_levels.borrow() != inst.depth_levels {
                        a.depth_levels.send_replace(inst.depth_levels);
                    }
                    a.inst = inst;
                }
                None => new.push((inst, fence)),
            }
        }
        let added = new.len();
        if added > 0 {
            tracing::info!(venue = self.venue.as_str(), added, "new symbols");
            self.add(new);
        }
        (added + restarted, gone.len() + restarted)
    }
}
