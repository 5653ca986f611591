//! `depthbook-bench`: measures ingest, storage and the API against the simulator on this machine
//! and writes a report (`bench/REPORT.md`). `bench/run.sh` builds everything and runs it;
//! `--smoke` runs every part at tiny sizes so CI keeps the harness working (its numbers mean
//! nothing and nothing is asserted about them).

mod coldsync;
mod export;
mod fanout;
mod flatout;
mod measure;
mod narrow;
mod nominal;
mod procstat;
mod queries;
mod report;
mod shards;
mod sizing;
mod stack;
mod standby;
mod throughput;
mod windows;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "depthbook benchmarks: writes a report with every number"
)]
struct Cli {
    /// Tiny sizes, every part once: keeps the harness from rotting (CI).
    #[arg(long, env = "BENCH_SMOKE")]
    smoke: bool,

    /// Where the report goes.
    #[arg(long, env = "BENCH_OUT", default_value = "bench/REPORT.md")]
    out: PathBuf,

    /// Directory holding the `ingest` and `graphql` binaries (default: beside this one, so the
    /// same build profile).
    #[arg(long, env = "BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,

    /// Criterion's output directory (the parse benchmark's results are read from it).
    #[arg(long, env = "BENCH_CRITERION_DIR")]
    criterion_dir: Option<PathBuf>,

    /// An existing PostgreSQL server (superuser URL) instead of a private one, e.g. one with
    /// TimescaleDB. Databases named bench_* are created and dropped on it.
    #[arg(long, env = "BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Storage path: postgres, timescaledb or timescaledb-apache (default: timescaledb where it
    /// is installed, else postgres). A TimescaleDB path this machine lacks is reported as
    /// skipped and the run exits 0.
    #[arg(long, env = "BENCH_STORAGE", value_parser = parse_storage)]
    storage: Option<schema::Flavor>,

    /// Symbols per venue at nominal load.
    #[arg(long, env = "BENCH_NOMINAL_SYMBOLS")]
    nominal_symbols: Option<usize>,

    /// Subscribers in the fan-out test.
    #[arg(long, env = "BENCH_FANOUT_CLIENTS")]
    fanout_clients: Option<usize>,

    /// Rate multipliers of the throughput ladder (stops at the first step ingest falls behind).
    #[arg(long, env = "BENCH_LADDER", value_delimiter = ',')]
    ladder: Option<Vec<f64>>,

    /// Parts to run.
    #[arg(
        long,
        env = "BENCH_PARTS",
        value_delimiter = ',',
        default_value = "throughput,nominal,coldsync,flatout,parse,sizing,shards,standby"
    )]
    parts: Vec<Part>,

    /// Extra `ingest run` flag for every ingest started, as NAME=VALUE (repeatable), e.g.
    /// `streams-per-connection=30`: to see what a setting changes. Defaults otherwise.
    #[arg(long = "ingest-arg", value_name = "NAME=VALUE", value_parser = parse_kv)]
    ingest_args: Vec<(String, String)>,

    /// Keep the nominal database and the work directory (logs of ingest and graphql).
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Throughput,
    Nominal,
    Parse,
    Sizing,
    /// Several collectors by lease: per-process cost and takeover times.
    Shards,
    /// Two collectors standing by for each other (`--standby`): cost, and a `kill -9`.
    Standby,
    /// A fresh collector syncing every book under Binance's REST budgets.
    Coldsync,
    /// The real recordings replayed flat out.
    Flatout,
}

fn parse_storage(s: &str) -> Result<schema::Flavor, String> {
    schema::Flavor::parse(s).ok_or_else(|| {
        format!("unknown storage path {s:?}: postgres, timescaledb or timescaledb-apache")
    })
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim_start_matches("--").to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

/// Sizes and durations of one run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub smoke: bool,
    pub tp_symbols: usize,
    pub ladder: Vec<f64>,
    pub tp_window: Duration,
    pub warmup: Duration,
    pub sync_deadline: Duration,
    pub nominal_symbols: usize,
    pub nominal_window: Duration,
    pub nominal_subscribers: usize,
    pub fanout_clients: usize,
    pub fanout_window: Duration,
    pub query_samples: usize,
    pub query_repeat: usize,
    pub synthetic_trades_per_sec: u32,
    /// Symbols per venue and `ingest` processes of the several-collectors part, its window.
    pub shard_symbols: usize,
    pub shard_processes: usize,
    pub shard_window: Duration,
    pub keep: bool,
    pub ingest_args: Vec<(String, String)>,
}

impl Plan {
    fn new(cli: &Cli) -> Plan {
        let s = Duration::from_secs;
        let mut p = if cli.smoke {
            Plan {
                smoke: true,
                tp_symbols: 2,
                ladder: vec![1.0],
                tp_window: s(2),
                warmup: s(1),
                sync_deadline: s(120),
                nominal_symbols: 3,
                nominal_window: s(2),
                nominal_subscribers: 2,
                fanout_clients: 5,
                fanout_window: s(2),
                query_samples: 3,
                query_repeat: 1,
                synthetic_trades_per_sec: 1,
                shard_symbols: 4,
                // One is killed, one stopped: a third is left to take over.
                shard_processes: 3,
                shard_window: s(2),
                keep: cli.keep,
                ingest_args: vec![],
            }
        } else {
            Plan {
                smoke: false,
                tp_symbols: 100,
                ladder: vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
                tp_window: s(20),
                warmup: s(5),
                sync_deadline: s(600),
                nominal_symbols: 200,
                nominal_window: s(60),
                nominal_subscribers: 10,
                fanout_clients: 1000,
                fanout_window: s(30),
                query_samples: 50,
                query_repeat: 5,
                synthetic_trades_per_sec: 20,
                shard_symbols: 1000,
                shard_processes: 4,
                shard_window: s(30),
                keep: cli.keep,
                ingest_args: vec![],
            }
        };
        if let Some(n) = cli.nominal_symbols {
            p.nominal_symbols = n;
        }
        if let Some(n) = cli.fanout_clients {
            p.fanout_clients = n;
        }
        if let Some(l) = &cli.ladder {
            p.ladder = l.clone();
        }
        p.ingest_args = cli.ingest_args.clone();
        p
    }
}

/// 1000 subscribers need more descriptors than the usual soft limit of 1024; the children
/// (graphql) inherit the raised limit.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid, initialized struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The parts asked for, into `r`.
async fn run_parts(
    cli: &Cli,
    plan: &Plan,
    server: &stack::Server,
    bin_dir: &std::path::Path,
    work: &std::path::Path,
    r: &mut report::Report,
) -> Result<()> {
    if cli.parts.contains(&Part::Throughput) {
        r.throughput = Some(throughput::run(server, plan, bin_dir, work).await?);
    }
    if cli.parts.contains(&Part::Nominal) {
        r.nominal = Some(
            nominal::run(server, plan, bin_dir, work)
                .await
                .context("nominal load")?,
        );
    }
    if cli.parts.contains(&Part::Coldsync) {
        r.coldsync = Some(
            coldsync::run(server, plan, bin_dir, work)
                .await
                .context("cold sync")?,
        );
    }
    if cli.parts.contains(&Part::Flatout) {
        r.flatout = flatout::run(server, plan, bin_dir, work)
            .await
            .context("real recordings, flat out")?;
    }
    if cli.parts.contains(&Part::Sizing) {
        r.sizing = sizing::run(server, bin_dir, work).await.context("sizing")?;
    }
    if cli.parts.contains(&Part::Shards) {
        r.shards = Some(
            shards::run(server, plan, bin_dir, work)
                .await
                .context("several collectors")?,
        );
    }
    if cli.parts.contains(&Part::Standby) {
        r.standby = Some(
            standby::run(server, plan, bin_dir, work)
                .await
                .context("hot standby")?,
        );
    }
    if cli.parts.contains(&Part::Parse) {
        let criterion_dir = cli
            .criterion_dir
            .clone()
            .unwrap_or_else(|| bin_dir.join("../criterion"));
        r.parse = report::read_criterion(&criterion_dir);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "depthbook_bench=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let plan = Plan::new(&cli);
    raise_fd_limit();
    let exe = std::env::current_exe().context("locating this binary")?;
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => exe.parent().context("binary directory")?.to_owned(),
    };
    for b in ["ingest", "graphql"] {
        if !bin_dir.join(b).is_file() {
            bail!(
                "{} not found: build it first (`cargo build --release -p ingest -p graphql`, or run bench/run.sh)",
                bin_dir.join(b).display()
            );
        }
    }
    let work = tempfile::Builder::new()
        .prefix("depthbook-bench-")
        .tempdir()
        .context("work directory")?;
    let installed = pgembed::Binaries::locate().is_ok_and(|b| b.timescaledb);
    let storage = cli.storage.unwrap_or(if installed {
        schema::Flavor::Timescale
    } else {
        schema::Flavor::Postgres
    });
    if storage.hypertables() && !installed && cli.database_url.is_none() {
        println!("skipped: storage path {storage}: timescaledb is not installed for this machine's PostgreSQL");
        return Ok(());
    }
    tracing::info!(%storage, "storage path");
    let server = stack::Server::start(cli.database_url.clone(), storage).await?;
    let mut r = report::Report {
        machine: report::Machine::read(&server).await?,
        plan: plan.clone(),
        ..Default::default()
    };
    run_parts(&cli, &plan, &server, &bin_dir, work.path(), &mut r).await?;
    let text = r.render();
    if let Some(dir) = cli.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cli.out, text).with_context(|| format!("writing {}", cli.out.display()))?;
    tracing::info!(out = %cli.out.display(), "report written");
    if plan.keep {
        tracing::info!(dir = %work.keep().display(), "work directory kept");
    }
    Ok(())
}
