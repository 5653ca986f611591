//! `graphql`: serve depthbook's API until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use graphql::api::Limits;
use graphql::{live::Hub, AppState, Metrics};

#[derive(Debug, Parser)]
#[command(name = "graphql", version, about = "depthbook's GraphQL and REST API")]
struct Cli {
    /// Database URL of a read-only login role (a member of depthbook_reader).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// A read replica (a streaming hot standby of the same database) for every query; the live
    /// subscriptions still LISTEN on `--database-url`, where ingest's NOTIFY happens. Empty: the
    /// queries go to `--database-url` too.
    #[arg(long, env = "API_READ_DATABASE_URL", hide_env_values = true)]
    read_database_url: Option<String>,
    #[arg(long, env = "API_BIND", default_value = "0.0.0.0:8080")]
    bind: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on /graphql, /data and /stats.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Allowed CORS origins (comma-separated, `*` for any; none by default).
    #[arg(long, env = "API_CORS_ORIGINS", value_delimiter = ',')]
    cors: Vec<String>,
    /// Rows per page at most (GraphQL `first`, REST `limit`).
    #[arg(long, env = "API_MAX_PAGE", default_value_t = 1000)]
    max_page: i32,
    /// Widest time range a query may ask for, in seconds.
    #[arg(long, env = "API_MAX_RANGE_SECS", default_value_t = 7 * 86_400)]
    max_range_secs: u64,
    /// Deepest book a query may ask for.
    #[arg(long, env = "API_MAX_DEPTH", default_value_t = 5000)]
    max_depth: i32,
    /// Database connections.
    #[arg(long, env = "API_POOL_SIZE", default_value_t = 16)]
    pool_size: u32,
    /// Export downloads at once (each holds one pooled connection while its client reads).
    #[arg(long, env = "API_MAX_EXPORTS", default_value_t = 4)]
    max_exports: usize,
    /// /health reports stale when ingest committed nothing for this many seconds.
    #[arg(long, env = "API_FRESH_WITHIN_SECS", default_value_t = 60)]
    fresh_within_secs: u64,
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("bad --log filter")?,
        )
        .init();
    let listen = pgconn::manager(&cli.database_url).context("DATABASE_URL")?;
    let manager = match cli.read_database_url.as_deref() {
        Some(url) if !url.is_empty() => pgconn::manager(url).context("API_READ_DATABASE_URL")?,
        _ => listen,
    };
    let pool = bb8::Pool::builder()
        .max_size(cli.pool_size)
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(manager);
    let hub = Hub::default();
    tokio::spawn(hub.clone().run(cli.database_url.clone()));
    let limits = Limits {
        max_page: cli.max_page,
        max_range: Duration::from_secs(cli.max_range_secs),
        max_depth: cli.max_depth,
    };
    let state = AppState {
        schema: graphql::api::build(pool.clone(), hub, limits.clone()),
        pool,
        limits,
        metrics: Metrics::new(),
        token: cli.token.filter(|t| !t.is_empty()),
        fresh_within: Duration::from_secs(cli.fresh_within_secs),
        exports: std::sync::Arc::new(tokio::sync::Semaphore::new(cli.max_exports)),
        max_exports: cli.max_exports,
    };
    let app = graphql::router(state, &cli.cors);
    let listener = tokio::net::TcpListener::bind(cli.bind)
        .await
        .with_context(|| format!("binding {}", cli.bind))?;
    tracing::info!(addr = %cli.bind, "serving GraphQL at /graphql, GraphiQL at /");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    Ok(())
}
