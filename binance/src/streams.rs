//! Stream names (`btcusdt@depth@100ms`) and which USD-M path serves them.

use crate::Venue;

/// The market-data streams depthbook uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// `<s>@depth@100ms`
    Depth100ms,
    /// `<s>@bookTicker`
    BookTicker,
    /// `<s>@aggTrade`
    AggTrade,
    /// `<s>@markPrice@1s` (USD-M)
    MarkPrice1s,
}

impl StreamKind {
    pub const ALL: [StreamKind; 4] = [
        StreamKind::Depth100ms,
        StreamKind::BookTicker,
        StreamKind::AggTrade,
        StreamKind::MarkPrice1s,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            StreamKind::Depth100ms => "depth@100ms",
            StreamKind::BookTicker => "bookTicker",
            StreamKind::AggTrade => "aggTrade",
            StreamKind::MarkPrice1s => "markPrice@1s",
        }
    }

    /// The stream's name for `symbol` (Binance's stream names are lower case).
    pub fn name(self, symbol: &str) -> String {
        format!("{}@{}", symbol.to_ascii_lowercase(), self.suffix())
    }

    /// Whether `venue` publishes this stream at all.
    pub fn on(self, venue: Venue) -> bool {
        !(self == StreamKind::MarkPrice1s && venue == Venue::Spot)
    }

    /// The USD-M path that carries the stream since Binance split the futures streams:
    /// order-book streams under `/public`, trade-derived and mark-price streams under `/market`.
    /// A stream requested on the other path is accepted but stays silent.
    pub fn usdm_path(self) -> UsdmPath {
        match self {
            StreamKind::Depth100ms | StreamKind::BookTicker => UsdmPath::Public,
            StreamKind::AggTrade | StreamKind::MarkPrice1s => UsdmPath::Market,
        }
    }

    /// Splits `btcusdt@depth@100ms` into (`btcusdt`, Depth100ms).
    pub fn parse(name: &str) -> Option<(&str, StreamKind)> {
        let (sym, suffix) = name.split_once('@')?;
        let kind = StreamKind::ALL.into_iter().find(|k| k.suffix() == suffix)?;
        Some((sym, kind))
    }
}

/// The USD-M WebSocket path prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsdmPath {
    Public,
    Market,
}

impl UsdmPath {
    pub fn prefix(self) -> &'static str {
        match self {
            UsdmPath::Public => "/public",
            UsdmPath::Market => "/market",
        }
    }

    /// The path's combined-stream endpoint: `/public/stream`, `/market/stream`.
    pub fn combined(self) -> &'static str {
        match self {
            UsdmPath::Public => USDM_PUBLIC_COMBINED_PATH,
            UsdmPath::Market => USDM_MARKET_COMBINED_PATH,
        }
    }
}

/// Spot: "Combined streams are accessed at /stream?streams=<streamName1>/<streamName2>/…"
/// (WebSocket Streams, General WSS information).
pub const SPOT_COMBINED_PATH: &str = "/stream";
/// USD-M order-book streams (depth, bookTicker): `wss://fstream.binance.com/public/stream`.
pub const USDM_PUBLIC_COMBINED_PATH: &str = "/public/stream";
/// USD-M trade-derived and mark-price streams: `wss://fstream.binance.com/market/stream`.
pub const USDM_MARKET_COMBINED_PATH: &str = "/market/stream";

/// Where a combined connection for streams of `kind` on `venue` connects.
pub fn combined_path(venue: Venue, kind: StreamKind) -> &'static str {
    match venue {
        Venue::Spot => SPOT_COMBINED_PATH,
        Venue::Usdm => kind.usdm_path().combined(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in StreamKind::ALL {
            let n = k.name("BTCUSDT");
            assert_eq!(StreamKind::parse(&n), Some(("btcusdt", k)));
        }
        assert_eq!(StreamKind::parse("btcusdt@kline_1m"), None);
        assert!(!StreamKind::MarkPrice1s.on(Venue::Spot));
        assert_eq!(StreamKind::AggTrade.usdm_path(), UsdmPath::Market);
        assert_eq!(StreamKind::Depth100ms.usdm_path(), UsdmPath::Public);
    }
}
