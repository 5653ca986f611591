//! `sim`: a Binance market-data simulator for tests, demos and benchmarks.
//!
//! Each venue (spot, USD-M) is one HTTP server on loopback that speaks Binance's WebSocket
//! stream protocol and its public REST endpoints, driven by a deterministic market generator
//! (or by recorded messages: [`replay`]), with runtime fault injection and the ground-truth
//! book at any recent update id. See `ARCHITECTURE.md` for where it sits.

pub mod book;
pub mod conns;
pub mod control;
pub mod faults;
pub mod history;
pub mod limiter;
pub mod market;
pub mod replay;
pub mod rest_api;
pub mod universe;
pub mod venue;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use binance::rules;
use binance::wire::DepthSnapshot;
use binance::Venue;
use tokio_util::sync::CancellationToken;

pub use control::{StateView, TruthRequestError};
pub use faults::Fault;

use crate::venue::VenueState;

/// Everything about one simulated venue. Defaults are Binance's values.
#[derive(Debug, Clone)]
pub struct VenueConfig {
    pub bind: SocketAddr,
    /// Number of generated symbols (ignored in replay mode).
    pub symbols: usize,
    /// Levels per side each generated book hovers around.
    pub levels: usize,
    /// Depth event interval (`@100ms`).
    pub depth_interval: Duration,
    /// Trades and book-ticker changes are generated and sent in slices of this length, as they
    /// happen, not at the depth event's end (a whole number of slices per depth interval; a
    /// slice longer than the interval is the interval).
    pub publish_interval: Duration,
    /// Mean level changes per depth event for the busiest symbol.
    pub changes_per_event: f64,
    /// Multiplies all activity (benchmarks at many times Binance's rates).
    pub rate_multiplier: f64,
    /// REQUEST_WEIGHT budget per window.
    pub weight_limit: u32,
    pub weight_window: Duration,
    /// How long a 418 ban lasts.
    pub ban: Duration,
    pub max_connection_lifetime: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub max_incoming_per_sec: u32,
    pub max_streams: usize,
    /// Ground-truth window: a checkpoint every N events, K checkpoints kept.
    pub truth_checkpoint_every: usize,
    pub truth_checkpoints: usize,
    /// Frames buffered per connection before a slow consumer is disconnected.
    pub broadcast_capacity: usize,
    /// Serve recorded messages from this directory instead of generating a market.
    pub replay: Option<replay::ReplayConfig>,
    /// Every other depth snapshot stands at an update id inside the latest event (`U <= id < u`),
    /// as Binance's often do: a book keeper must bridge it with that event.
    pub snapshots_inside_events: bool,
}

impl VenueConfig {
    pub fn for_venue(venue: Venue) -> VenueConfig {
        let (ping_interval, pong_timeout, max_incoming, weight) = match venue {
            Venue::Spot => (
                rules::SPOT_PING_INTERVAL,
                rules::SPOT_PONG_TIMEOUT,
                rules::SPOT_MAX_INCOMING_PER_SECOND,
                rules::SPOT_REQUEST_WEIGHT_PER_MINUTE,
            ),
            Venue::Usdm => (
                rules::USDM_PING_INTERVAL,
                rules::USDM_PONG_TIMEOUT,
                rules::USDM_MAX_INCOMING_PER_SECOND,
                rules::USDM_REQUEST_WEIGHT_PER_MINUTE,
            ),
        };
        VenueConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            symbols: 10,
            levels: 2000,
            depth_interval: Duration::from_millis(100),
            publish_interval: Duration::from_millis(10),
            changes_per_event: 12.0,
            rate_multiplier: 1.0,
            weight_limit: weight,
            weight_window: Duration::from_secs(60),
            ban: Duration::from_secs(120),
            max_connection_lifetime: rules::MAX_CONNECTION_LIFETIME,
            ping_interval,
            pong_timeout,
            max_incoming_per_sec: max_incoming,
            max_streams: rules::MAX_STREAMS_PER_CONNECTION,
            truth_checkpoint_every: 300,
            truth_checkpoints: 5,
            broadcast_capacity: 1 << 16,
            replay: None,
            snapshots_inside_events: true,
        }
    }
}

/// Both venues; `None` leaves a venue out.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub spot: Option<VenueConfig>,
    pub usdm: Option<VenueConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            spot: Some(VenueConfig::for_venue(Venue::Spot)),
            usdm: Some(VenueConfig::for_venue(Venue::Usdm)),
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("replay: {0}")]
    Replay(#[from] replay::ReplayError),
}

/// A running venue.
#[derive(Debug)]
pub struct VenueHandle {
    addr: SocketAddr,
    state: Arc<VenueState>,
}

impl VenueHandle {
    pub fn venue(&self) -> Venue {
        self.state.venue
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Base URL for REST (`http://127.0.0.1:port`).
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Base URL for WebSockets (`ws://127.0.0.1:port`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }
    /// Arms a fault (or disconnects now); returns the number of connections closed.
    pub fn inject(&self, fault: Fault) -> usize {
        control::inject(&self.state, &fault)
    }
    pub fn clear_faults(&self) {
        self.state.faults.clear()
    }
    /// The true book after every event up to `update_id` (latest when `None`).
    pub fn truth(
        &self,
        symbol: &str,
        update_id: Option<u64>,
        limit: usize,
    ) -> Result<DepthSnapshot, TruthRequestError> {
        control::truth(&self.state, symbol, update_id, limit)
    }
    pub fn state(&self) -> StateView {
        control::state_view(&self.state)
    }
    pub fn symbols(&self) -> Vec<String> {
        self.state
            .symbols
            .iter()
            .map(|s| s.spec.symbol.clone())
            .collect()
    }
}

/// The simulator: running until dropped or [`Sim::shutdown`].
#[derive(Debug)]
pub struct Sim {
    pub spot: Option<VenueHandle>,
    pub usdm: Option<VenueHandle>,
    shutdown: CancellationToken,
}

impl Sim {
    pub async fn start(cfg: SimConfig) -> Result<Sim, SimError> {
        let shutdown = CancellationToken::new();
        let spot = match cfg.spot {
            Some(v) => Some(start_venue(Venue::Spot, v, cfg.seed, shutdown.clone()).await?),
            None => None,
        };
        let usdm = match cfg.usdm {
            Some(v) => Some(start_venue(Venue::Usdm, v, cfg.seed, shutdown.clone()).await?),
            None => None,
        };
        Ok(Sim {
            spot,
            usdm,
            shutdown,
        })
    }

    pub fn venue(&self, v: Venue) -> Option<&VenueHandle> {
        match v {
            Venue::Spot => self.spot.as_ref(),
            Venue::Usdm => self.usdm.as_ref(),
        }
    }

    /// Stops generating and closes every connection.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn router(state: Arc<VenueState>) -> Router {
    let api = match state.venue {
        Venue::Spot => "/api/v3",
        Venue::Usdm => "/fapi/v1",
    };
    let mut r = Router::new()
        .route("/ws", get(ws::raw_root))
        .route("/ws/{*streams}", get(ws::raw_streams))
        .route(binance::streams::SPOT_COMBINED_PATH, get(ws::combined))
        .route(&format!("{api}/exchangeInfo"), get(rest_api::exchange_info))
        .route(&format!("{api}/depth"), get(rest_api::depth))
        .route(&format!("{api}/ticker/24hr"), get(rest_api::ticker_24hr))
        .route(&format!("{api}/ping"), get(rest_api::ping))
        .route(&format!("{api}/time"), get(rest_api::time))
        .route("/_control/state", get(control::get_state))
        .route("/_control/truth", get(control::get_truth))
        .route(
            "/_control/faults",
            post(control::post_fault).delete(control::clear_faults),
        )
        .route("/_control/status", post(control::set_status))
        .route("/_control/volume", post(control::set_volume));
    if state.venue == Venue::Usdm {
        r = r
            .route("/public/ws", get(ws::public_raw_root))
            .route("/public/ws/{*streams}", get(ws::public_raw))
            .route(
                binance::streams::USDM_PUBLIC_COMBINED_PATH,
                get(ws::public_combined),
            )
            .route("/market/ws", get(ws::market_raw_root))
            .route("/market/ws/{*streams}", get(ws::market_raw))
            .route(
                binance::streams::USDM_MARKET_COMBINED_PATH,
                get(ws::market_combined),
            );
    }
    r.with_state(state)
}

async fn start_venue(
    venue: Venue,
    cfg: VenueConfig,
    seed: u64,
    shutdown: CancellationToken,
) -> Result<VenueHandle, SimError> {
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .map_err(|source| SimError::Bind {
            addr: cfg.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: cfg.bind,
        source,
    })?;
    let replay_cfg = cfg.replay.clone();
    let (specs, replay_data) = match &replay_cfg {
        Some(rc) => {
            let data = replay::load(rc)?;
            (data.specs.clone(), Some(data))
        }
        None => (universe::generate(cfg.symbols), None),
    };
    let state = Arc::new(VenueState::new(venue, cfg, seed, specs, shutdown.clone()));
    match replay_data {
        Some(data) => {
            replay::install(&state, &data);
            tokio::spawn(replay::run(state.clone(), data));
        }
        None => {
            tokio::spawn(state.clone().run_generator());
        }
    }
    let app = router(state.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    tracing::info!(venue = venue.as_str(), %addr, "venue listening");
    Ok(VenueHandle { addr, state })
}

/// Where recorded data for replay lives.
pub fn replay_dir(path: impl Into<PathBuf>) -> replay::ReplayConfig {
    replay::ReplayConfig {
        dir: path.into(),
        speed: 1.0,
    }
}
