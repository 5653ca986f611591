//! Ingest throughput: the simulator at increasing rates until ingest falls behind, and beside
//! each step the raw ceiling, the same rows loaded again by a plain COPY into the same tables.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use binance::Venue;
use futures_util::{SinkExt, StreamExt};
use sim::{Sim, SimConfig};

use crate::measure::{self, Latency};
use crate::procstat::CpuWindow;
use crate::stack::{self, IngestArgs, IngestCounters, Server};
use crate::Plan;

/// Behind: event→commit p99 above this, or any dropped row or gap, ends the ladder.
pub const BEHIND_P99_MS: f64 = 1000.0;

/// How long a step may take to sync every book (seconds at the rates that can be kept up).
const TP_SYNC_DEADLINE: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Default)]
pub struct Step {
    pub multiplier: f64,
    pub symbols: usize,
    pub messages_per_sec: f64,
    pub rows_per_sec: f64,
    pub depth_rows_per_sec: f64,
    pub depth_latency: Latency,
    pub dropped_rows: f64,
    pub gaps: f64,
    /// Connections lost (the simulator cuts a consumer that falls a buffer behind, as Binance
    /// does).
    pub reconnects: f64,
    /// Consumers the simulator cut for falling behind over the whole step: the frames it lost.
    pub sim_cut: u64,
    /// Every book synced before the window (a rate too high for that is falling behind too).
    pub synced: bool,
    pub cpu_ingest: f64,
    pub cpu_postgres: Option<f64>,
    pub cpu_sim: f64,
    pub kept_up: bool,
    pub ceiling: Ceiling,
}

/// The same rows, loaded by plain COPY (one connection per table, in parallel, as ingest's
/// writers are, but one transaction per table instead of ingest's group commits).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ceiling {
    pub rows: u64,
    pub secs: f64,
    pub rows_per_sec: f64,
}

impl Step {
    /// Ingest's CPU time per million messages received (the collector's cost per message).
    pub fn cpu_seconds_per_million(&self) -> f64 {
        if self.messages_per_sec <= 0.0 {
            return 0.0;
        }
        self.cpu_ingest / 100.0 / self.messages_per_sec * 1e6
    }

    /// No row dropped, no gap, no frame lost by the simulator, every book synced and depth
    /// committed in time.
    fn keeps_up(&self) -> bool {
        self.synced
            && self.dropped_rows == 0.0
            && self.gaps == 0.0
            && self.sim_cut == 0
            && self.depth_latency.p99 <= BEHIND_P99_MS
    }

    pub fn ratio(&self) -> f64 {
        self.rows_per_sec / self.ceiling.rows_per_sec.max(1e-9)
    }
}

pub async fn run(server: &Server, plan: &Plan, bin_dir: &Path, work: &Path) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for &m in &plan.ladder {
        tracing::info!(multiplier = m, "throughput step");
        let step = one_step(server, plan, bin_dir, work, m)
            .await
            .with_context(|| format!("throughput step x{m}"))?;
        tracing::info!(?step, "throughput step done");
        let kept_up = step.kept_up;
        steps.push(step);
        if !kept_up {
            break;
        }
    }
    Ok(steps)
}

async fn one_step(
    server: &Server,
    plan: &Plan,
    bin_dir: &Path,
    work: &Path,
    multiplier: f64,
) -> Result<Step> {
    let name = "bench_throughput";
    let url = server.fresh_database(name).await?;
    let sim = Sim::start(SimConfig {
        seed: 7,
        spot: Some(stack::sim_venue(Venue::Spot, plan.tp_symbols, multiplier)),
        usdm: None,
    })
    .await?;
    let spot = sim.spot.as_ref().context("spot venue")?;
    let mut ingest = stack::spawn_ingest(
        bin_dir,
        &IngestArgs {
            database_url: url.clone(),
            venues: vec![(Venue::Spot, spot.rest_url(), spot.ws_url())],
            top: plan.tp_symbols,
            extra: plan.ingest_args.clone(),
        },
        work,
    )?;
    let http = reqwest::Client::new();
    let addr = ingest.addr;
    // A rate ingest cannot sync at is a result, not an error: measure the window anyway.
    let synced = match stack::wait_synced(&http, &mut ingest, plan.tp_symbols, TP_SYNC_DEADLINE)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "not every book synced; measuring the step as fallen behind");
            false
        }
    };
    tokio::time::sleep(plan.warmup).await;

    let db = stack::connect(&url).await?;
    let before = IngestCounters::scrape(&http, addr).await?;
    let cpu_ingest = CpuWindow::start(ingest.pid, false)?;
    let cpu_pg = server
        .postmaster_pid
        .map(|p| CpuWindow::start(p, true))
        .transpose()?;
    let cpu_sim = CpuWindow::start(std::process::id() as i32, false)?;
    let t0 = measure::db_now(&db).await?;
    tokio::time::sleep(plan.tp_window).await;
    let t1 = measure::db_now(&db).await?;
    let counted = IngestCounters::scrape(&http, addr).await?.since(&before);
    let (cpu_ingest, cpu_sim) = (cpu_ingest.percent()?, cpu_sim.percent()?);
    let cpu_postgres = cpu_pg.map(|c| c.percent()).transpose()?;
    ingest.stop().await?;
    let sim_cut = stack::consumers_cut(&sim);
    sim.shutdown();
    let secs = t1 - t0;
    let committed = measure::committed_rows(&db, t0, t1).await?;
    let rows: i64 = committed.iter().map(|c| c.1).sum();
    let depth = committed.iter().find(|c| c.0 == "depth_updates");
    let depth_rows = depth.map_or(0, |c| c.1);
    let depth_latency = measure::latency(&db, &["depth_updates"], t0, t1).await?;
    let ceiling = ceiling(&db, &url, t0, t1).await?;
    drop(db);
    server.drop_database(name).await?;
    let mut step = Step {
        multiplier,
        symbols: plan.tp_symbols,
        messages_per_sec: counted.messages / secs,
        rows_per_sec: rows as f64 / secs,
        depth_rows_per_sec: depth_rows as f64 / secs,
        depth_latency,
        dropped_rows: counted.dropped_rows,
        gaps: counted.gaps,
        reconnects: counted.reconnects,
        sim_cut,
        synced,
        cpu_ingest,
        cpu_postgres,
        cpu_sim,
        kept_up: false,
        ceiling,
    };
    step.kept_up = step.keeps_up();
    Ok(step)
}

/// Exports what ingest committed in the window (every table, exactly its rows, found by the
/// ledger's `xmin`) and times loading it again with `COPY ... FROM STDIN (FORMAT binary)`.
async fn ceiling(db: &tokio_postgres::Client, url: &str, t0: f64, t1: f64) -> Result<Ceiling> {
    let mut exports = Vec::new();
    for table in measure::EVENT_TABLES {
        let sql = format!(
            "COPY (SELECT t.* FROM {table} t JOIN ingest_batches b ON t.xmin = b.xmin
                   WHERE b.relation = '{table}'
                     AND b.committed_at >= to_timestamp({t0}) AND b.committed_at < to_timestamp({t1}))
             TO STDOUT (FORMAT binary)"
        );
        let stream = db.copy_out(&sql).await.context("export")?;
        futures_util::pin_mut!(stream);
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        let rows: i64 = db
            .query_one(
                &format!(
                    "SELECT coalesce(sum(rows), 0)::int8 FROM ingest_batches WHERE relation = '{table}'
                     AND committed_at >= to_timestamp({t0}) AND committed_at < to_timestamp({t1})"
                ),
                &[],
            )
            .await?
            .get(0);
        exports.push((table, bytes, rows as u64));
    }
    // Connections are opened before the clock starts, as ingest's writers hold theirs.
    let mut clients = Vec::new();
    for _ in &exports {
        clients.push(stack::connect(url).await?);
    }
    let started = Instant::now();
    let mut loads = Vec::new();
    for ((table, bytes, _), mut client) in exports.iter().cloned().zip(clients) {
        loads.push(tokio::spawn(async move {
            let tx = client.transaction().await?;
            let sink = tx
                .copy_in(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
                .await?;
            futures_util::pin_mut!(sink);
            sink.send(bytes::Bytes::from(bytes)).await?;
            sink.finish().await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for l in loads {
        l.await?.context("COPY")?;
    }
    let secs = started.elapsed().as_secs_f64();
    let rows: u64 = exports.iter().map(|e| e.2).sum();
    Ok(Ceiling {
        rows,
        secs,
        rows_per_sec: rows as f64 / secs.max(1e-9),
    })
}
