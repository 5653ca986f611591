//! The queries: resolvers that check their arguments, then read through `book_at`, keyset
//! pages or plain SQL.

// Resolver arguments are the API's field arguments; bundling them would change the schema.
#![allow(clippy::too_many_arguments)]

use async_graphql::connection::Connection;
use async_graphql::{Context, Object, Result};
use chrono::{DateTime, Utc};

use crate::db::{instrument_id, ApiError, Pool};
use crate::error::err;
use crate::input::{self, KeyKind};
use crate::limits::Limits;
use crate::paging::{page, range, Keyset, Range};
use crate::types::{
    book_top_from_row, Book, BookTicker, BookTop, Candle, DataQuality, DepthUpdate, Gap,
    Instrument, Interval, Level, SymbolStats, Tier, Trade, Venue,
};

/// A range query's page: the arguments checked against the limits, then one keyset page of
/// `q` read by `row`.
async fn keyset_page<T, F>(
    ctx: &Context<'_>,
    symbol: &str,
    venue: Venue,
    (from, to, first, after): (DateTime<Utc>, DateTime<Utc>, Option<i32>, Option<String>),
    q: &Keyset,
    row: F,
) -> Result<Connection<String, T>>
where
    T: async_graphql::OutputType,
    F: Fn(&tokio_postgres::Row) -> T,
{
    let pool = ctx.data::<Pool>()?;
    let r = range(pool, ctx.data::<Limits>()?, symbol, venue, from, to, first)
        .await
        .map_err(err)?;
    page(pool, &r, q, after, row).await.map_err(err)
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
                "SELECT id, venue, symbol, base, quote, status, tick_size::text, step_size::text, tier, volume_rank, active, depth_levels
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
                depth_levels: r.get(11),
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
        let q = Keyset {
            table: "book_ticker",
            cols: "time, update_id, bid_price::text, bid_qty::text, ask_price::text, ask_qty::text",
            time_col: "time",
            key: &[("time", KeyKind::Time), ("update_id", KeyKind::Int)],
        };
        keyset_page(ctx, &symbol, venue, (from, to, first, after), &q, |r| {
            BookTicker {
                time: r.get(0),
                update_id: r.get::<_, i64>(1).to_string(),
                bid_price: r.get(2),
                bid_qty: r.get(3),
                ask_price: r.get(4),
                ask_qty: r.get(5),
            }
        })
        .await
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
        let q = Keyset { table: "trades", cols: "time, agg_trade_id, price::text, qty::text, first_trade_id, last_trade_id, buyer_is_maker", time_col: "time", key: &[("time", KeyKind::Time), ("agg_trade_id", KeyKind::Int)] };
        keyset_page(ctx, &symbol, venue, (from, to, first, after), &q, |r| {
            Trade {
                time: r.get(0),
                agg_trade_id: r.get::<_, i64>(1).to_string(),
                price: r.get(2),
                qty: r.get(3),
                first_trade_id: r.get::<_, i64>(4).to_string(),
                last_trade_id: r.get::<_, i64>(5).to_string(),
                buyer_is_maker: r.get(6),
            }
        })
        .await
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
        keyset_page(ctx, &symbol, venue, (from, to, first, after), &q, |r| {
            DepthUpdate {
                time: r.get(0),
                first_update_id: r.get::<_, i64>(1).to_string(),
                update_id: r.get::<_, i64>(2).to_string(),
                prev_update_id: r.get::<_, Option<i64>>(3).map(|v| v.to_string()),
                side: r.get(4),
                price: r.get(5),
                qty: r.get(6),
            }
        })
        .await
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
        let q = Keyset { table: "book_top", cols: "time, update_id, mid::text, spread::text, microprice::text, imbalance_1, imbalance_5, imbalance_10, bid_prices::text[], bid_qtys::text[], ask_prices::text[], ask_qtys::text[]", time_col: "time", key: &[("time", KeyKind::Time), ("update_id", KeyKind::Int)] };
        keyset_page(
            ctx,
            &symbol,
            venue,
            (from, to, first, after),
            &q,
            book_top_from_row,
        )
        .await
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
        let view = match interval {
            Interval::S1 => "trades_1s",
            Interval::M1 => "trades_1m",
            Interval::H1 => "trades_1h",
        };
        let q = Keyset { table: view, cols: "bucket, open::text, high::text, low::text, close::text, volume::text, quote_volume::text, vwap::text, buy_volume::text, sell_volume::text, trade_count", time_col: "bucket", key: &[("bucket", KeyKind::Time)] };
        keyset_page(ctx, &symbol, venue, (from, to, first, after), &q, |r| {
            Candle {
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
            }
        })
        .await
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
    // The window comes from the checkpoint book_at starts from (its choice, repeated).
    let rows = c
        .query(
            "SELECT b.side, b.price::text, b.qty::text, b.book_update_id, b.book_time,
                    (SELECT c.levels FROM book_checkpoints c
                     WHERE c.instrument_id = $1 AND c.time <= $2
                     ORDER BY c.time DESC, c.update_id DESC LIMIT 1)
             FROM book_at($1::int4, $2::timestamptz, $3::int4) b",
            &[&iid, &at, &depth],
        )
        .await?;
    let (mut bids, mut asks) = (Vec::new(), Vec::new());
    let (mut uid, mut time, mut depth_levels) = (None, None, None);
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
        depth_levels = r.get::<_, Option<i32>>(5);
    }
    Ok(Book {
        symbol: input::symbol(symbol)?,
        venue,
        time: time.unwrap_or(at),
        update_id: uid.map(|u| u.to_string()).unwrap_or_default(),
        bids,
        asks,
        depth_levels,
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
    let range = export::Range {
        from: r.from,
        to: r.to,
    };
    let depth_levels = export::segments::depth_levels(&c, r.iid, range).await?;
    Ok(DataQuality {
        symbol: input::symbol(symbol)?,
        venue,
        from: r.from,
        to: r.to,
        coverage_percent: (covered / width * 100.0).clamp(0.0, 100.0),
        gaps,
        resyncs: counts.get::<_, i64>(0) as i32,
        disconnects: counts.get::<_, i64>(1) as i32,
        depth_levels,
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
