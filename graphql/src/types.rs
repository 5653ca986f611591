//! The API's GraphQL types: enums and objects as clients see them. Prices, quantities and
//! exchange ids are strings: exact decimals, and ids beyond GraphQL's 32-bit `Int`.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
#[graphql(remote = "binance::Venue")]
pub enum Venue {
    #[default]
    Spot,
    Usdm,
}

impl Venue {
    /// The name stored in `instruments.venue` (binance's, so the two cannot drift).
    pub fn as_str(self) -> &'static str {
        binance::Venue::from(self).as_str()
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
    /// Its books are collected keeping only the best N levels of each side (the depth window
    /// of its tier, `ingest --depth-levels`); null: every level.
    pub depth_levels: Option<i32>,
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
    /// The stored book keeps only its best N levels per side (the symbol's depth window then),
    /// so no more levels than that exist here; null: every level (a live book: the collector's
    /// whole book, cut to `depth`).
    pub depth_levels: Option<i32>,
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
    /// The narrowest depth window the range's books were kept in (levels per side); null:
    /// every level throughout.
    pub depth_levels: Option<i32>,
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

pub(crate) fn levels(prices: &[String], qtys: &[String]) -> Vec<Level> {
    prices
        .iter()
        .zip(qtys)
        .map(|(p, q)| Level {
            price: p.clone(),
            qty: q.clone(),
        })
        .collect()
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
