//! `ingest`: the collector binary. `run` collects (migrating first unless told not to),
//! `migrate` owns the schema, `maintain` runs the housekeeping once, `export` writes the
//! stored data out as Tardis-format CSV files.

mod cold_cmd;
mod daily_cmd;
mod export_cmd;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use schema::{Flavor, FlavorChoice, PolicyChange};
use tokio_postgres::Client;

#[derive(Debug, Parser)]
#[command(
    name = "ingest",
    version,
    about = "Binance market data into TimescaleDB / PostgreSQL"
)]
struct Cli {
    /// PostgreSQL connection URL (postgres://user:pass@host:port/db).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    log: String,

    /// Threads running the collector's tasks; 0 is one per CPU core. One (the default) is
    /// enough for hundreds of books at Binance's rates, and cheaper: a task woken by another
    /// never wakes a second thread, and one thread allocates from one malloc arena
    /// (bench/REPORT.md §13).
    #[arg(long, env = "INGEST_WORKER_THREADS", default_value_t = 1, global = true,
          value_parser = clap::value_parser!(u16).range(0..=256))]
    worker_threads: u16,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Collect market data until SIGTERM/SIGINT (then flush everything and exit 0).
    Run(Box<RunArgs>),
    /// Apply the schema migrations (safe to run concurrently and repeatedly).
    Migrate(MigrateArgs),
    /// Run the periodic housekeeping once: materialize aggregates (plain PostgreSQL) and apply
    /// retention.
    Maintain,
    /// Write stored data as Tardis-format CSV: one gzip file per venue, symbol, UTC day and
    /// data type (named as Tardis names them, with a .gaps.json beside book files), or stdout.
    Export(export_cmd::ExportArgs),
    /// Write the daily research set after each UTC midnight: every symbol collected that day,
    /// every type, with a manifest (rows, bytes, sha256, gaps), optionally to an S3 bucket.
    Daily(daily_cmd::DailyArgs),
    /// The book at an instant from the daily files, for times that have left the database
    /// (cold): DIR/YYYY-MM-DD/'s incremental_book_L2 file, or the bucket's.
    ColdBook(cold_cmd::ColdBookArgs),
    /// Exit 0 when URL answers 200 (container health checks: the images carry no curl).
    Healthcheck {
        #[arg(default_value = "http://127.0.0.1:9100/health")]
        url: String,
    },
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// Print which storage path applies and why, and what is applied and pending; change nothing.
    #[arg(long)]
    plan: bool,

    /// Storage path for a new database; an already migrated one keeps its recorded path.
    #[arg(long, env = "DEPTHBOOK_STORAGE", value_enum, default_value_t = StorageArg::Auto)]
    storage: StorageArg,

    /// Retention for a table, RELATION=INTERVAL ('none' keeps forever); repeatable, or
    /// comma-separated. E.g. --retention depth_updates=14d. With archiving (the default), a day
    /// past it leaves only once its daily files are verified.
    #[arg(
        long = "retention",
        env = "DEPTHBOOK_RETENTION",
        value_name = "RELATION=INTERVAL",
        value_delimiter = ','
    )]
    retention: Vec<String>,

    /// Compress a table's chunks after INTERVAL (TimescaleDB), RELATION=INTERVAL; repeatable.
    #[arg(long = "compress-after", value_name = "RELATION=INTERVAL")]
    compress_after: Vec<String>,

    /// Whether retention waits for a table's verified daily files (on, the default for depth,
    /// checkpoints, quotes, trades and mark prices) or drops at its retention without them
    /// (off), RELATION=on|off; repeatable.
    #[arg(long = "archive", value_name = "RELATION=on|off")]
    archive: Vec<String>,

    /// Read-only login roles to create or update, NAME:PASSWORD, comma-separated (the API's
    /// and Grafana's database users; members of depthbook_reader).
    #[arg(
        long = "reader-login",
        env = "DEPTHBOOK_READER_LOGINS",
        value_delimiter = ',',
        value_name = "NAME:PASSWORD",
        hide_env_values = true
    )]
    reader_logins: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Venues to collect.
    #[arg(
        long,
        env = "INGEST_VENUES",
        value_delimiter = ',',
        default_value = "spot,usdm"
    )]
    venues: Vec<String>,
    /// Pin these symbols (e.g. BTCUSDT,ETHUSDT) instead of the top N by volume.
    #[arg(long, env = "INGEST_SYMBOLS", value_delimiter = ',')]
    symbols: Vec<String>,
    /// Collect the N symbols with the highest 24 h quote volume (per venue).
    #[arg(long, env = "INGEST_TOP", default_value_t = 200)]
    top: usize,
    /// Only symbols quoted in this asset when choosing the top N.
    #[arg(long, env = "INGEST_QUOTE", default_value = "USDT")]
    quote: String,
    #[arg(
        long,
        env = "INGEST_SPOT_REST_URL",
        default_value = "https://api.binance.com"
    )]
    spot_rest_url: String,
    #[arg(
        long,
        env = "INGEST_SPOT_WS_URL",
        default_value = "wss://stream.binance.com:9443"
    )]
    spot_ws_url: String,
    #[arg(
        long,
        env = "INGEST_USDM_REST_URL",
        default_value = "https://fapi.binance.com"
    )]
    usdm_rest_url: String,
    #[arg(
        long,
        env = "INGEST_USDM_WS_URL",
        default_value = "wss://fstream.binance.com"
    )]
    usdm_ws_url: String,
    /// Streams per WebSocket connection (Binance allows 1024).
    #[arg(long, env = "INGEST_STREAMS_PER_CONNECTION", default_value_t = 300)]
    streams_per_connection: usize,
    /// Rotate connections after this many seconds (before Binance's 24 h cut).
    #[arg(long, env = "INGEST_CONNECTION_LIFETIME_SECS", default_value_t = 23 * 3600 + 30 * 60)]
    connection_lifetime_secs: u64,
    /// Reconnect a connection silent for this many seconds.
    #[arg(long, env = "INGEST_STALE_AFTER_SECS", default_value_t = 30)]
    stale_after_secs: u64,
    #[arg(long, env = "INGEST_SPOT_WEIGHT_LIMIT", default_value_t = binance::rules::SPOT_REQUEST_WEIGHT_PER_MINUTE)]
    spot_weight_limit: u32,
    #[arg(long, env = "INGEST_USDM_WEIGHT_LIMIT", default_value_t = binance::rules::USDM_REQUEST_WEIGHT_PER_MINUTE)]
    usdm_weight_limit: u32,
    /// Full-book checkpoint interval per symbol.
    #[arg(long, env = "INGEST_CHECKPOINT_SECS", default_value_t = 300)]
    checkpoint_secs: u64,
    /// Also checkpoint a symbol after this many depth rows since its last checkpoint (or two
    /// per level of that checkpoint, if more): bounds what `book_at` replays (its cost) for
    /// busy symbols; quiet ones keep the interval.
    #[arg(long, env = "INGEST_CHECKPOINT_ROWS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    checkpoint_rows: u64,
    /// Depth kept per tier, comma-separated TIER=N or TIER=all (tiers by 24 h volume rank:
    /// critical 1–20, high 21–60, medium 61–120, low 121+): a tier with N keeps only the best N
    /// levels of each side (every change inside that window, exactly; `book_at` answers those
    /// N levels); `all` keeps every level change. Tiers not named keep all.
    #[arg(
        long,
        env = "INGEST_DEPTH_LEVELS",
        value_delimiter = ',',
        default_value = "",
        value_parser = depth_item
    )]
    depth_levels: Vec<String>,
    /// book_top sampling interval.
    #[arg(long, env = "INGEST_BOOK_TOP_MS", default_value_t = 1000)]
    book_top_ms: u64,
    /// Levels per side in book_top.
    #[arg(long, env = "INGEST_BOOK_TOP_LEVELS", default_value_t = 20)]
    book_top_levels: usize,
    /// Rows per batch at most.
    #[arg(long, env = "INGEST_BATCH_ROWS", default_value_t = 5000)]
    batch_rows: usize,
    /// How long a batch waits for more rows after its first (at most 100). 0: pure group commit,
    /// a batch is what queued while the previous one committed. The default 2 ms bounds a busy
    /// table's commits to a few hundred a second under a steady stream (PostgreSQL's CPU halved
    /// at nominal load, latency lower: bench/REPORT.md §10).
    #[arg(long, env = "INGEST_BATCH_DELAY_MS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=100))]
    batch_delay_ms: u64,
    /// Rows queued per table before the streams are slowed down.
    #[arg(long, env = "INGEST_QUEUE_ROWS", default_value_t = 200_000)]
    queue_rows: usize,
    /// Where batches wait while the database is unreachable.
    #[arg(long, env = "INGEST_SPOOL_DIR", default_value = "./spool")]
    spool_dir: std::path::PathBuf,
    /// Prometheus /metrics and /health.
    #[arg(long, env = "INGEST_METRICS_BIND", default_value = "0.0.0.0:9100")]
    metrics_bind: std::net::SocketAddr,
    /// Do not apply migrations at start.
    #[arg(long, env = "INGEST_NO_MIGRATE")]
    no_migrate: bool,
    /// Reload the symbol universe (listings, delistings, volume ranking) this often.
    #[arg(long, env = "INGEST_UNIVERSE_REFRESH_SECS", default_value_t = 600)]
    universe_refresh_secs: u64,
    /// Run the database housekeeping (aggregates on plain PostgreSQL, retention) this often.
    #[arg(long, env = "INGEST_MAINTAIN_SECS", default_value_t = 10)]
    maintain_secs: u64,
    /// How long shutdown may take to flush.
    #[arg(long, env = "INGEST_SHUTDOWN_GRACE_SECS", default_value_t = 60)]
    shutdown_grace_secs: u64,
    /// The database's disk in GB (a managed database's plan), so an alert can say days before
    /// the database fills it; 0: unknown (the host's disk alerts cover a database on this host).
    #[arg(long, env = "DATABASE_DISK_GB", default_value_t = 0)]
    database_disk_gb: u64,
    /// Share the universe with other collectors: split it into this many shards, each
    /// collected by whichever collector holds its lease (every collector of one database needs
    /// the same count). 0: this collector takes every symbol, without leases.
    #[arg(long, env = "INGEST_SHARDS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1024))]
    shards: u32,
    /// How many collectors share the shards: each takes up to ⌈shards/instances⌉ at once;
    /// a shard left free for a lease round (a third of the TTL) is taken by any collector.
    #[arg(long, env = "INGEST_INSTANCES", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    instances: u32,
    /// A lease not renewed for this long is taken over by another collector; it is renewed
    /// every third of it.
    #[arg(long, env = "INGEST_LEASE_TTL_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(300..=600_000))]
    lease_ttl_ms: u64,
    /// This collector's name in `collector_leases` (default: the host's name).
    #[arg(long, env = "INGEST_COLLECTOR_NAME")]
    collector_name: Option<String>,
    /// Hot standby: also collect the shards other collectors hold, books synced and rows kept
    /// in memory, so taking one over continues its books' epochs with no gap.
    #[arg(long, env = "INGEST_STANDBY")]
    standby: bool,
    /// How long a standby symbol keeps its rows: a takeover continues a book only if this
    /// reaches back to the last row its previous holder committed (at least twice the lease
    /// TTL; more memory for more safety).
    #[arg(long, env = "INGEST_STANDBY_KEEP_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    standby_keep_secs: u64,
}

/// `--standby` needs leases, and a buffer that outlives a takeover.
fn check_standby(a: &RunArgs) -> Result<()> {
    if !a.standby {
        return Ok(());
    }
    if a.shards == 0 {
        anyhow::bail!("--standby stands by for shards other collectors hold: it needs --shards");
    }
    let keep_ms = a.standby_keep_secs.saturating_mul(1000);
    if keep_ms < 2 * a.lease_ttl_ms {
        anyhow::bail!(
            "--standby-keep-secs {} is shorter than two lease TTLs ({} ms): a takeover could \
             never continue a book",
            a.standby_keep_secs,
            2 * a.lease_ttl_ms
        );
    }
    Ok(())
}

/// `--shards` and its companions; `None` with `--shards 0`.
fn lease_config(a: &RunArgs) -> Option<ingest::lease::LeaseConfig> {
    let name = a
        .collector_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "ingest".into())
        });
    Some(ingest::lease::LeaseConfig {
        shards: (a.shards > 0).then_some(a.shards)?,
        instances: a.instances,
        ttl: std::time::Duration::from_millis(a.lease_ttl_ms),
        name,
        standby: a
            .standby
            .then(|| std::time::Duration::from_secs(a.standby_keep_secs)),
    })
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StorageArg {
    /// TimescaleDB when the extension can be created, else plain PostgreSQL.
    Auto,
    /// Require TimescaleDB's community edition (compression, jobs, continuous aggregates).
    Timescaledb,
    /// Require TimescaleDB's Apache-2 edition (hypertables; no compression or jobs).
    TimescaledbApache,
    /// Plain PostgreSQL even where TimescaleDB is available.
    Postgres,
}

impl From<StorageArg> for FlavorChoice {
    fn from(s: StorageArg) -> Self {
        match s {
            StorageArg::Auto => FlavorChoice::Auto,
            StorageArg::Timescaledb => FlavorChoice::Require(Flavor::Timescale),
            StorageArg::TimescaledbApache => FlavorChoice::Require(Flavor::TimescaleApache),
            StorageArg::Postgres => FlavorChoice::Require(Flavor::Postgres),
        }
    }
}

async fn connect(url: Option<&str>) -> Result<Client> {
    let url = url.context("no database: pass --database-url or set DATABASE_URL")?;
    let (client, _conn) = pgconn::connect(url)
        .await
        .context("connecting to the database")?;
    Ok(client)
}

/// One `--depth-levels` item, checked as the command line is read (not after connecting).
fn depth_item(s: &str) -> Result<String, ingest::universe::DepthLevelsError> {
    ingest::universe::DepthLevels::parse(&[s]).map(|_| s.to_owned())
}

fn policy_changes(args: &MigrateArgs) -> Result<Vec<PolicyChange>> {
    let mut out = Vec::new();
    // Compose passes an unset variable as "".
    for s in args.retention.iter().filter(|s| !s.trim().is_empty()) {
        let (relation, after) = PolicyChange::parse_pair(s)?;
        out.push(PolicyChange::Retention { relation, after });
    }
    for s in &args.compress_after {
        let (relation, after) = PolicyChange::parse_pair(s)?;
        out.push(PolicyChange::Compression { relation, after });
    }
    for s in &args.archive {
        out.push(PolicyChange::parse_archive(s)?);
    }
    Ok(out)
}

async fn migrate(client: &mut Client, args: &MigrateArgs) -> Result<()> {
    let choice = FlavorChoice::from(args.storage);
    let changes = policy_changes(args)?;
    if args.plan {
        let plan = schema::plan(client, choice).await?;
        print!("{plan}");
        if !changes.is_empty() {
            println!("policy changes (not applied with --plan): {changes:?}");
        }
        return Ok(());
    }
    let report = schema::apply(client, choice).await?;
    println!("path: {} ({})", report.plan.flavor, report.plan.reason);
    for (file, ms) in &report.applied_now {
        println!("applied {file} in {ms} ms");
    }
    if report.applied_now.is_empty() {
        println!("up to date");
    }
    if !changes.is_empty() {
        schema::set_policies(client, &changes).await?;
        println!("storage policies updated");
    }
    for login in args.reader_logins.iter().filter(|l| !l.trim().is_empty()) {
        let (name, password) = login
            .split_once(':')
            .context("--reader-login takes NAME:PASSWORD")?;
        schema::ensure_reader_login(client, name.trim(), password).await?;
        println!("reader login {} ready", name.trim());
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    runtime(cli.worker_threads)?.block_on(start(cli))
}

/// The async runtime `--worker-threads` asks for.
fn runtime(threads: u16) -> Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(usize::from(threads));
    }
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn start(cli: Cli) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("bad --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    if let Command::Run(args) = &cli.command {
        return run(cli.database_url.as_deref(), args).await;
    }
    if let Command::Daily(args) = &cli.command {
        return daily_cmd::run(cli.database_url.as_deref(), args).await;
    }
    if let Command::ColdBook(args) = &cli.command {
        return cold_cmd::run(args).await;
    }
    if let Command::Healthcheck { url } = &cli.command {
        let resp = reqwest::Client::new()
            .get(url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        anyhow::ensure!(resp.status().is_success(), "{url}: HTTP {}", resp.status());
        return Ok(());
    }
    let mut client = connect(cli.database_url.as_deref()).await?;
    match &cli.command {
        Command::Run(_)
        | Command::Healthcheck { .. }
        | Command::Daily(_)
        | Command::ColdBook(_) => Ok(()),
        Command::Migrate(args) => migrate(&mut client, args).await,
        Command::Maintain => {
            let row = client
                .query_one("SELECT maintain()", &[])
                .await
                .context("maintain() failed (is the database migrated?)")?;
            println!("{}", row.get::<_, String>(0));
            Ok(())
        }
        Command::Export(args) => export_cmd::run(&client, args).await,
    }
}

async fn run(url: Option<&str>, a: &RunArgs) -> Result<()> {
    let url = url
        .context("no database: pass --database-url or set DATABASE_URL")?
        .to_owned();
    check_standby(a)?;
    if !a.no_migrate {
        let mut client = connect(Some(&url)).await?;
        let report = schema::apply(&mut client, FlavorChoice::Auto).await?;
        tracing::info!(path = %report.plan.flavor, applied = report.applied_now.len(), "schema ready");
    }
    let venues = a
        .venues
        .iter()
        .map(|v| export_cmd::venue(v))
        .collect::<Result<Vec<_>>>()?;
    let symbols: Vec<String> = a
        .symbols
        .iter()
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect();
    let cfg = ingest::run::RunConfig {
        database_url: url,
        venues,
        spot_rest: a.spot_rest_url.clone(),
        spot_ws: a.spot_ws_url.clone(),
        usdm_rest: a.usdm_rest_url.clone(),
        usdm_ws: a.usdm_ws_url.clone(),
        selection: ingest::universe::Selection {
            symbols: (!symbols.is_empty()).then_some(symbols),
            top: a.top,
            quote: Some(a.quote.clone()),
            depth_levels: ingest::universe::DepthLevels::parse(&a.depth_levels)
                .context("--depth-levels")?,
        },
        streams_per_connection: a.streams_per_connection,
        connection_lifetime: std::time::Duration::from_secs(a.connection_lifetime_secs),
        stale_after: std::time::Duration::from_secs(a.stale_after_secs),
        spot_weight_limit: a.spot_weight_limit,
        usdm_weight_limit: a.usdm_weight_limit,
        checkpoint_every: std::time::Duration::from_secs(a.checkpoint_secs),
        checkpoint_rows: a.checkpoint_rows as usize,
        top_every: std::time::Duration::from_millis(a.book_top_ms),
        top_levels: a.book_top_levels,
        batch_rows: a.batch_rows,
        batch_delay: std::time::Duration::from_millis(a.batch_delay_ms),
        queue_rows: a.queue_rows,
        spool_dir: a.spool_dir.clone(),
        metrics_bind: a.metrics_bind,
        shutdown_grace: std::time::Duration::from_secs(a.shutdown_grace_secs),
        universe_refresh: std::time::Duration::from_secs(a.universe_refresh_secs.max(1)),
        maintain_every: std::time::Duration::from_secs(a.maintain_secs.max(1)),
        leases: lease_config(a),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    let metrics = ingest::metrics::Metrics::new();
    metrics
        .database_disk_bytes
        .set(i64::try_from(a.database_disk_gb.saturating_mul(1 << 30)).unwrap_or(i64::MAX));
    ingest::run::run(cfg, metrics, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::{runtime, Cli};
    use clap::Parser;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn the_collector_runs_on_one_thread_unless_told_otherwise() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.worker_threads).ok();
        assert_eq!(parse(&["ingest", "maintain"]), Some(1));
        assert_eq!(
            parse(&["ingest", "maintain", "--worker-threads", "0"]),
            Some(0)
        );
        assert_eq!(
            parse(&["ingest", "--worker-threads", "4", "maintain"]),
            Some(4)
        );
        assert_eq!(
            parse(&["ingest", "maintain", "--worker-threads", "300"]),
            None
        );
    }

    #[test]
    fn one_worker_thread_is_a_current_thread_runtime() {
        let rt = runtime(1).expect("runtime");
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        assert_eq!(
            rt.block_on(async { tokio::spawn(async { 7 }).await }).ok(),
            Some(7)
        );
    }

    #[test]
    fn several_worker_threads_are_as_many_workers() {
        let rt = runtime(3).expect("runtime");
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(rt.metrics().num_workers(), 3);
    }

    #[test]
    fn zero_worker_threads_is_one_per_core() {
        let rt = runtime(0).expect("runtime");
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(rt.metrics().num_workers(), cores);
    }
}
