//! Binance's market-data messages, field for field (names as Binance spells them).
//! Prices and quantities stay decimal strings here; `units` makes them exact integers.
//! Optional fields exist on one venue only: `serialize` omits them when absent, so the same
//! type writes spot's and USD-M's exact shapes.

use serde::{Deserialize, Serialize};

/// One price level, `["price", "qty"]`.
pub type Level = [String; 2];

/// `<symbol>@depth@100ms`: spot `e,E,s,U,u,b,a`; USD-M adds `T` and `pu`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepthUpdate {
    #[serde(rename = "e")]
    pub event_type: String,
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "T", default, skip_serializing_if = "Option::is_none")]
    pub transaction_time: Option<u64>,
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "U")]
    pub first_update_id: u64,
    #[serde(rename = "u")]
    pub final_update_id: u64,
    #[serde(rename = "pu", default, skip_serializing_if = "Option::is_none")]
    pub prev_final_update_id: Option<u64>,
    #[serde(rename = "b")]
    pub bids: Vec<Level>,
    #[serde(rename = "a")]
    pub asks: Vec<Level>,
}

/// `<symbol>@bookTicker`: spot `u,s,b,B,a,A`; USD-M `e,u,E,T,s,b,B,a,A`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookTicker {
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(rename = "u")]
    pub update_id: u64,
    #[serde(rename = "E", default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<u64>,
    #[serde(rename = "T", default, skip_serializing_if = "Option::is_none")]
    pub transaction_time: Option<u64>,
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "b")]
    pub bid_price: String,
    #[serde(rename = "B")]
    pub bid_qty: String,
    #[serde(rename = "a")]
    pub ask_price: String,
    #[serde(rename = "A")]
    pub ask_qty: String,
}

/// `<symbol>@aggTrade`; spot adds the ignored `M`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggTrade {
    #[serde(rename = "e")]
    pub event_type: String,
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "a")]
    pub agg_trade_id: u64,
    #[serde(rename = "p")]
    pub price: String,
    #[serde(rename = "q")]
    pub qty: String,
    #[serde(rename = "f")]
    pub first_trade_id: u64,
    #[serde(rename = "l")]
    pub last_trade_id: u64,
    #[serde(rename = "T")]
    pub trade_time: u64,
    #[serde(rename = "m")]
    pub buyer_is_maker: bool,
    #[serde(rename = "M", default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<bool>,
}

/// `<symbol>@markPrice@1s` (USD-M).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkPrice {
    #[serde(rename = "e")]
    pub event_type: String,
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "p")]
    pub mark_price: String,
    #[serde(rename = "i")]
    pub index_price: String,
    #[serde(rename = "P")]
    pub estimated_settle_price: String,
    #[serde(rename = "r")]
    pub funding_rate: String,
    #[serde(rename = "T")]
    pub next_funding_time: u64,
}

/// `GET /api/v3/depth` (spot) and `GET /fapi/v1/depth` (USD-M, which adds `E` and `T`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepthSnapshot {
    #[serde(rename = "lastUpdateId")]
    pub last_update_id: u64,
    #[serde(rename = "E", default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<u64>,
    #[serde(rename = "T", default, skip_serializing_if = "Option::is_none")]
    pub transaction_time: Option<u64>,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// A payload on a combined stream connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Combined<T> {
    pub stream: String,
    pub data: T,
}

/// A WebSocket control request (`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WsRequest {
    pub method: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<sonic_rs::Value>,
    pub id: u64,
}

/// Binance's REST error body, `{"code": -1121, "msg": "Invalid symbol."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: i64,
    pub msg: String,
}

/// `exchangeInfo`: the fields the collector reads, on both venues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeInfo {
    pub timezone: String,
    pub server_time: u64,
    pub rate_limits: Vec<RateLimit>,
    pub symbols: Vec<SymbolInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub rate_limit_type: String,
    pub interval: String,
    pub interval_num: u32,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymbolInfo {
    pub symbol: String,
    pub status: String,
    pub base_asset: String,
    pub quote_asset: String,
    /// USD-M only: `PERPETUAL`, `CURRENT_QUARTER`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_type: Option<String>,
    pub filters: Vec<Filter>,
}

impl SymbolInfo {
    /// `PRICE_FILTER.tickSize` as sent.
    pub fn tick_size(&self) -> Option<&str> {
        self.filters.iter().find_map(|f| match f {
            Filter::PriceFilter { tick_size, .. } => Some(tick_size.as_str()),
            _ => None,
        })
    }

    /// `LOT_SIZE.stepSize` as sent.
    pub fn step_size(&self) -> Option<&str> {
        self.filters.iter().find_map(|f| match f {
            Filter::LotSize { step_size, .. } => Some(step_size.as_str()),
            _ => None,
        })
    }
}

/// The symbol filters the collector needs; all others are kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "filterType")]
pub enum Filter {
    #[serde(rename = "PRICE_FILTER", rename_all = "camelCase")]
    PriceFilter {
        min_price: String,
        max_price: String,
        tick_size: String,
    },
    #[serde(rename = "LOT_SIZE", rename_all = "camelCase")]
    LotSize {
        min_qty: String,
        max_qty: String,
        step_size: String,
    },
    #[serde(other)]
    Other,
}

/// `GET /api/v3/ticker/24hr` and `/fapi/v1/ticker/24hr`: the fields the collector reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticker24h {
    pub symbol: String,
    pub last_price: String,
    pub volume: String,
    pub quote_volume: String,
    pub open_time: u64,
    pub close_time: u64,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_and_usdm_depth_have_binance_shapes() {
        let spot = DepthUpdate {
            event_type: "depthUpdate".into(),
            event_time: 1,
            transaction_time: None,
            symbol: "BNBBTC".into(),
            first_update_id: 157,
            final_update_id: 160,
            prev_final_update_id: None,
            bids: vec![["0.0024".into(), "10".into()]],
            asks: vec![],
        };
        assert_eq!(
            sonic_rs::to_string(&spot).expect("json"),
            r#"{"e":"depthUpdate","E":1,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[]}"#
        );
        let usdm = DepthUpdate {
            transaction_time: Some(2),
            prev_final_update_id: Some(149),
            ..spot
        };
        let json = sonic_rs::to_string(&usdm).expect("json");
        assert_eq!(
            json,
            r#"{"e":"depthUpdate","E":1,"T":2,"s":"BNBBTC","U":157,"u":160,"pu":149,"b":[["0.0024","10"]],"a":[]}"#
        );
        let back: DepthUpdate = sonic_rs::from_str(&json).expect("parse");
        assert_eq!(back, usdm);
    }

    #[test]
    fn filters_parse_and_unknown_ones_are_kept_as_other() {
        let s = r#"{"symbol":"ETHBTC","status":"TRADING","baseAsset":"ETH","quoteAsset":"BTC",
            "filters":[{"filterType":"PRICE_FILTER","minPrice":"0.00000100","maxPrice":"100000.00000000","tickSize":"0.00000100"},
                       {"filterType":"LOT_SIZE","minQty":"0.00010000","maxQty":"100000.00000000","stepSize":"0.00010000"},
                       {"filterType":"ICEBERG_PARTS","limit":10}]}"#;
        let info: SymbolInfo = sonic_rs::from_str(s).expect("parse");
        assert_eq!(info.tick_size(), Some("0.00000100"));
        assert_eq!(info.step_size(), Some("0.00010000"));
        assert_eq!(info.filters[2], Filter::Other);
    }
}
