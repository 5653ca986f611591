//! `ingest run`: wires universe, connections, symbol tasks, writers and the metrics server, and
//! shuts them down in order on SIGTERM/SIGINT so that nothing acknowledged is lost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use binance::Venue;
use tokio_util::sync::CancellationToken;

use crate::follow::LeaseFollow;
use crate::lease::{LeaseConfig, Leases};
use crate::metrics::Metrics;
use crate::rest_client::Rest;
use crate::snapshots::SnapshotQueue;
use crate::symbol::SymbolConfig;
use crate::universe::{self, Selection, Tier};
use crate::venue::{Assignment, VenueManager, VenueSettings};
use crate::writer::{self, Writer, WriterConfig};

/// Everything `run` needs, filled from the command line.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub database_url: String,
    pub venues: Vec<Venue>,
    pub spot_rest: String,
    pub spot_ws: String,
    pub usdm_rest: String,
    pub usdm_ws: String,
    pub selection: Selection,
    pub streams_per_connection: usize,
    pub connection_lifetime: Duration,
    pub stale_after: Duration,
    pub spot_weight_limit: u32,
    pub usdm_weight_limit: u32,
    pub checkpoint_every: Duration,
    pub checkpoint_rows: usize,
    pub top_every: Duration,
    pub top_levels: usize,
    pub batch_rows: usize,
    pub batch_delay: Duration,
    pub queue_rows: usize,
    pub spool_dir: PathBuf,
    pub metrics_bind: SocketAddr,
    pub shutdown_grace: Duration,
    /// How often the universe is reloaded (listings, delistings, the top N).
    pub universe_refresh: Duration,
    /// How often `maintain()` runs.
    pub maintain_every: Duration,
    /// Shards by lease, shared with other collectors (`--shards`); `None`: this process
    /// collects the whole universe.
    pub leases: Option<LeaseConfig>,
}

/// Snapshot depth by tier: the deepest book for the busiest symbols, a cheaper one for the rest
/// (spot 5000 levels cost weight 250, 1000 levels 50).
fn snapshot_limit(venue: Venue, tier: Tier) -> u32 {
    match (venue, tier) {
        (Venue::Spot, Tier::Critical) => binance::rules::SPOT_SNAPSHOT_LIMIT,
        (Venue::Spot, _) => binance::rules::SPOT_SNAPSHOT_LIMIT_LIGHT,
        (Venue::Usdm, _) => binance::rules::USDM_SNAPSHOT_LIMIT,
    }
}

/// Runs until `shutdown` is cancelled, then flushes everything.
pub async fn run(cfg: RunConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Result<()> {
    let (db, db_conn) = pgconn::connect(&cfg.database_url)
        .await
        .context("connecting to the database")?;
    let leases = init_leases(&cfg, &db, &metrics).await?;
    let writer_cfg = writer_config(&cfg, leases.as_ref());
    recover(&cfg, &db, &writer_cfg, &metrics, leases.is_none()).await?;
    serve_metrics(cfg.metrics_bind, &metrics, &shutdown).await?;
    let (writer, writer_handles) = writer::start(writer_cfg, metrics.clone());
    let lease_stop = CancellationToken::new();
    let standby = leases.as_ref().and_then(Leases::standby);
    let (mut follow, lease_task) = match leases {
        Some(l) => {
            let (f, task) = start_leases(l, &db, &cfg.database_url, &lease_stop, &writer).await?;
            (Some(f), Some(task))
        }
        None => (None, None),
    };
    let assignment = match follow.as_mut() {
        Some(f) => {
            // Shards already leaving have no symbols started here: drained once the queues are.
            let (assignment, leaving) = f.assignment();
            f.drain(leaving, Vec::new());
            assignment
        }
        None => Assignment::All,
    };
    // Tasks that read from the exchange stop on `feed_stop`; symbol tasks then record their
    // 'stopped' events; writers flush; the leases are released last.
    let feed_stop = CancellationToken::new();
    let mut managers = Vec::new();
    for venue in &cfg.venues {
        let (m, instruments) =
            start_venue(&cfg, *venue, &db, &writer, &metrics, &feed_stop).await?;
        let mut m = m.with_standby(standby.clone());
        m.assign(assignment.clone(), Some(instruments));
        managers.push(m);
    }
    metrics
        .expected_books
        .store(expected_books(&managers), Ordering::Relaxed);
    drop(db);
    let _ = db_conn.await;
    spawn_database_probe(cfg.database_url.clone(), metrics.clone(), shutdown.clone());
    spawn_maintenance(
        cfg.database_url.clone(),
        cfg.maintain_every,
        metrics.clone(),
        shutdown.clone(),
    );
    follow_universe(&cfg, &mut managers, &metrics, &shutdown, follow).await;
    tracing::info!("shutting down: stopping the streams, flushing every row");
    feed_stop.cancel();
    for m in managers {
        for h in m.handles {
            let _ = h.await;
        }
    }
    drop(writer);
    let flushed = flush(writer_handles, cfg.shutdown_grace).await;
    lease_stop.cancel();
    if let Some(task) = lease_task {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "the lease task failed; the leases expire on their own");
        }
    }
    flushed
}

/// This process's leases (`--shards`); without, a refusal to run beside collectors that hold
/// some (it would write their symbols a second time, unfenced).
async fn init_leases(
    cfg: &RunConfig,
    db: &tokio_postgres::Client,
    metrics: &Arc<Metrics>,
) -> Result<Option<Leases>> {
    if let Some(lc) = &cfg.leases {
        return Ok(Some(Leases::init(db, lc.clone(), metrics.clone()).await?));
    }
    let holders = crate::lease::live_holders(db)
        .await
        .context("reading collector_leases")?;
    if let Some(holders) = holders {
        anyhow::bail!(
            "collectors {holders} hold shard leases of this database: start this one with the \
             same --shards as theirs, or stop them first"
        );
    }
    Ok(None)
}

/// Takes the first leases, then keeps them in their own task from here on: starting the venues
/// (loading a universe of thousands of symbols) may take longer than a lease lives.
async fn start_leases(
    mut l: Leases,
    db: &tokio_postgres::Client,
    url: &str,
    stop: &CancellationToken,
    writer: &Writer,
) -> Result<(LeaseFollow, tokio::task::JoinHandle<()>)> {
    l.tick(db).await.context("taking the first leases")?;
    tracing::info!(owner = l.owner(), held = ?l.view().borrow().shards, "leases");
    let follow = LeaseFollow::new(l.shards(), l.view(), writer.clone());
    let task = tokio::spawn(l.run(url.to_owned(), stop.clone()));
    Ok((follow, task))
}

fn writer_config(cfg: &RunConfig, leases: Option<&Leases>) -> WriterConfig {
    let instance = format!(
        "{:x}",
        crate::now_ms() ^ u64::from(std::process::id()) << 40
    );
    WriterConfig {
        database_url: cfg.database_url.clone(),
        max_rows: cfg.batch_rows,
        max_delay: cfg.batch_delay,
        queue: cfg.queue_rows,
        spool_dir: cfg.spool_dir.clone(),
        instance,
        held: leases.map(Leases::view),
        session_name: leases.map(|l| crate::lease::session_name(l.owner())),
    }
}

/// What a previous run left: its spool replayed, then (`close_all`: no leases) its open epochs
/// closed; with leases, whoever takes a shard closes that shard's. Nothing new is written
/// before both are done.
async fn recover(
    cfg: &RunConfig,
    db: &tokio_postgres::Client,
    writer_cfg: &WriterConfig,
    metrics: &Arc<Metrics>,
    close_all: bool,
) -> Result<()> {
    let left = writer::replay_spool(writer_cfg, metrics).await;
    anyhow::ensure!(
        left == 0,
        "{left} spooled batches of a previous run could not be replayed into the database; \
         they stay in {} and are replayed at the next start",
        cfg.spool_dir.display()
    );
    if !close_all {
        return Ok(());
    }
    let closed = crate::epochs::close_open(db, None, crate::epochs::FOUND_AT_START)
        .await
        .context("closing epochs left open")?;
    if closed > 0 {
        tracing::warn!(epochs = closed, "closed epochs a previous run left open");
    }
    Ok(())
}

/// `/metrics` and `/health` until shutdown.
async fn serve_metrics(
    bind: SocketAddr,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    let http_addr = listener.local_addr()?;
    let _ = metrics.http_addr.set(http_addr);
    tracing::info!(addr = %http_addr, "metrics and health");
    let app = crate::metrics::router(metrics.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(())
}

/// Loads a venue's universe and starts its symbol tasks and connections.
async fn start_venue(
    cfg: &RunConfig,
    venue: Venue,
    db: &tokio_postgres::Client,
    writer: &Writer,
    metrics: &Arc<Metrics>,
    feed_stop: &CancellationToken,
) -> Result<(VenueManager, Vec<universe::Instrument>)> {
    let (rest_url, ws_url, weight) = match venue {
        Venue::Spot => (&cfg.spot_rest, &cfg.spot_ws, cfg.spot_weight_limit),
        Venue::Usdm => (&cfg.usdm_rest, &cfg.usdm_ws, cfg.usdm_weight_limit),
    };
    let rest = Arc::new(Rest::new(venue, rest_url, weight, metrics.clone()));
    let instruments = universe::load(&rest, db, &cfg.selection)
        .await
        .with_context(|| format!("loading the {} universe", venue.as_str()))?;
    tracing::info!(
        venue = venue.as_str(),
        symbols = instruments.len(),
        "collecting"
    );
    let snapshots = SnapshotQueue::start(rest.clone(), snapshot_limit, feed_stop.clone());
    let settings = VenueSettings {
        ws_base: ws_url.clone(),
        per_connection: cfg.streams_per_connection,
        lifetime: cfg.connection_lifetime,
        stale_after: cfg.stale_after,
        symbol: SymbolConfig {
            checkpoint_every: cfg.checkpoint_every,
            checkpoint_rows: cfg.checkpoint_rows,
            top_every: cfg.top_every,
            top_levels: cfg.top_levels,
        },
    };
    let m = VenueManager::new(
        venue,
        settings,
        rest,
        snapshots,
        writer.clone(),
        metrics.clone(),
        feed_stop.clone(),
    );
    Ok((m, instruments))
}

fn expected_books(managers: &[VenueManager]) -> usize {
    managers.iter().map(|m| m.symbols()).sum()
}

/// Health: is the database reachable? Checked every 5 s.
fn spawn_database_probe(url: String, metrics: Arc<Metrics>, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let probe = tokio::time::timeout(Duration::from_secs(5), pgconn::connect(&url));
            let ok = match probe.await {
                Ok(Ok((c, _conn))) => c.simple_query("SELECT 1").await.is_ok(),
                _ => false,
            };
            metrics.db_ok.store(ok, Ordering::Relaxed);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });
}

/// How often the storage sizes are measured (they change slowly; `hypertable_size` walks
/// every chunk).
const SIZES_EVERY: Duration = Duration::from_secs(60);

/// `maintain()`, unless another collector of the same database (`--shards`) is running it right
/// now: one at a time, the others skip that round (a transaction-scoped advisory lock).
const MAINTAIN_ONCE: &str = "SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext('depthbook maintain()'))
                                   THEN maintain() ELSE 'skipped: another collector is running it' END";

/// Housekeeping: maintain() applies retention on every path, gated by the verified archive
/// (`sql/0010_archive.sql`), and on plain PostgreSQL materializes the aggregates (TimescaleDB's
/// jobs do that there). Every `SIZES_EVERY` it also measures what each table takes and where its
/// hot tier starts, for the disk and archive alerts.
fn spawn_maintenance(url: String, every: Duration, metrics: Arc<Metrics>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sized: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (c, conn) = match pgconn::connect(&url).await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "maintenance skipped: database unreachable");
                    continue;
                }
            };
            match c.query_one(MAINTAIN_ONCE, &[]).await {
                Ok(r) => tracing::debug!(summary = r.get::<_, String>(0), "maintenance"),
                Err(e) => tracing::warn!(error = %e, "maintenance failed"),
            }
            if sized.is_none_or(|t| t.elapsed() >= SIZES_EVERY) {
                match measure_sizes(&c, &metrics).await {
                    Ok(()) => sized = Some(tokio::time::Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "measuring storage sizes failed"),
                }
            }
            drop(c);
            let _ = conn.await;
        }
    });
}

async fn measure_sizes(
    c: &tokio_postgres::Client,
    m: &Metrics,
) -> Result<(), tokio_postgres::Error> {
    for r in c
        .query(
            "SELECT relation, bytes, uncompressed_bytes FROM storage_sizes()",
            &[],
        )
        .await?
    {
        let relation: &str = r.get(0);
        m.storage_bytes.with_label_values(&[relation]).set(r.get(1));
        m.storage_uncompressed_bytes
            .with_label_values(&[relation])
            .set(r.get(2));
    }
    let blocked = measure_retention(c, m).await?;
    let total = c
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?;
    m.database_bytes.set(total.get(0));
    let warnings = crate::metrics::storage_warnings(
        &blocked,
        m.database_bytes.get(),
        m.database_disk_bytes.get(),
    );
    if let Ok(mut w) = m.warnings.lock() {
        *w = warnings;
    }
    Ok(())
}

/// Sets the retention gauges; returns the tables whose retention waits for files.
async fn measure_retention(
    c: &tokio_postgres::Client,
    m: &Metrics,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut blocked = Vec::new();
    let seconds = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or(0, |t| t.timestamp());
    for r in c
        .query(
            "SELECT relation, dropped_before, archived_before, blocked FROM retention_status()",
            &[],
        )
        .await?
    {
        let relation: &str = r.get(0);
        m.retention
            .hot_from_seconds
            .with_label_values(&[relation])
            .set(seconds(r.get(1)));
        m.retention
            .archived_before_seconds
            .with_label_values(&[relation])
            .set(seconds(r.get(2)));
        let waits = r.get::<_, bool>(3);
        m.retention
            .blocked
            .with_label_values(&[relation])
            .set(i64::from(waits));
        if waits {
            blocked.push(relation.to_owned());
        }
    }
    Ok(blocked)
}

/// Listings and delistings, picked up while running, until shutdown.
async fn follow_universe(
    cfg: &RunConfig,
    managers: &mut [VenueManager],
    metrics: &Metrics,
    shutdown: &CancellationToken,
    mut follow: Option<LeaseFollow>,
) {
    let mut refresh = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.universe_refresh,
        cfg.universe_refresh,
    );
    loop {
        let leases_moved = async {
            match follow.as_mut() {
                Some(f) => f.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = refresh.tick() => {}
            true = leases_moved => {
                if let Some(f) = follow.as_mut() {
                    let (assignment, leaving) = f.assignment();
                    let stopped = follow_leases(managers, &assignment, metrics);
                    f.drain(leaving, stopped);
                }
                continue;
            }
        }
        let (db, conn) = match pgconn::connect(&cfg.database_url).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "universe refresh skipped: database unreachable");
                continue;
            }
        };
        for m in managers.iter_mut() {
            let venue = m.venue.as_str();
            let refreshed = m.refresh(&db, &cfg.selection).await;
            // A delisted symbol's task ends on its own; nothing waits on it.
            m.take_stopped();
            match refreshed {
                Ok((0, 0)) => {}
                Ok((added, removed)) => tracing::info!(venue, added, removed, "universe changed"),
                Err(e) => {
                    tracing::warn!(venue, error = %e, "universe refresh failed; keeping the current symbols")
                }
            }
        }
        drop(db);
        let _ = conn.await;
        metrics
            .expected_books
            .store(expected_books(managers), Ordering::Relaxed);
    }
}

/// Starts the symbols of shards just taken, stops those of shards lost or leaving; returns
/// the stopped symbols' tasks (each token cancelled when its task has ended).
fn follow_leases(
    managers: &mut [VenueManager],
    assignment: &Assignment,
    metrics: &Metrics,
) -> Vec<CancellationToken> {
    let mut stopped = Vec::new();
    for m in managers.iter_mut() {
        let (added, removed) = m.assign(assignment.clone(), None);
        if added + removed > 0 {
            tracing::info!(venue = m.venue.as_str(), added, removed, "leases moved");
        }
        stopped.extend(m.take_stopped());
    }
    metrics
        .expected_books
        .store(expected_books(managers), Ordering::Relaxed);
    stopped
}

/// Waits for the writers to commit (or spool) what they hold, within `grace`.
async fn flush(writer_handles: Vec<tokio::task::JoinHandle<()>>, grace: Duration) -> Result<()> {
    let all = async {
        for h in writer_handles {
            let _ = h.await;
        }
    };
    if tokio::time::timeout(grace, all).await.is_err() {
        anyhow::bail!(
            "writers did not finish within {grace:?}; unwritten batches stay in the spool"
        );
    }
    tracing::info!("all rows flushed");
    Ok(())
}
