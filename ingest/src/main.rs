//! `ingest`: the collector binary. Today it owns the database schema (`migrate`) and its
//! housekeeping (`maintain`); collection itself is being built in the ingest issue.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use schema::{Flavor, FlavorChoice, PolicyChange};
use tokio_postgres::{Client, NoTls};

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

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the schema migrations (safe to run concurrently and repeatedly).
    Migrate(MigrateArgs),
    /// Run the periodic housekeeping once: materialize aggregates (plain PostgreSQL) and apply
    /// retention.
    Maintain,
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// Print which storage path applies and why, and what is applied and pending; change nothing.
    #[arg(long)]
    plan: bool,

    /// Storage path for a new database; an already migrated one keeps its recorded path.
    #[arg(long, env = "DEPTHBOOK_STORAGE", value_enum, default_value_t = StorageArg::Auto)]
    storage: StorageArg,

    /// Retention for a table, RELATION=INTERVAL ('none' keeps forever); repeatable.
    /// E.g. --retention depth_updates=14d
    #[arg(long = "retention", value_name = "RELATION=INTERVAL")]
    retention: Vec<String>,

    /// Compress a table's chunks after INTERVAL (TimescaleDB), RELATION=INTERVAL; repeatable.
    #[arg(long = "compress-after", value_name = "RELATION=INTERVAL")]
    compress_after: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StorageArg {
    /// TimescaleDB when the extension can be created, else plain PostgreSQL.
    Auto,
    /// Require TimescaleDB.
    Timescaledb,
    /// Plain PostgreSQL even where TimescaleDB is available.
    Postgres,
}

impl From<StorageArg> for FlavorChoice {
    fn from(s: StorageArg) -> Self {
        match s {
            StorageArg::Auto => FlavorChoice::Auto,
            StorageArg::Timescaledb => FlavorChoice::Require(Flavor::Timescale),
            StorageArg::Postgres => FlavorChoice::Require(Flavor::Postgres),
        }
    }
}

async fn connect(url: Option<&str>) -> Result<Client> {
    let url = url.context("no database: pass --database-url or set DATABASE_URL")?;
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to the database")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::error!(error = %e, "database connection lost");
        }
    });
    Ok(client)
}

fn policy_changes(args: &MigrateArgs) -> Result<Vec<PolicyChange>> {
    let mut out = Vec::new();
    for s in &args.retention {
        let (relation, after) = PolicyChange::parse_pair(s)?;
        out.push(PolicyChange::Retention { relation, after });
    }
    for s in &args.compress_after {
        let (relation, after) = PolicyChange::parse_pair(s)?;
        out.push(PolicyChange::Compression { relation, after });
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
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("bad --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let mut client = connect(cli.database_url.as_deref()).await?;
    match &cli.command {
        Command::Migrate(args) => migrate(&mut client, args).await,
        Command::Maintain => {
            let row = client
                .query_one("SELECT maintain()", &[])
                .await
                .context("maintain() failed (is the database migrated?)")?;
            println!("{}", row.get::<_, String>(0));
            Ok(())
        }
    }
}
