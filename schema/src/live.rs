//! The LISTEN/NOTIFY contract between ingest, which sends inside each batch's transaction (so
//! a listener only sees committed rows), and the API, which listens and serves subscriptions:
//! channel names and payloads, written once for both. Decimals are strings, exact as stored;
//! times are Unix milliseconds.

use serde::{Deserialize, Serialize};

/// `book_top` samples: [`BookNote`].
pub const BOOK_CHANNEL: &str = "depthbook_book";
/// Best bid/ask: [`TickerNote`].
pub const TICKER_CHANNEL: &str = "depthbook_book_ticker";
/// Trades of a batch: [`TradesNote`], several when one would be too long.
pub const TRADES_CHANNEL: &str = "depthbook_trades";
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; this leaves room.
pub const MAX_PAYLOAD: usize = 7_900;

/// The latest sampled book of an instrument; levels are `[price, qty]`, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookNote {
    pub instrument_id: i32,
    pub time: u64,
    pub update_id: u64,
    pub mid: Option<String>,
    pub bids: Vec<(String, String)>,
    pub asks: Vec<(String, String)>,
}

/// The latest best bid/ask of an instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickerNote {
    pub instrument_id: i32,
    pub time: u64,
    pub update_id: u64,
    pub bid: String,
    pub bid_qty: String,
    pub ask: String,
    pub ask_qty: String,
}

/// One aggregated trade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradeNote {
    pub id: u64,
    pub time: u64,
    pub price: String,
    pub qty: String,
    pub first: u64,
    pub last: u64,
    pub buyer_is_maker: bool,
}

/// Trades of one instrument, in the order they were stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradesNote {
    pub instrument_id: i32,
    pub trades: Vec<TradeNote>,
}

/// The instrument a payload on any of the channels is about, read without parsing the rest
/// (the listener routes every payload by it).
#[derive(Debug, Deserialize)]
pub struct Addressed {
    pub instrument_id: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let book = BookNote {
            instrument_id: 3,
            time: 1_764_000_000_123,
            update_id: 42,
            mid: Some("67000.005".into()),
            bids: vec![("67000".into(), "0.5".into())],
            asks: vec![("67000.01".into(), "1.25".into())],
        };
        let text = sonic_rs::to_string(&book).expect("json");
        assert!(text.contains(r#""bids":[["67000","0.5"]]"#), "{text}");
        assert_eq!(sonic_rs::from_str::<BookNote>(&text).expect("parse"), book);
        let trades = TradesNote {
            instrument_id: 3,
            trades: vec![TradeNote {
                id: 9,
                time: 1,
                price: "1.5".into(),
                qty: "2".into(),
                first: 10,
                last: 11,
                buyer_is_maker: true,
            }],
        };
        let text = sonic_rs::to_string(&trades).expect("json");
        assert_eq!(
            sonic_rs::from_str::<TradesNote>(&text).expect("parse"),
            trades
        );
        let addressed: Addressed = sonic_rs::from_str(&text).expect("any payload has an id");
        assert_eq!(addressed.instrument_id, 3);
    }
}
