//! The GraphQL schema (DESIGN §7). Prices, quantities and exchange ids are strings: exact
//! decimals, and ids beyond GraphQL's 32-bit `Int`.

// Resolver arguments are the API's field arguments; bundling them would change the schema.
#![allow(clippy::too_many_arguments)]

use std::time::Duration;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ErrorExtensions, Object, Result, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::StreamExt;

use crate::db::{instrument_id, ApiError, Pool};
use crate::input::{self, decode_cursor, encode_cursor, KeyKind};
use crate::live::Hub;

/// Limits every query obeys.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rows per page at most.
    pub max_page: i32,
    /// Widest `from`..`to` range.
    pub max_range: Duration,
    /// Deepest book.
    pub max_depth: i32,
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(if self.is_client() {
            self.to_string()
        } else {
            "internal error".to_owned()
        })
        .extend_with(|_, e| {
            e.set("code", self.graphql_code());
            e.set("reason", self.code());
        })
    }
}

fn err(e: ApiError) -> async_graphql::Error {
    e.extend()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum Venue {
    #[default]
    Spot,
    Usdm,
}

impl Venue {
    pub fn as_str(self) -> &'static str {
        match self {
            Venue::Spot => "spot",
            Venue::Usdm => "usdm",
        }
    }

    pub fn parse(s: &str) -> Option<Venue> {
        match s.to_ascii_lowercase().as_str() {
            "spot" => Some(Venue::Spot),
            "usdm" => Some(Venue::Usdm),
            _ => None,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Tier {
    Critical,
    High,
    Medium,
    Low,
}

/// Candle width: the `trades_1s`, `trades_1m`, `trades_1h` aggregates.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Interval {
    S1,
    M1,
    H1,
}

#[derive(SimpleObject, Debug)]
pub struct Instrument {
    pub id: i32,
    pub venue: Venue,
    pub symbol: String,
    pub base: String,
    pub quote: String,
    pub status: String,
    pub tick_size: String,
    pub step_size: String,
    pub tier: Option<Tier>,
    pub volume_rank: Option<i32>,
    pub active: bool,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct Level {
    pub price: String,
    pub qty: String,
}

#[derive(SimpleObject, Debug)]
pub struct Book {
    pub symbol: String,
    pub venue: Venue,
    /// Event time of the last update in the book.
    pub time: DateTime<Utc>,
    pub update_id: String,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

#[derive(SimpleObject, Debug)]
pub struct BookTicker {
    pub time: DateTime<Utc>,
    pub update_id: String,
    pub bid_price: String,
    pub bid_qty: String,
    pub ask_price: String,
    pub ask_qty: String,
}

#[derive(SimpleObject, Debug)]
pub struct Trade {
    pub time: DateTime<Utc>,
    pub agg_trade_id: String,
    pub price: String,
    pub qty: String,
    pub first_trade_id: String,
    pub last_trade_id: String,
    pub buyer_is_maker: bool,
}

#[derive(SimpleObject, Debug)]
pub struct DepthUpdate {
    pub time: DateTime<Utc>,
    pub first_update_id: String,
    pub update_id: String,
    pub prev_update_id: Option<String>,
    pub side: String,
    pub price: String,
    pub qty: String,
}

#[derive(SimpleObject, Debug)]
pub struct BookTop {
    pub time: DateTime<Utc>,
    pub update_id: String,
    pub mid: Option<String>,
    pub spread: Option<String>,
    pub microprice: Option<String>,
    pub imbalance1: Option<f64>,
    pub imbalance5: Option<f64>,
    pub imbalance10: Option<f64>,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

#[derive(SimpleObject, Debug)]
pub struct Candle {
    pub bucket: DateTime<Utc>,
    pub open: Option<String>,
    pub high: Option<String>,
    pub low: Option<String>,
    pub close: Option<String>,
    pub volume: Option<String>,
    pub quote_volume: Option<String>,
    pub vwap: Option<String>,
    pub buy_volume: Option<String>,
    pub sell_volume: Option<String>,
    pub trade_count: String,
}

#[derive(SimpleObject, Debug)]
pub struct Gap {
    /// The book was exact up to this time; it is unknown until the next sync.
    pub time: DateTime<Utc>,
    pub first_missing_update_id: Option<String>,
    pub last_missing_update_id: Option<String>,
    pub detail: Option<String>,
}

#[derive(SimpleObject, Debug)]
pub struct DataQuality {
    pub symbol: String,
    pub venue: Venue,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Share of the range in which the book is known exactly, in percent.
    pub coverage_percent: f64,
    pub gaps: Vec<Gap>,
    pub resyncs: i32,
    pub disconnects: i32,
}

#[derive(SimpleObject, Debug)]
pub struct SymbolStats {
    pub symbol: String,
    pub venue: Venue,
    pub depth_rows_last_hour: String,
    pub trades_last_hour: String,
    pub last_event_time: Option<DateTime<Utc>>,
    /// Seconds since the last depth event (how far behind the collection is).
    pub lag_seconds: Option<f64>,
}

fn levels(prices: &[String], qtys: &[String]) -> Vec<Level> {
    prices
        .iter()
        .zip(qtys)
        .map(|(p, q)| Level {
            price: p.clone(),
            qty: q.clone(),
        })
        .collect()
}

/// Checked range arguments.
#[derive(Debug)]
pub struct Range {
    pub iid: i32,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub limit: i64,
}

pub async fn range(
    pool: &Pool,
    limits: &Limits,
    symbol: &str,
    venue: Venue,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    first: Option<i32>,
) -> Result<Range, ApiError> {
    let (from, to) = (input::time("from", from)?, input::time("to", to)?);
    if from >= to {
        return Err(ApiError::BadRequest(format!(
            "`from` ({from}) must be before `to` ({to})"
        )));
    }
    let width = (to - from).to_std().unwrap_or(Duration::MAX);
    if width > limits.max_range {
        return Err(ApiError::BadRequest(format!(
            "the range is wider than the maximum of {} s",
            limits.max_range.as_secs()
        )));
    }
    let first = first.unwrap_or(100);
    if first < 1 || first > limits.max_page {
        return Err(ApiError::BadRequest(format!(
            "`first` must be between 1 and {}",
            limits.max_page
        )));
    }
    let iid = instrument_id(pool, venue.as_str(), symbol).await?;
    Ok(Range {
        iid,
        from,
        to,
        limit: i64::from(first),
    })
}

/// A range query paginated by keyset: rows of one instrument with `time_col` in [from, to),
/// ordered by `key` (each column with the SQL type its cursor part is read back as).
struct Keyset {
    table: &'static str,
    cols: &'static str,
    time_col: &'static str,
    key: &'static [(&'static str, KeyKind)],
}

impl Keyset {
    /// $1 instrument, $2 from, $3 to, $4 limit; with a cursor, $5.. its parts. The key columns
    /// come back as text after `cols`, to make the next cursor.
    fn sql(&self, after: bool) -> String {
        let names: Vec<&str> = self.key.iter().map(|k| k.0).collect();
        let key_text: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, (n, kind))| format!("{} AS cursor_{i}", kind.select(n)))
            .collect();
        let mut sql = format!(
            "SELECT {}, {} FROM {} WHERE instrument_id = $1 AND {t} >= $2 AND {t} < $3",
            self.cols,
            key_text.join(", "),
            self.table,
            t = self.time_col
        );
        if after {
            let params: Vec<String> = self
                .key
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| kind.param(i + 5))
                .collect();
            sql.push_str(&format!(
                " AND ({}) > ({})",
                names.join(", "),
                params.join(", ")
            ));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT $4", names.join(", ")));
        sql
    }
}

/// Runs one page of `q`; `row` reads a result row (its first columns are `q.cols`).
async fn page<T, F>(
    pool: &Pool,
    r: &Range,
    q: &Keyset,
    after: Option<String>,
    row: F,
) -> Result<Connection<String, T>, ApiError>
where
    T: async_graphql::OutputType,
    F: Fn(&tokio_postgres::Row) -> T,
{
    let c = pool.get().await?;
    let lim = r.limit + 1;
    let rows = match after {
        None => {
            c.query(&q.sql(false), &[&r.iid, &r.from, &r.to, &lim])
                .await?
        }
        Some(cur) => {
            let kinds: Vec<KeyKind> = q.key.iter().map(|k| k.1).collect();
            let parts = decode_cursor(&cur, &kinds)?;
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                vec![&r.iid, &r.from, &r.to, &lim];
            params.extend(parts.iter().map(|p| p.as_sql()));
            c.query(&q.sql(true), &params).await?
        }
    };
    let more = rows.len() as i64 > r.limit;
    let mut conn = Connection::new(false, more);
    for rw in rows.iter().take(r.limit as usize) {
        let key: Vec<String> = (rw.len() - q.key.len()..rw.len())
            .map(|i| rw.get(i))
            .collect();
        conn.edges.push(Edge::new(encode_cursor(&key), row(rw)));
    }
    Ok(conn)
}

#[derive(Debug)]
pub struct Query;

#[Object]
impl Query {
    /// Instruments, filtered by venue, tier and whether they are collected now.
    async fn instruments(
        &self,
        ctx: &Context<'_>,
        venue: Option<Venue>,
        tier: Option<Tier>,
        active: Option<bool>,
    ) -> Result<Vec<Instrument>> {
        let pool = ctx.data::<Pool>()?;
        let c = pool.get().await.map_err(|e| err(e.into()))?;
        let tier_s = tier.map(|t| format!("{t:?}").to_ascii_lowercase());
        let rows = c
            .query(
                "SELECT id, venue, symbol, base, quote, status, tick_size::text, step_size::text, tier, volume_rank, active
                 FROM instruments
                 WHERE ($1::text IS NULL OR venue = $1) AND ($2::text IS NULL OR tier = $2) AND ($3::bool IS NULL OR active = $3)
                 ORDER BY venue, volume_rank NULLS LAST, symbol",
                &[&venue.map(|v| v.as_str()), &tier_s, &active],
            )
            .await
            .map_err(|e| err(e.into()))?;
        Ok(rows
            .iter()
            .map(|r| Instrument {
                id: r.get(0),
                venue: Venue::parse(r.get(1)).unwrap_or_default(),
                symbol: r.get(2),
                base: r.get(3),
                quote: r.get(4),
                status: r.get(5),
                tick_size: r.get(6),
                step_size: r.get(7),
                tier: r
                    .get::<_, Option<String>>(8)
                    .and_then(|t| match t.as_str() {
                        "critical" => Some(Tier::Critical),
                        "high" => Some(Tier::High),
                        "medium" => Some(Tier::Medium),
                        "low" => Some(Tier::Low),
                        _ => None,
                    }),
                volume_rank: r.get(9),
                active: r.get(10),
            })
            .collect())
    }

    /// The order book at `at` (the latest when omitted), `depth` levels per side.
    async fn book(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
        at: Option<DateTime<Utc>>,
        #[graphql(default = 20)] depth: i32,
    ) -> Result<Book> {
        let pool = ctx.data::<Pool>()?;
        let limits = ctx.data::<Limits>()?;
        book(pool, limits, &symbol, venue, at, depth)
            .await
            .map_err(err)
    }

    /// Best bid/ask updates in [from, to).
    async fn book_ticker(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, BookTicker>> {
        let pool = ctx.data::<Pool>()?;
        let r = range(pool, ctx.data::<Limits>()?, &symbol, venue, from, to, first)
            .await
            .map_err(err)?;
        let q = Keyset {
            table: "book_ticker",
            cols: "time, update_id, bid_price::text, bid_qty::text, ask_price::text, ask_qty::text",
            time_col: "time",
            key: &[("time", KeyKind::Time), ("update_id", KeyKind::Int)],
        };
        page(pool, &r, &q, after, |r| BookTicker {
            time: r.get(0),
            update_id: r.get::<_, i64>(1).to_string(),
            bid_price: r.get(2),
            bid_qty: r.get(3),
            ask_price: r.get(4),
            ask_qty: r.get(5),
        })
        .await
        .map_err(err)
    }

    /// Aggregated trades in [from, to).
    async fn trades(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Trade>> {
        let pool = ctx.data::<Pool>()?;
        let r = range(pool, ctx.data::<Limits>()?, &symbol, venue, from, to, first)
            .await
            .map_err(err)?;
        let q = Keyset { table: "trades", cols: "time, agg_trade_id, price::text, qty::text, first_trade_id, last_trade_id, buyer_is_maker", time_col: "time", key: &[("time", KeyKind::Time), ("agg_trade_id", KeyKind::Int)] };
        page(pool, &r, &q, after, |r| Trade {
            time: r.get(0),
            agg_trade_id: r.get::<_, i64>(1).to_string(),
            price: r.get(2),
            qty: r.get(3),
            first_trade_id: r.get::<_, i64>(4).to_string(),
            last_trade_id: r.get::<_, i64>(5).to_string(),
            buyer_is_maker: r.get(6),
        })
        .await
        .map_err(err)
    }

    /// Stored depth level changes in [from, to), in update-id order.
    async fn depth_updates(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, DepthUpdate>> {
        let pool = ctx.data::<Pool>()?;
        let r = range(pool, ctx.data::<Limits>()?, &symbol, venue, from, to, first)
            .await
            .map_err(err)?;
        let q = Keyset {
            table: "depth_updates",
            cols: "time, first_update_id, update_id, prev_update_id, side, price::text, qty::text",
            time_col: "time",
            key: &[
                ("update_id", KeyKind::Int),
                ("side", KeyKind::Side),
                ("price", KeyKind::Price),
            ],
        };
        page(pool, &r, &q, after, |r| DepthUpdate {
            time: r.get(0),
            first_update_id: r.get::<_, i64>(1).to_string(),
            update_id: r.get::<_, i64>(2).to_string(),
            prev_update_id: r.get::<_, Option<i64>>(3).map(|v| v.to_string()),
            side: r.get(4),
            price: r.get(5),
            qty: r.get(6),
        })
        .await
        .map_err(err)
    }

    /// Sampled top-of-book levels and features in [from, to).
    async fn book_top(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, BookTop>> {
        let pool = ctx.data::<Pool>()?;
        let r = range(pool, ctx.data::<Limits>()?, &symbol, venue, from, to, first)
            .await
            .map_err(err)?;
        let q = Keyset { table: "book_top", cols: "time, update_id, mid::text, spread::text, microprice::text, imbalance_1, imbalance_5, imbalance_10, bid_prices::text[], bid_qtys::text[], ask_prices::text[], ask_qtys::text[]", time_col: "time", key: &[("time", KeyKind::Time), ("update_id", KeyKind::Int)] };
        page(pool, &r, &q, after, book_top_from_row)
            .await
            .map_err(err)
    }

    /// Trade candles (OHLC, volumes, VWAP) from the continuous aggregates.
    async fn candles(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Candle>> {
        let pool = ctx.data::<Pool>()?;
        let r = range(pool, ctx.data::<Limits>()?, &symbol, venue, from, to, first)
            .await
            .map_err(err)?;
        let view = match interval {
            Interval::S1 => "trades_1s",
            Interval::M1 => "trades_1m",
            Interval::H1 => "trades_1h",
        };
        let q = Keyset { table: view, cols: "bucket, open::text, high::text, low::text, close::text, volume::text, quote_volume::text, vwap::text, buy_volume::text, sell_volume::text, trade_count", time_col: "bucket", key: &[("bucket", KeyKind::Time)] };
        page(pool, &r, &q, after, |r| Candle {
            bucket: r.get(0),
            open: r.get(1),
            high: r.get(2),
            low: r.get(3),
            close: r.get(4),
            volume: r.get(5),
            quote_volume: r.get(6),
            vwap: r.get(7),
            buy_volume: r.get(8),
            sell_volume: r.get(9),
            trade_count: r.get::<_, i64>(10).to_string(),
        })
        .await
        .map_err(err)
    }

    /// How much of [from, to) the book is known for, and the recorded gaps.
    async fn data_quality(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<DataQuality> {
        let pool = ctx.data::<Pool>()?;
        let r = range(pool, ctx.data::<Limits>()?, &symbol, venue, from, to, None)
            .await
            .map_err(err)?;
        data_quality(pool, &r, &symbol, venue).await.map_err(err)
    }

    /// Per-symbol activity and lag.
    async fn stats(&self, ctx: &Context<'_>) -> Result<Vec<SymbolStats>> {
        stats(ctx.data::<Pool>()?).await.map_err(err)
    }
}

pub fn book_top_from_row(r: &tokio_postgres::Row) -> BookTop {
    let (bp, bq, ap, aq): (Vec<String>, Vec<String>, Vec<String>, Vec<String>) =
        (r.get(8), r.get(9), r.get(10), r.get(11));
    BookTop {
        time: r.get(0),
        update_id: r.get::<_, i64>(1).to_string(),
        mid: r.get(2),
        spread: r.get(3),
        microprice: r.get(4),
        imbalance1: r.get(5),
        imbalance5: r.get(6),
        imbalance10: r.get(7),
        bids: levels(&bp, &bq),
        asks: levels(&ap, &aq),
    }
}

pub async fn book(
    pool: &Pool,
    limits: &Limits,
    symbol: &str,
    venue: Venue,
    at: Option<DateTime<Utc>>,
    depth: i32,
) -> Result<Book, ApiError> {
    if depth < 1 || depth > limits.max_depth {
        return Err(ApiError::BadRequest(format!(
            "`depth` must be between 1 and {}",
            limits.max_depth
        )));
    }
    let at = at.map(|t| input::time("at", t)).transpose()?;
    let iid = instrument_id(pool, venue.as_str(), symbol).await?;
    let c = pool.get().await?;
    let at = match at {
        Some(t) => t,
        None => c
            .query_one(
                "SELECT max(time) FROM depth_updates WHERE instrument_id = $1",
                &[&iid],
            )
            .await?
            .get::<_, Option<DateTime<Utc>>>(0)
            .ok_or_else(|| ApiError::NotFound(format!("no book recorded for {symbol} yet")))?,
    };
    let rows = c.query("SELECT side, price::text, qty::text, book_update_id, book_time FROM book_at($1::int4, $2::timestamptz, $3::int4)", &[&iid, &at, &depth]).await?;
    let (mut bids, mut asks) = (Vec::new(), Vec::new());
    let (mut uid, mut time) = (None, None);
    for r in &rows {
        let lvl = Level {
            price: r.get(1),
            qty: r.get(2),
        };
        if r.get::<_, &str>(0) == "bid" {
            bids.push(lvl)
        } else {
            asks.push(lvl)
        }
        uid = Some(r.get::<_, i64>(3));
        time = Some(r.get::<_, DateTime<Utc>>(4));
    }
    Ok(Book {
        symbol: input::symbol(symbol)?,
        venue,
        time: time.unwrap_or(at),
        update_id: uid.map(|u| u.to_string()).unwrap_or_default(),
        bids,
        asks,
    })
}

async fn data_quality(
    pool: &Pool,
    r: &Range,
    symbol: &str,
    venue: Venue,
) -> Result<DataQuality, ApiError> {
    let c = pool.get().await?;
    let covered: f64 = c
        .query_one(
            "WITH ep AS (
               SELECT s.time AS start,
                      coalesce((SELECT min(e.time) FROM sync_events e WHERE e.epoch = s.epoch AND e.kind IN ('gap', 'stopped')), now()) AS stop
               FROM sync_events s WHERE s.instrument_id = $1 AND s.kind = 'synced')
             SELECT coalesce(sum(extract(epoch FROM least(stop, $3) - greatest(start, $2)))
                             FILTER (WHERE stop > $2 AND start < $3), 0)::float8
             FROM ep",
            &[&r.iid, &r.from, &r.to],
        )
        .await?
        .get(0);
    let width = (r.to - r.from).num_milliseconds() as f64 / 1000.0;
    let gaps = c
        .query(
            "SELECT time, first_update_id, last_update_id, detail FROM sync_events
             WHERE instrument_id = $1 AND kind = 'gap' AND time >= $2 AND time < $3 ORDER BY time",
            &[&r.iid, &r.from, &r.to],
        )
        .await?
        .iter()
        .map(|g| Gap {
            time: g.get(0),
            first_missing_update_id: g.get::<_, Option<i64>>(1).map(|v| v.to_string()),
            last_missing_update_id: g.get::<_, Option<i64>>(2).map(|v| v.to_string()),
            detail: g.get(3),
        })
        .collect();
    let counts = c
        .query_one(
            "SELECT count(*) FILTER (WHERE kind = 'resync'), count(*) FILTER (WHERE kind = 'disconnect')
             FROM sync_events WHERE instrument_id = $1 AND time >= $2 AND time < $3",
            &[&r.iid, &r.from, &r.to],
        )
        .await?;
    Ok(DataQuality {
        symbol: input::symbol(symbol)?,
        venue,
        from: r.from,
        to: r.to,
        coverage_percent: (covered / width * 100.0).clamp(0.0, 100.0),
        gaps,
        resyncs: counts.get::<_, i64>(0) as i32,
        disconnects: counts.get::<_, i64>(1) as i32,
    })
}

pub async fn stats(pool: &Pool) -> Result<Vec<SymbolStats>, ApiError> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT i.symbol, i.venue,
                    (SELECT count(*) FROM depth_updates d WHERE d.instrument_id = i.id AND d.time > now() - interval '1 hour'),
                    (SELECT count(*) FROM trades t WHERE t.instrument_id = i.id AND t.time > now() - interval '1 hour'),
                    (SELECT max(time) FROM depth_updates d WHERE d.instrument_id = i.id)
             FROM instruments i WHERE i.active ORDER BY i.venue, i.volume_rank NULLS LAST, i.symbol",
            &[],
        )
        .await?;
    let now = Utc::now();
    Ok(rows
        .iter()
        .map(|r| {
            let last: Option<DateTime<Utc>> = r.get(4);
            SymbolStats {
                symbol: r.get(0),
                venue: Venue::parse(r.get(1)).unwrap_or_default(),
                depth_rows_last_hour: r.get::<_, i64>(2).to_string(),
                trades_last_hour: r.get::<_, i64>(3).to_string(),
                last_event_time: last,
                lag_seconds: last.map(|t| (now - t).num_milliseconds() as f64 / 1000.0),
            }
        })
        .collect())
}

/// Parses a live notification into the GraphQL types.
fn live_book(payload: &str, symbol: &str, venue: Venue, depth: usize) -> Option<Book> {
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};
    let v: sonic_rs::Value = sonic_rs::from_str(payload).ok()?;
    let side = |k: &str| -> Vec<Level> {
        v.get(k)
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .take(depth)
                    .filter_map(|l| {
                        let l = l.as_array()?;
                        Some(Level {
                            price: l.first()?.as_str()?.to_owned(),
                            qty: l.get(1)?.as_str()?.to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let time = v
        .get("time")
        .and_then(|t| t.as_i64())
        .and_then(DateTime::<Utc>::from_timestamp_millis)?;
    Some(Book {
        symbol: symbol.to_owned(),
        venue,
        time,
        update_id: v
            .get("update_id")
            .and_then(|u| u.as_u64())
            .map(|u| u.to_string())
            .unwrap_or_default(),
        bids: side("bids"),
        asks: side("asks"),
    })
}

fn live_ticker(payload: &str) -> Option<BookTicker> {
    use sonic_rs::JsonValueTrait;
    let v: sonic_rs::Value = sonic_rs::from_str(payload).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    Some(BookTicker {
        time: v
            .get("time")
            .and_then(|t| t.as_i64())
            .and_then(DateTime::<Utc>::from_timestamp_millis)?,
        update_id: v.get("update_id").and_then(|u| u.as_u64())?.to_string(),
        bid_price: s("bid")?,
        bid_qty: s("bid_qty")?,
        ask_price: s("ask")?,
        ask_qty: s("ask_qty")?,
    })
}

fn live_trades(payload: &str) -> Vec<Trade> {
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};
    let Ok(v) = sonic_rs::from_str::<sonic_rs::Value>(payload) else {
        return Vec::new();
    };
    v.get("trades")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some(Trade {
                        time: t
                            .get("time")?
                            .as_i64()
                            .and_then(DateTime::<Utc>::from_timestamp_millis)?,
                        agg_trade_id: t.get("id")?.as_u64()?.to_string(),
                        price: t.get("price")?.as_str()?.to_owned(),
                        qty: t.get("qty")?.as_str()?.to_owned(),
                        first_trade_id: t.get("first")?.as_u64()?.to_string(),
                        last_trade_id: t.get("last")?.as_u64()?.to_string(),
                        buyer_is_maker: t.get("buyer_is_maker")?.as_bool()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The live book (top levels sampled by ingest), latest state first; a slow client skips
    /// intermediate states.
    async fn book(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
        #[graphql(default = 20)] depth: i32,
    ) -> Result<impl Stream<Item = Book>> {
        let pool = ctx.data::<Pool>()?;
        let iid = instrument_id(pool, venue.as_str(), &symbol)
            .await
            .map_err(err)?;
        let sym = input::symbol(&symbol).map_err(err)?;
        let rx = ctx.data::<Hub>()?.book(iid);
        let depth = depth.clamp(1, 1000) as usize;
        Ok(WatchStream::new(rx)
            .filter_map(move |p| p.and_then(|p| live_book(&p, &sym, venue, depth))))
    }

    /// Live best bid/ask, latest state.
    async fn book_ticker(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
    ) -> Result<impl Stream<Item = BookTicker>> {
        let pool = ctx.data::<Pool>()?;
        let iid = instrument_id(pool, venue.as_str(), &symbol)
            .await
            .map_err(err)?;
        let rx = ctx.data::<Hub>()?.ticker(iid);
        Ok(WatchStream::new(rx).filter_map(|p| p.and_then(|p| live_ticker(&p))))
    }

    /// Live trades; a client too slow for the stream loses the oldest.
    async fn trades(
        &self,
        ctx: &Context<'_>,
        symbol: String,
        #[graphql(default)] venue: Venue,
    ) -> Result<impl Stream<Item = Trade>> {
        let pool = ctx.data::<Pool>()?;
        let iid = instrument_id(pool, venue.as_str(), &symbol)
            .await
            .map_err(err)?;
        let rx = ctx.data::<Hub>()?.trades(iid);
        let batches = BroadcastStream::new(rx).filter_map(|r: Result<std::sync::Arc<str>, _>| {
            r.ok().map(|p| tokio_stream::iter(live_trades(&p)))
        });
        Ok(futures_util::StreamExt::flatten(batches))
    }
}

/// Deepest nesting of data fields; the deepest the schema has is four (a connection's node's
/// levels), so this refuses only documents no client needs.
pub const MAX_DATA_DEPTH: usize = 8;
/// Fields in one document, introspection included (the standard introspection query has
/// about a hundred).
pub const MAX_COMPLEXITY: usize = 2_000;

pub type ApiSchema = async_graphql::Schema<Query, async_graphql::EmptyMutation, SubscriptionRoot>;

/// The schema with its limits: depth and complexity of queries, page size and range.
pub fn build(pool: Pool, hub: Hub, limits: Limits) -> ApiSchema {
    async_graphql::Schema::build(Query, async_graphql::EmptyMutation, SubscriptionRoot)
        .data(pool)
        .data(hub)
        .data(limits)
        .extension(crate::codes::ErrorCodes)
        .extension(crate::depth::DataDepth {
            max: MAX_DATA_DEPTH,
        })
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The SDL without data (for the committed `schema.graphql`).
pub fn sdl() -> String {
    async_graphql::Schema::build(Query, async_graphql::EmptyMutation, SubscriptionRoot)
        .finish()
        .sdl()
}
