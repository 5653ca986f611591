//! Query timings: `book_at` (SQL and GraphQL) at depth 20 and 1000, an hour of 1 s candles, a
//! page of 1000 trades. Each is repeated and reported as p50 / p99 / max.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use tokio_postgres::Client;

use crate::procstat::percentile;

#[derive(Debug, Clone, Default)]
pub struct Timing {
    pub what: String,
    pub samples: usize,
    /// Rows (or levels, or candles) each answer carried, on average.
    pub rows: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Timing {
    fn from(what: impl Into<String>, mut ms: Vec<f64>, rows: f64) -> Timing {
        ms.sort_by(f64::total_cmp);
        Timing {
            what: what.into(),
            samples: ms.len(),
            rows,
            p50_ms: percentile(&ms, 50.0).unwrap_or(0.0),
            p99_ms: percentile(&ms, 99.0).unwrap_or(0.0),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// POSTs a GraphQL query; fails on an HTTP error or a GraphQL error.
pub async fn gql(http: &reqwest::Client, api: SocketAddr, query: &str) -> Result<sonic_rs::Value> {
    let body = sonic_rs::to_string(&sonic_rs::json!({ "query": query }))?;
    let text = http
        .post(format!("http://{api}/graphql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let v: sonic_rs::Value = sonic_rs::from_str(&text)?;
    if v.get("errors").is_some() {
        bail!("GraphQL error: {text}");
    }
    Ok(v)
}

fn rfc3339(unix_secs: f64) -> String {
    chrono::DateTime::from_timestamp_millis((unix_secs * 1000.0) as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// The instrument whose book is timed, and the span in which `book_at` has a book for it:
/// after its first snapshot, up to its last stored update.
pub async fn book_span(db: &Client, symbol: &str) -> Result<(i32, f64, f64)> {
    let r = db
        .query_one(
            "SELECT i.id,
                    (SELECT extract(epoch FROM min(time))::float8 FROM book_checkpoints
                      WHERE instrument_id = i.id AND kind = 'snapshot'),
                    (SELECT extract(epoch FROM max(time))::float8 FROM depth_updates
                      WHERE instrument_id = i.id)
             FROM instruments i WHERE venue = 'spot' AND symbol = $1",
            &[&symbol],
        )
        .await
        .with_context(|| format!("{symbol} is not collected"))?;
    let (iid, from, to): (i32, Option<f64>, Option<f64>) = (r.get(0), r.get(1), r.get(2));
    match (from, to) {
        (Some(f), Some(t)) if t > f + 1.0 => Ok((iid, f + 0.5, t)),
        _ => bail!("{symbol}: no synced book stored"),
    }
}

/// `book_at` at `depth`, at `samples` instants spread evenly over the span: straight SQL, and
/// the GraphQL `book` query over HTTP.
pub async fn book_at(
    db: &Client,
    http: &reqwest::Client,
    api: SocketAddr,
    symbol: &str,
    depth: i32,
    samples: usize,
) -> Result<(Timing, Timing)> {
    let (iid, from, to) = book_span(db, symbol).await?;
    let stmt = db
        .prepare("SELECT side, price, qty FROM book_at($1, to_timestamp($2), $3)")
        .await?;
    let (mut sql_ms, mut gql_ms, mut levels) = (Vec::new(), Vec::new(), 0usize);
    for i in 0..samples {
        let at = from + (to - from) * (i as f64 + 0.5) / samples as f64;
        let t = Instant::now();
        let rows = db.query(&stmt, &[&iid, &at, &depth]).await?;
        sql_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        levels += rows.len();
        let q = format!(
            "{{ book(symbol: \"{symbol}\", at: \"{}\", depth: {depth}) {{ updateId bids {{ price qty }} asks {{ price qty }} }} }}",
            rfc3339(at)
        );
        let t = Instant::now();
        gql(http, api, &q).await?;
        gql_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let per = levels as f64 / samples.max(1) as f64;
    Ok((
        Timing::from(format!("book_at, depth {depth} (SQL)"), sql_ms, per),
        Timing::from(format!("book, depth {depth} (GraphQL)"), gql_ms, per),
    ))
}

/// Writes `per_sec` synthetic trades a second for one hour ending an hour before now into
/// `instrument_id`, and brings the candle aggregates up to date over it. Returns the hour.
pub async fn synthetic_hour(db: &Client, instrument_id: i32, per_sec: u32) -> Result<(f64, f64)> {
    let end: f64 = db
        .query_one(
            "SELECT extract(epoch FROM date_trunc('hour', now() - interval '1 hour'))::float8",
            &[],
        )
        .await?
        .get(0);
    let start = end - 3600.0;
    let n = 3600 * i64::from(per_sec);
    // A random walk around 67 000 with 2-decimal prices and 5-decimal quantities, as on
    // Binance's BTCUSDT; agg trade ids far above what the simulator hands out.
    db.execute(
        "INSERT INTO trades (time, instrument_id, agg_trade_id, price, qty, first_trade_id,
                             last_trade_id, buyer_is_maker, event_time, received_at)
         SELECT t, $1, 9000000000000 + i, round((67000 + 300 * sin(i / 5000.0) + random() * 5)::numeric, 2),
                round((random() * 0.5)::numeric, 5), 9000000000000 + i * 2, 9000000000000 + i * 2 + 1,
                random() < 0.5, t, t
         FROM generate_series(0::int8, $2::int8 - 1) i,
              LATERAL (SELECT to_timestamp($3::float8 + i * 3600.0 / $2::int8)) x(t)",
        &[&instrument_id, &n, &start],
    )
    .await
    .context("synthetic trades")?;
    if crate::measure::flavor(db).await? == schema::Flavor::Timescale {
        for agg in ["trades_1s", "trades_1m", "trades_1h"] {
            db.execute(
                &format!(
                    "CALL refresh_continuous_aggregate('{agg}', to_timestamp($1), to_timestamp($2))"
                ),
                &[&start, &(end + 3600.0)],
            )
            .await?;
        }
    } else {
        db.execute("SELECT invalidate_aggregates(to_timestamp($1))", &[&start])
            .await?;
        db.execute("SELECT maintain()", &[]).await?;
    }
    Ok((start, end))
}

/// Every 1 s candle of the hour through GraphQL, page by page; `repeat` times.
pub async fn candles_hour(
    http: &reqwest::Client,
    api: SocketAddr,
    symbol: &str,
    hour: (f64, f64),
    repeat: usize,
) -> Result<Timing> {
    let (mut ms, mut total) = (Vec::new(), 0usize);
    for _ in 0..repeat {
        let t = Instant::now();
        let mut after: Option<String> = None;
        let mut got = 0usize;
        loop {
            let cursor = after
                .as_ref()
                .map(|c| format!(", after: \"{c}\""))
                .unwrap_or_default();
            let q = format!(
                "{{ candles(symbol: \"{symbol}\", interval: S1, from: \"{}\", to: \"{}\", first: 1000{cursor}) {{ edges {{ node {{ open high low close volume }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
                rfc3339(hour.0),
                rfc3339(hour.1)
            );
            let v = gql(http, api, &q).await?;
            let c = v
                .pointer(&sonic_rs::pointer!["data", "candles"])
                .context("candles")?;
            got += c
                .get("edges")
                .and_then(|e| e.as_array())
                .map_or(0, |e| e.len());
            let info = c.get("pageInfo").context("pageInfo")?;
            if info.get("hasNextPage").and_then(|b| b.as_bool()) != Some(true) {
                break;
            }
            after = info
                .get("endCursor")
                .and_then(|c| c.as_str())
                .map(str::to_owned);
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        total += got;
    }
    Ok(Timing::from(
        "one hour of 1 s candles, every page (GraphQL)",
        ms,
        total as f64 / repeat.max(1) as f64,
    ))
}

/// A page of 1000 trades from ten minutes of the hour, `samples` windows spread over it.
pub async fn trades_page(
    http: &reqwest::Client,
    api: SocketAddr,
    symbol: &str,
    hour: (f64, f64),
    samples: usize,
) -> Result<Timing> {
    let (mut ms, mut rows) = (Vec::new(), 0usize);
    for i in 0..samples {
        let from = hour.0 + (3000.0 * i as f64 / samples.max(1) as f64).floor();
        let q = format!(
            "{{ trades(symbol: \"{symbol}\", from: \"{}\", to: \"{}\", first: 1000) {{ edges {{ node {{ time aggTradeId price qty buyerIsMaker }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
            rfc3339(from),
            rfc3339(from + 600.0)
        );
        let t = Instant::now();
        let v = gql(http, api, &q).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        rows += v
            .pointer(&sonic_rs::pointer!["data", "trades", "edges"])
            .and_then(|e| e.as_array())
            .map_or(0, |e| e.len());
    }
    Ok(Timing::from(
        "a page of 1000 trades (GraphQL)",
        ms,
        rows as f64 / samples.max(1) as f64,
    ))
}
