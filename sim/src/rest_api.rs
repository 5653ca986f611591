//! Binance's public REST endpoints with request weights, `X-MBX-USED-WEIGHT-1M`, 429 with
//! `Retry-After` when the budget is spent, and 418 for a client that ignores a 429.

// Helpers return a ready axum `Response` as their error: that is what the handlers send.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use binance::rules::{spot_depth_weight, usdm_depth_weight, USED_WEIGHT_HEADER};
use binance::units::format_e8;
use binance::wire::{DepthSnapshot, ExchangeInfo, Filter, RateLimit, SymbolInfo, Ticker24h};
use binance::Venue;

use crate::book::{wire_levels, Levels};
use crate::limiter::Refusal;
use crate::venue::{now_ms, SymbolInner, VenueState};

/// Spot `GET /api/v3/exchangeInfo` weight.
const SPOT_EXCHANGE_INFO_WEIGHT: u32 = 20;
/// USD-M `GET /fapi/v1/exchangeInfo` weight.
const USDM_EXCHANGE_INFO_WEIGHT: u32 = 1;
/// Spot `GET /api/v3/ticker/24hr` weight: 2 for one symbol, 80 for all.
const SPOT_TICKER_WEIGHT: (u32, u32) = (2, 80);
/// USD-M `GET /fapi/v1/ticker/24hr` weight: 1 for one symbol, 40 for all.
const USDM_TICKER_WEIGHT: (u32, u32) = (1, 40);
/// Spot depth: default `limit` 100, at most 5000 (a larger one is truncated to 5000).
const SPOT_DEPTH_DEFAULT: u32 = 100;
const SPOT_DEPTH_MAX: u32 = 5000;
/// USD-M depth: default `limit` 500; valid limits 5, 10, 20, 50, 100, 500, 1000.
const USDM_DEPTH_DEFAULT: u32 = 500;
const USDM_DEPTH_LIMITS: [u32; 7] = [5, 10, 20, 50, 100, 500, 1000];

fn json(status: StatusCode, body: String, used: Option<u32>) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    if let Some(u) = used {
        if let Ok(v) = HeaderValue::from_str(&u.to_string()) {
            h.insert(USED_WEIGHT_HEADER, v);
        }
    }
    r
}

fn api_error(status: StatusCode, code: i64, msg: &str, used: Option<u32>) -> Response {
    let body = sonic_rs::to_string(&binance::wire::ApiError {
        code,
        msg: msg.to_owned(),
    })
    .unwrap_or_default();
    json(status, body, used)
}

fn refused(r: Refusal) -> Response {
    let (status, msg) = if r.status == 418 {
        (StatusCode::IM_A_TEAPOT, "Way too many requests; IP banned until later. Please use the websocket for live updates to avoid bans.")
    } else {
        (StatusCode::TOO_MANY_REQUESTS, "Too many requests; current limit of IP is exceeded. Please use the websocket for live updates to avoid polling the API.")
    };
    let mut resp = api_error(status, -1003, msg, Some(r.used));
    if let Ok(v) = HeaderValue::from_str(&r.retry_after.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// A forced status from fault injection, if one is armed.
fn forced(state: &VenueState) -> Option<Response> {
    let status = state.faults.take_rest()?;
    Some(match status {
        429 | 418 => refused(Refusal {
            status,
            retry_after: 1,
            used: state.limiter.used(),
        }),
        s => {
            let code = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            api_error(
                code,
                -1001,
                "Internal error; unable to process your request. Please try again.",
                None,
            )
        }
    })
}

/// Counts the request, applies forced faults and the weight budget.
fn gate(state: &VenueState, weight: u32) -> Result<u32, Response> {
    state.stats.rest_requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = forced(state) {
        return Err(r);
    }
    state.limiter.admit(weight).map_err(refused)
}

fn bad_symbol(used: Option<u32>) -> Response {
    api_error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.", used)
}

fn missing(param: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        -1102,
        &format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        None,
    )
}

pub async fn exchange_info(State(state): State<Arc<VenueState>>) -> Response {
    let weight = match state.venue {
        Venue::Spot => SPOT_EXCHANGE_INFO_WEIGHT,
        Venue::Usdm => USDM_EXCHANGE_INFO_WEIGHT,
    };
    let used = match gate(&state, weight) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let symbols = state
        .symbols
        .iter()
        .map(|s| {
            let spec = &s.spec;
            let status = s
                .inner
                .lock()
                .map(|i| i.status.clone())
                .unwrap_or_else(|_| "TRADING".into());
            let (pd, qd) = (state.price_decimals(spec), state.qty_decimals(spec));
            SymbolInfo {
                symbol: spec.symbol.clone(),
                status,
                base_asset: spec.base.clone(),
                quote_asset: spec.quote.clone(),
                contract_type: (state.venue == Venue::Usdm).then(|| "PERPETUAL".to_owned()),
                filters: vec![
                    Filter::PriceFilter {
                        min_price: format_e8(spec.tick_e8, pd),
                        max_price: format_e8(1_000_000 * binance::units::ONE, pd),
                        tick_size: format_e8(spec.tick_e8, pd),
                    },
                    Filter::LotSize {
                        min_qty: format_e8(spec.step_e8, qd),
                        max_qty: format_e8(9_000_000 * binance::units::ONE, qd),
                        step_size: format_e8(spec.step_e8, qd),
                    },
                ],
            }
        })
        .collect();
    let info = ExchangeInfo {
        timezone: "UTC".into(),
        server_time: now_ms(),
        rate_limits: vec![RateLimit {
            rate_limit_type: "REQUEST_WEIGHT".into(),
            interval: "MINUTE".into(),
            interval_num: 1,
            limit: state.cfg.weight_limit,
        }],
        symbols,
    };
    json(
        StatusCode::OK,
        sonic_rs::to_string(&info).unwrap_or_default(),
        Some(used),
    )
}

fn parse_limit(q: &HashMap<String, String>, venue: Venue) -> Result<u32, Response> {
    let Some(raw) = q.get("limit") else {
        return Ok(match venue {
            Venue::Spot => SPOT_DEPTH_DEFAULT,
            Venue::Usdm => USDM_DEPTH_DEFAULT,
        });
    };
    let n: u32 = raw.parse().map_err(|_| {
        api_error(
            StatusCode::BAD_REQUEST,
            -1100,
            "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
            None,
        )
    })?;
    Ok(match venue {
        Venue::Spot => n.clamp(1, SPOT_DEPTH_MAX),
        Venue::Usdm => USDM_DEPTH_LIMITS
            .into_iter()
            .find(|l| *l >= n)
            .unwrap_or(1000),
    })
}

/// The book a snapshot serves, with its id: `stale` (a fault) makes it one from `behind`
/// updates ago; every other snapshot may be the book inside the last event, when configured
/// (ids that fall inside an event, as Binance's sometimes do).
fn snapshot_book(
    state: &VenueState,
    inner: &SymbolInner,
    stale: Option<u32>,
    limit: usize,
) -> (u64, Levels, Levels) {
    let current = || {
        let (b, a) = inner.book.top(limit);
        (inner.last_id, b, a)
    };
    if let Some(behind) = stale {
        let id = inner.history.id_behind(behind as usize);
        return match inner.history.book_at(id) {
            Ok((at, book)) => {
                let (b, a) = book.top(limit);
                (at, b, a)
            }
            Err(_) => current(),
        };
    }
    let n = state.stats.snapshots.fetch_add(1, Ordering::Relaxed);
    let inside = (state.cfg.snapshots_inside_events && n % 2 == 1)
        .then(|| inner.book_inside_last_event())
        .flatten();
    match inside {
        Some((id, book)) => {
            let (b, a) = book.top(limit);
            (id, b, a)
        }
        None => current(),
    }
}

pub async fn depth(
    State(state): State<Arc<VenueState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(symbol) = q.get("symbol").filter(|s| !s.is_empty()) else {
        return missing("symbol");
    };
    let limit = match parse_limit(&q, state.venue) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let weight = match state.venue {
        Venue::Spot => spot_depth_weight(limit),
        Venue::Usdm => usdm_depth_weight(limit),
    };
    let used = match gate(&state, weight) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(sym) = state.symbol(symbol).cloned() else {
        return bad_symbol(Some(used));
    };
    let (stale, slow) = state.faults.take_snapshot();
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    let Ok(mut inner) = sym.inner.lock() else {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1001,
            "Internal error",
            None,
        );
    };
    let (last_id, bids, asks) = snapshot_book(&state, &inner, stale, limit as usize);
    inner.snapshots_served += 1;
    let replay_time = inner.replay_time_ms;
    drop(inner);
    let (pd, qd) = (
        state.price_decimals(&sym.spec),
        state.qty_decimals(&sym.spec),
    );
    let e = replay_time.unwrap_or_else(now_ms);
    let usdm = state.venue == Venue::Usdm;
    let snap = DepthSnapshot {
        last_update_id: last_id,
        event_time: usdm.then_some(e),
        transaction_time: usdm.then_some(e.saturating_sub(1)),
        bids: wire_levels(&bids, pd, qd),
        asks: wire_levels(&asks, pd, qd),
    };
    json(
        StatusCode::OK,
        sonic_rs::to_string(&snap).unwrap_or_default(),
        Some(used),
    )
}

pub async fn ticker_24hr(
    State(state): State<Arc<VenueState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (one, all) = match state.venue {
        Venue::Spot => SPOT_TICKER_WEIGHT,
        Venue::Usdm => USDM_TICKER_WEIGHT,
    };
    let symbol = q.get("symbol").filter(|s| !s.is_empty());
    let used = match gate(&state, if symbol.is_some() { one } else { all }) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let now = now_ms();
    let ticker = |s: &crate::venue::SymbolState| {
        let (last, vol, count, quote_volume) = s
            .inner
            .lock()
            .map(|i| (i.last_price, i.volume_e8, i.trade_count, i.quote_volume_24h))
            .unwrap_or((0, 0, 0, s.spec.quote_volume_24h));
        let pd = state.price_decimals(&s.spec);
        Ticker24h {
            symbol: s.spec.symbol.clone(),
            last_price: format_e8(last, pd),
            volume: format_e8(vol, state.qty_decimals(&s.spec)),
            // Ranked like the activity the generator uses, so a top-N selection is stable.
            quote_volume: format_e8(quote_volume * binance::units::ONE, 2),
            open_time: now - 86_400_000,
            close_time: now,
            count,
        }
    };
    let body = match symbol {
        Some(sym) => match state.symbol(sym) {
            Some(s) => sonic_rs::to_string(&ticker(s)),
            None => return bad_symbol(Some(used)),
        },
        None => sonic_rs::to_string(&state.symbols.iter().map(|s| ticker(s)).collect::<Vec<_>>()),
    };
    json(StatusCode::OK, body.unwrap_or_default(), Some(used))
}

pub async fn ping(State(state): State<Arc<VenueState>>) -> Response {
    match gate(&state, 1) {
        Ok(u) => json(StatusCode::OK, "{}".into(), Some(u)),
        Err(r) => r,
    }
}

pub async fn time(State(state): State<Arc<VenueState>>) -> Response {
    match gate(&state, 1) {
        Ok(u) => json(
            StatusCode::OK,
            format!("{{\"serverTime\":{}}}", now_ms()),
            Some(u),
        ),
        Err(r) => r,
    }
}
