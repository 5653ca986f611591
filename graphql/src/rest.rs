//! REST compatibility routes: `/data/{symbol}` (latest book top, or its history with
//! `?from=&to=`), `/stats`, `/health`, `/metrics`. Errors are JSON with a clear message and a
//! 4xx status; only server trouble is a 5xx.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::ApiError;
use crate::paging;
use crate::query;
use crate::types::{book_top_from_row, BookTop, Level, Venue};
use crate::AppState;

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        sonic_rs::to_string(v).unwrap_or_default(),
    )
        .into_response()
}

pub(crate) fn error(e: &ApiError) -> Response {
    #[derive(Serialize)]
    struct E<'a> {
        error: String,
        code: &'a str,
    }
    let status = match e {
        ApiError::UnknownSymbol { .. } | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::Unavailable(_) => StatusCode::CONFLICT,
        ApiError::Cold(_) => StatusCode::GONE,
        ApiError::Pool(_) | ApiError::Db(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let msg = if e.is_client() {
        e.to_string()
    } else {
        "database unavailable".to_owned()
    };
    json(
        status,
        &E {
            error: msg,
            code: e.code(),
        },
    )
}

#[derive(Serialize)]
struct LevelOut {
    price: String,
    qty: String,
}

#[derive(Serialize)]
struct TopOut {
    time: DateTime<Utc>,
    update_id: String,
    mid: Option<String>,
    spread: Option<String>,
    microprice: Option<String>,
    imbalance_1: Option<f64>,
    bids: Vec<LevelOut>,
    asks: Vec<LevelOut>,
}

fn out(levels: Vec<Level>) -> Vec<LevelOut> {
    levels
        .into_iter()
        .map(|l| LevelOut {
            price: l.price,
            qty: l.qty,
        })
        .collect()
}

impl From<BookTop> for TopOut {
    fn from(t: BookTop) -> TopOut {
        TopOut {
            time: t.time,
            update_id: t.update_id,
            mid: t.mid,
            spread: t.spread,
            microprice: t.microprice,
            imbalance_1: t.imbalance1,
            bids: out(t.bids),
            asks: out(t.asks),
        }
    }
}

pub(crate) fn parse_time(
    q: &HashMap<String, String>,
    key: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    q.get(key)
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::BadRequest(format!("`{key}` is not an RFC 3339 time ({e}): {s:?}"))
                })
        })
        .transpose()
}

/// `?venue=`: spot when absent.
pub(crate) fn venue_param(q: &HashMap<String, String>) -> Result<Venue, ApiError> {
    match q.get("venue") {
        None => Ok(Venue::Spot),
        Some(v) => Venue::parse(v)
            .ok_or_else(|| ApiError::BadRequest(format!("unknown venue {v:?}: use spot or usdm"))),
    }
}

const TOP_COLS: &str = "time, update_id, mid::text, spread::text, microprice::text, imbalance_1, imbalance_5, imbalance_10, bid_prices::text[], bid_qtys::text[], ask_prices::text[], ask_qtys::text[]";

async fn data_inner(
    s: &AppState,
    symbol: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let sym = crate::input::symbol(symbol)?;
    let venue = venue_param(q)?;
    let (from, to) = (parse_time(q, "from")?, parse_time(q, "to")?);
    let limit: i32 = match q.get("limit") {
        None => s.limits.max_page,
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("`limit` is not a number: {l:?}")))?,
    };
    match (from, to) {
        (None, None) => {
            let iid = crate::db::instrument_id(&s.pool, venue.as_str(), symbol).await?;
            let c = s.pool.get().await?;
            let row = c
                .query_opt(&format!("SELECT {TOP_COLS} FROM book_top WHERE instrument_id = $1 ORDER BY time DESC LIMIT 1"), &[&iid])
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no data for {sym} yet")))?;
            #[derive(Serialize)]
            struct Latest {
                symbol: String,
                venue: &'static str,
                #[serde(flatten)]
                top: TopOut,
            }
            let top = book_top_from_row(&row);
            Ok(json(
                StatusCode::OK,
                &Latest {
                    symbol: sym.clone(),
                    venue: venue.as_str(),
                    top: top.into(),
                },
            ))
        }
        (Some(from), Some(to)) => {
            let r = paging::range(&s.pool, &s.limits, symbol, venue, from, to, Some(limit)).await?;
            let c = s.pool.get().await?;
            let rows = c
                .query(&format!("SELECT {TOP_COLS} FROM book_top WHERE instrument_id = $1 AND time >= $2 AND time < $3 ORDER BY time LIMIT $4"), &[&r.iid, &r.from, &r.to, &(r.limit + 1)])
                .await?;
            #[derive(Serialize)]
            struct History {
                symbol: String,
                venue: &'static str,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
                /// More rows exist in the range than `limit`.
                truncated: bool,
                rows: Vec<TopOut>,
            }
            let truncated = rows.len() as i64 > r.limit;
            let out = rows
                .iter()
                .take(r.limit as usize)
                .map(|row| book_top_from_row(row).into())
                .collect();
            Ok(json(
                StatusCode::OK,
                &History {
                    symbol: sym.clone(),
                    venue: venue.as_str(),
                    from,
                    to,
                    truncated,
                    rows: out,
                },
            ))
        }
        _ => Err(ApiError::BadRequest(
            "give both `from` and `to`, or neither".into(),
        )),
    }
}

/// `GET /data/{symbol}[?venue=usdm][&from=RFC3339&to=RFC3339[&limit=N]]`
pub async fn data(
    State(s): State<AppState>,
    symbol: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    // Undecodable paths and query strings (bad percent-encoding, not UTF-8) get the same JSON
    // 400 as every other client mistake, not axum's plain-text one.
    let (Path(symbol), Query(q)) = match (symbol, q) {
        (Ok(p), Ok(q)) => (p, q),
        (Err(e), _) => return error(&ApiError::BadRequest(e.body_text())),
        (_, Err(e)) => return error(&ApiError::BadRequest(e.body_text())),
    };
    let op = if q.contains_key("from") || q.contains_key("to") {
        "rest:data_range"
    } else {
        "rest:data"
    };
    let resp = match data_inner(&s, &symbol, &q).await {
        Ok(r) => r,
        Err(e) => error(&e),
    };
    s.metrics.observe(op, resp.status().as_u16(), started);
    resp
}

/// Any other path: a JSON 404 like every other refusal.
pub async fn no_route(uri: axum::http::Uri) -> Response {
    error(&ApiError::NotFound(format!(
        "no route {}: see /graphql, /data/{{symbol}}, /export/{{type}}/{{symbol}}, /stats, /health, /metrics",
        uri.path().chars().take(100).collect::<String>()
    )))
}

/// `GET /stats`
pub async fn stats(State(s): State<AppState>) -> Response {
    let started = Instant::now();
    let resp = match query::stats(&s.pool).await {
        Ok(rows) => {
            #[derive(Serialize)]
            struct Row {
                symbol: String,
                venue: &'static str,
                depth_rows_last_hour: String,
                trades_last_hour: String,
                last_event_time: Option<DateTime<Utc>>,
                lag_seconds: Option<f64>,
            }
            let out: Vec<Row> = rows
                .into_iter()
                .map(|r| Row {
                    symbol: r.symbol,
                    venue: r.venue.as_str(),
                    depth_rows_last_hour: r.depth_rows_last_hour,
                    trades_last_hour: r.trades_last_hour,
                    last_event_time: r.last_event_time,
                    lag_seconds: r.lag_seconds,
                })
                .collect();
            json(StatusCode::OK, &out)
        }
        Err(e) => error(&e),
    };
    s.metrics
        .observe("rest:stats", resp.status().as_u16(), started);
    resp
}

/// `GET /health`: 200 when the database answers and data is fresh, else 503. On a read replica
/// the age of the newest batch includes the replica's lag, which is also reported.
pub async fn health(State(s): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct H {
        healthy: bool,
        database: bool,
        last_commit_age_seconds: Option<f64>,
        /// The queries read a hot standby (`--read-database-url`).
        replica: Option<bool>,
        /// How far behind the primary the standby's replay is, by the last commit it replayed.
        replica_lag_seconds: Option<f64>,
    }
    let probe = async {
        let c = s.pool.get().await.ok()?;
        let row = c
            .query_one(
                "SELECT extract(epoch FROM now() - max(committed_at))::float8, \
                        pg_is_in_recovery(), \
                        extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 \
                 FROM ingest_batches",
                &[],
            )
            .await
            .ok()?;
        Some((
            row.get::<_, Option<f64>>(0),
            row.get::<_, bool>(1),
            row.get::<_, Option<f64>>(2),
        ))
    };
    let (database, age, replica, lag) =
        match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
            Ok(Some((age, replica, lag))) => (true, age, Some(replica), lag.filter(|_| replica)),
            _ => (false, None, None, None),
        };
    let healthy = database && age.is_some_and(|a| a <= s.fresh_within.as_secs_f64());
    json(
        if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &H {
            healthy,
            database,
            last_commit_age_seconds: age,
            replica,
            replica_lag_seconds: lag,
        },
    )
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(s): State<AppState>) -> Response {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&s.metrics.registry.gather(), &mut buf);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        buf,
    )
        .into_response()
}
