//! The control endpoint (`/_control/...`): faults, ground truth and state, for tests and demos.
//! Binance has no such paths; a collector never calls them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use binance::wire::DepthSnapshot;
use serde::Serialize;

use crate::book::wire_levels;
use crate::faults::Fault;
use crate::history::TruthError;
use crate::venue::VenueState;

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    let body = sonic_rs::to_string(v).unwrap_or_default();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    json(status, &E { error: msg.into() })
}

/// Why the truth cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TruthRequestError {
    #[error("unknown symbol {0}")]
    UnknownSymbol(String),
    #[error(transparent)]
    Window(#[from] TruthError),
}

/// The true book of `symbol` after every event up to `update_id` (the latest when `None`),
/// `limit` levels per side, in Binance's snapshot format.
pub fn truth(
    state: &VenueState,
    symbol: &str,
    update_id: Option<u64>,
    limit: usize,
) -> Result<DepthSnapshot, TruthRequestError> {
    let sym = state
        .symbol(symbol)
        .ok_or_else(|| TruthRequestError::UnknownSymbol(symbol.to_owned()))?;
    let (at, book) = {
        let inner = sym
            .inner
            .lock()
            .map_err(|_| TruthRequestError::UnknownSymbol(symbol.to_owned()))?;
        match update_id {
            None => (inner.last_id, inner.book.clone()),
            Some(id) => inner.history.book_at(id)?,
        }
    };
    let (b, a) = book.top(limit);
    let (pd, qd) = (
        state.price_decimals(&sym.spec),
        state.qty_decimals(&sym.spec),
    );
    Ok(DepthSnapshot {
        last_update_id: at,
        event_time: None,
        transaction_time: None,
        bids: wire_levels(&b, pd, qd),
        asks: wire_levels(&a, pd, qd),
    })
}

pub async fn get_truth(
    State(state): State<Arc<VenueState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(symbol) = q.get("symbol") else {
        return err(StatusCode::BAD_REQUEST, "symbol is required");
    };
    let update_id = match q.get("update_id").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return err(
                StatusCode::BAD_REQUEST,
                "update_id must be an unsigned integer",
            )
        }
    };
    let limit = match q.get("limit").map(|s| s.parse::<usize>()) {
        None => usize::MAX,
        Some(Ok(v)) => v,
        Some(Err(_)) => return err(StatusCode::BAD_REQUEST, "limit must be an unsigned integer"),
    };
    match truth(&state, symbol, update_id, limit) {
        Ok(s) => json(StatusCode::OK, &s),
        Err(e @ TruthRequestError::UnknownSymbol(_)) => err(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// Arms a fault, or acts on it at once (disconnects); returns how many connections closed.
pub fn inject(state: &VenueState, fault: &Fault) -> usize {
    match fault {
        Fault::Disconnect { count } => state.conns.disconnect(*count),
        f => {
            state.faults.arm(f);
            0
        }
    }
}

pub async fn post_fault(State(state): State<Arc<VenueState>>, body: String) -> Response {
    let fault: Fault = match sonic_rs::from_str(&body) {
        Ok(f) => f,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("not a fault: {e}; e.g. {{\"kind\":\"drop_depth\",\"symbol\":\"BTCUSDT\",\"count\":3}}")),
    };
    #[derive(Serialize)]
    struct Ok {
        armed: Fault,
        disconnected: usize,
    }
    let disconnected = inject(&state, &fault);
    json(
        StatusCode::OK,
        &Ok {
            armed: fault,
            disconnected,
        },
    )
}

pub async fn clear_faults(State(state): State<Arc<VenueState>>) -> Response {
    state.faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Serialize)]
pub struct SymbolView {
    pub symbol: String,
    pub status: String,
    pub last_update_id: u64,
}

#[derive(Debug, Serialize)]
pub struct StateView {
    pub venue: &'static str,
    pub connections: usize,
    pub weight_used: u32,
    /// Weight admitted since the start, and the budget per window.
    pub weight_total: u64,
    pub weight_limit: u32,
    pub weight_window_secs: u64,
    pub frames: u64,
    pub depth_events: u64,
    pub dropped_depth_events: u64,
    pub rest_requests: u64,
    pub connections_opened: u64,
    /// Connections cut for falling behind (frames lost to them).
    pub slow_consumers_cut: u64,
    pub symbols: Vec<SymbolView>,
}

pub fn state_view(state: &VenueState) -> StateView {
    let s = &state.stats;
    StateView {
        venue: state.venue.as_str(),
        connections: state.conns.count(),
        weight_used: state.limiter.used(),
        weight_total: state.limiter.total(),
        weight_limit: state.limiter.limit(),
        weight_window_secs: state.limiter.window().as_secs(),
        frames: s.frames.load(Ordering::Relaxed),
        depth_events: s.depth_events.load(Ordering::Relaxed),
        dropped_depth_events: s.dropped.load(Ordering::Relaxed),
        rest_requests: s.rest_requests.load(Ordering::Relaxed),
        connections_opened: s.connections_opened.load(Ordering::Relaxed),
        slow_consumers_cut: s.slow_consumers.load(Ordering::Relaxed),
        symbols: state
            .symbols
            .iter()
            .filter_map(|sym| {
                let i = sym.inner.lock().ok()?;
                Some(SymbolView {
                    symbol: sym.spec.symbol.clone(),
                    status: i.status.clone(),
                    last_update_id: i.last_id,
                })
            })
            .collect(),
    }
}

pub async fn get_state(State(state): State<Arc<VenueState>>) -> Response {
    json(StatusCode::OK, &state_view(&state))
}

/// `POST /_control/status?symbol=X&status=BREAK`: list or delist a symbol at runtime
/// (exchangeInfo reports it; a non-TRADING symbol stops producing data).
pub async fn set_status(
    State(state): State<Arc<VenueState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(symbol), Some(status)) = (q.get("symbol"), q.get("status")) else {
        return err(StatusCode::BAD_REQUEST, "symbol and status are required");
    };
    let Some(sym) = state.symbol(symbol) else {
        return err(StatusCode::NOT_FOUND, format!("unknown symbol {symbol}"));
    };
    if let Ok(mut i) = sym.inner.lock() {
        i.status = status.to_ascii_uppercase();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_control/volume?symbol=X&quote_volume=N`: the 24 h quote volume ticker/24hr reports
/// from now on, so a collector's volume ranking (and its tiers) can change at runtime.
pub async fn set_volume(
    State(state): State<Arc<VenueState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(symbol), Some(volume)) = (q.get("symbol"), q.get("quote_volume")) else {
        return err(
            StatusCode::BAD_REQUEST,
            "symbol and quote_volume are required",
        );
    };
    let Ok(volume) = volume.parse::<i64>() else {
        return err(StatusCode::BAD_REQUEST, "quote_volume is a whole number");
    };
    if !(0..=i64::MAX / binance::units::ONE).contains(&volume) {
        return err(StatusCode::BAD_REQUEST, "quote_volume is out of range");
    }
    let Some(sym) = state.symbol(symbol) else {
        return err(StatusCode::NOT_FOUND, format!("unknown symbol {symbol}"));
    };
    if let Ok(mut i) = sym.inner.lock() {
        i.quote_volume_24h = volume;
    }
    StatusCode::NO_CONTENT.into_response()
}
