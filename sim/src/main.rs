//! `sim`: run the Binance simulator until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use binance::Venue;
use clap::Parser;
use sim::{Sim, SimConfig, VenueConfig};

#[derive(Debug, Parser)]
#[command(
    name = "sim",
    version,
    about = "Binance market-data simulator (WebSocket streams + REST) with fault injection"
)]
struct Cli {
    /// Seed of the market generator: the same seed gives the same market.
    #[arg(long, env = "SIM_SEED", default_value_t = 42)]
    seed: u64,
    /// Venues to serve.
    #[arg(
        long,
        env = "SIM_VENUES",
        value_delimiter = ',',
        default_value = "spot,usdm"
    )]
    venues: Vec<String>,
    /// Spot listen address (REST + WebSocket + /_control).
    #[arg(long, env = "SIM_SPOT_BIND", default_value = "127.0.0.1:18080")]
    spot_bind: SocketAddr,
    /// USD-M listen address.
    #[arg(long, env = "SIM_USDM_BIND", default_value = "127.0.0.1:18081")]
    usdm_bind: SocketAddr,
    /// Generated symbols per venue.
    #[arg(long, env = "SIM_SYMBOLS", default_value_t = 10)]
    symbols: usize,
    /// Book levels per side.
    #[arg(long, env = "SIM_LEVELS", default_value_t = 2000)]
    levels: usize,
    /// Mean level changes per depth event of the busiest symbol.
    #[arg(long, env = "SIM_CHANGES_PER_EVENT", default_value_t = 12.0)]
    changes_per_event: f64,
    /// Trades and ticker changes are generated and sent every this many milliseconds, as they
    /// happen; depth events gather the level changes every 100 ms.
    #[arg(long, env = "SIM_PUBLISH_INTERVAL_MS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    publish_interval_ms: u64,
    /// Multiplies all market activity.
    #[arg(long, env = "SIM_RATE_MULTIPLIER", default_value_t = 1.0)]
    rate_multiplier: f64,
    /// Maximum WebSocket connection lifetime in seconds (Binance: 24 h).
    #[arg(
        long,
        env = "SIM_MAX_CONNECTION_LIFETIME_SECS",
        default_value_t = 86_400
    )]
    max_connection_lifetime_secs: u64,
    /// REST weight budget per minute for both venues (default: Binance's per venue).
    #[arg(long, env = "SIM_WEIGHT_LIMIT")]
    weight_limit: Option<u32>,
    /// Replay recorded spot messages from DIR (messages.jsonl + snapshots/) instead of generating.
    #[arg(long, env = "SIM_REPLAY_SPOT")]
    replay_spot: Option<PathBuf>,
    /// Replay recorded USD-M messages from DIR.
    #[arg(long, env = "SIM_REPLAY_USDM")]
    replay_usdm: Option<PathBuf>,
    /// Replay pace (2 = twice as fast; 0 = as fast as possible).
    #[arg(long, env = "SIM_REPLAY_SPEED", default_value_t = 1.0)]
    replay_speed: f64,
    /// Log filter.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn venue_config(cli: &Cli, venue: Venue) -> VenueConfig {
    let mut v = VenueConfig::for_venue(venue);
    v.bind = match venue {
        Venue::Spot => cli.spot_bind,
        Venue::Usdm => cli.usdm_bind,
    };
    v.symbols = cli.symbols;
    v.levels = cli.levels;
    v.publish_interval = std::time::Duration::from_millis(cli.publish_interval_ms);
    v.changes_per_event = cli.changes_per_event;
    v.rate_multiplier = cli.rate_multiplier;
    v.max_connection_lifetime = Duration::from_secs(cli.max_connection_lifetime_secs);
    if let Some(w) = cli.weight_limit {
        v.weight_limit = w;
    }
    let replay = match venue {
        Venue::Spot => &cli.replay_spot,
        Venue::Usdm => &cli.replay_usdm,
    };
    v.replay = replay.as_ref().map(|dir| sim::replay::ReplayConfig {
        dir: dir.clone(),
        speed: cli.replay_speed,
    });
    v
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("bad --log filter")?,
        )
        .init();
    let mut cfg = SimConfig {
        seed: cli.seed,
        spot: None,
        usdm: None,
    };
    for v in &cli.venues {
        match v.as_str() {
            "spot" => cfg.spot = Some(venue_config(&cli, Venue::Spot)),
            "usdm" => cfg.usdm = Some(venue_config(&cli, Venue::Usdm)),
            other => {
                anyhow::bail!("unknown venue {other:?}: use spot, usdm or both (comma-separated)")
            }
        }
    }
    let sim = Sim::start(cfg).await?;
    for h in [&sim.spot, &sim.usdm].into_iter().flatten() {
        println!(
            "{}: REST {} WebSocket {} control {}/_control/state ({} symbols)",
            h.venue().as_str(),
            h.rest_url(),
            h.ws_url(),
            h.rest_url(),
            h.symbols().len()
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown();
    Ok(())
}
