//! Frames of Binance's combined streams → typed events, with exact e8 decimals read straight
//! from the frame's text (`binance::e8wire`: no string allocated per level). Pure: no I/O, no
//! clock, no routing; `feed` reads the socket and routes what comes out of here, and the
//! parse benchmark (`ingest/benches/parse.rs`) measures this very code.
//!
//! Decoding is two steps so a frame for a symbol nobody routes is never parsed further than
//! its stream name: [`frame`] reads the name, [`event`] the frame, once.

use std::borrow::Cow;

use binance::e8wire::{self, is_decimal_error};
use binance::streams::StreamKind;
use binance::units::{parse_e8, parse_e8_signed};
use binance::wire::MarkPrice;
use book::sync::DepthEvent;

/// Why a frame was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Neither a stream's message nor a reply to a request.
    #[error("not a combined-stream message")]
    Unexpected,
    /// A `stream` name this collector does not subscribe.
    #[error("unknown stream {0:?}")]
    Stream(String),
    /// The payload does not have its stream's fields.
    #[error("malformed {0} payload")]
    Payload(&'static str),
    /// A price or quantity that is not an exact decimal of at most 8 places.
    #[error("inexact decimal in a {0} payload")]
    Decimal(&'static str),
}

/// One text frame of a combined-stream connection.
#[derive(Debug)]
pub enum Frame<'a> {
    /// A stream's message; `symbol` is lower-case, as in the stream name; `text` the frame.
    Data {
        symbol: &'a str,
        kind: StreamKind,
        text: &'a str,
    },
    /// The reply to a SUBSCRIBE / UNSUBSCRIBE (it carries the request's id).
    Reply,
    /// A reply with an error code: the request was refused.
    Refused,
}

/// Reads a frame's stream name, or tells a request's reply. Binance writes `stream` first, so
/// this reads no further than that; [`event`] then reads the frame once, whole.
pub fn frame(text: &str) -> Result<Frame<'_>, DecodeError> {
    let Ok(stream) = sonic_rs::get(text, &["stream"]) else {
        return match (
            sonic_rs::get(text, &["id"]).is_ok(),
            sonic_rs::get(text, &["code"]).is_ok(),
        ) {
            (true, false) => Ok(Frame::Reply),
            (true, true) => Ok(Frame::Refused),
            (false, _) => Err(DecodeError::Unexpected),
        };
    };
    // Stream names are plain ASCII: a name with an escape is no stream we subscribe.
    let raw = stream.as_raw_cow();
    let name = match &raw {
        Cow::Borrowed(raw) => raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')),
        Cow::Owned(_) => None,
    }
    .filter(|n| !n.contains('\\'));
    let Some((symbol, kind)) = name.and_then(StreamKind::parse) else {
        let name = name.map_or_else(|| raw.into_owned(), str::to_owned);
        return Err(DecodeError::Stream(name));
    };
    Ok(Frame::Data { symbol, kind, text })
}

/// A combined frame's payload; the rest of the frame is skipped.
#[derive(serde::Deserialize)]
struct Data<T> {
    data: T,
}

/// A bookTicker update, e8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticker {
    pub update_id: u64,
    /// USD-M only; spot's bookTicker carries no time.
    pub event_time: Option<u64>,
    pub bid_price: i64,
    pub bid_qty: i64,
    pub ask_price: i64,
    pub ask_qty: i64,
}

/// An aggTrade, e8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    pub agg_trade_id: u64,
    pub price: i64,
    pub qty: i64,
    pub first_trade_id: u64,
    pub last_trade_id: u64,
    pub buyer_is_maker: bool,
    pub trade_time: u64,
    pub event_time: u64,
}

/// A markPrice update, e8 (the funding rate signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub event_time: u64,
    pub mark_price: i64,
    pub index_price: Option<i64>,
    pub estimated_settle_price: Option<i64>,
    pub funding_rate: Option<i64>,
    /// `None` when Binance sends 0 (no funding, e.g. a delivery contract).
    pub next_funding_time: Option<u64>,
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Depth(DepthEvent),
    Ticker(Ticker),
    Trade(Trade),
    Mark(Mark),
}

/// Decodes the payload of a frame of a stream of `kind`.
pub fn event(kind: StreamKind, text: &str) -> Result<Event, DecodeError> {
    let name = kind.suffix();
    let parse_error = |e: sonic_rs::Error| {
        if is_decimal_error(&e.to_string()) {
            DecodeError::Decimal(name)
        } else {
            DecodeError::Payload(name)
        }
    };
    Ok(match kind {
        StreamKind::Depth100ms => {
            let Data { data: d } =
                sonic_rs::from_str::<Data<e8wire::DepthUpdate>>(text).map_err(parse_error)?;
            Event::Depth(DepthEvent {
                event_time_ms: d.event_time,
                first_update_id: d.first_update_id,
                final_update_id: d.final_update_id,
                prev_final_update_id: d.prev_final_update_id,
                bids: d.bids.0,
                asks: d.asks.0,
            })
        }
        StreamKind::BookTicker => {
            let Data { data: t } =
                sonic_rs::from_str::<Data<e8wire::BookTicker>>(text).map_err(parse_error)?;
            Event::Ticker(Ticker {
                update_id: t.update_id,
                event_time: t.event_time,
                bid_price: t.bid_price.0,
                bid_qty: t.bid_qty.0,
                ask_price: t.ask_price.0,
                ask_qty: t.ask_qty.0,
            })
        }
        StreamKind::AggTrade => {
            let Data { data: t } =
                sonic_rs::from_str::<Data<e8wire::AggTrade>>(text).map_err(parse_error)?;
            Event::Trade(Trade {
                agg_trade_id: t.agg_trade_id,
                price: t.price.0,
                qty: t.qty.0,
                first_trade_id: t.first_trade_id,
                last_trade_id: t.last_trade_id,
                buyer_is_maker: t.buyer_is_maker,
                trade_time: t.trade_time,
                event_time: t.event_time,
            })
        }
        StreamKind::MarkPrice1s => Event::Mark(mark(text)?),
    })
}

/// A markPrice update: once a second per symbol, so read through `wire`'s owned strings.
fn mark(text: &str) -> Result<Mark, DecodeError> {
    let name = StreamKind::MarkPrice1s.suffix();
    let Data { data: m } =
        sonic_rs::from_str::<Data<MarkPrice>>(text).map_err(|_| DecodeError::Payload(name))?;
    Ok(Mark {
        event_time: m.event_time,
        mark_price: parse_e8(&m.mark_price).map_err(|_| DecodeError::Decimal(name))?,
        // The others are informative: a value we cannot read exactly is left empty rather
        // than losing the mark price with it.
        index_price: parse_e8(&m.index_price).ok(),
        estimated_settle_price: parse_e8(&m.estimated_settle_price).ok(),
        funding_rate: parse_e8_signed(&m.funding_rate).ok(),
        next_funding_time: (m.next_funding_time > 0).then_some(m.next_funding_time),
    })
}

/// Both steps at once: `(symbol, event)` of a stream's message.
pub fn decode(text: &str) -> Result<Option<(&str, Event)>, DecodeError> {
    match frame(text)? {
        Frame::Data { symbol, kind, text } => Ok(Some((symbol, event(kind, text)?))),
        Frame::Reply | Frame::Refused => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    //! Payloads as Binance documents them (Spot "WebSocket Streams" and USD-M "Websocket
    //! Market Streams" pages), wrapped as the combined stream delivers them.
    use super::*;

    fn combined(stream: &str, data: &str) -> String {
        format!(r#"{{"stream":"{stream}","data":{data}}}"#)
    }

    #[test]
    fn a_usdm_depth_update_decodes_with_its_previous_id() {
        let text = combined(
            "btcusdt@depth@100ms",
            r#"{"e":"depthUpdate","E":123456789,"T":123456788,"s":"BTCUSDT","U":157,"u":160,"pu":149,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}"#,
        );
        let (symbol, ev) = decode(&text).expect("decodes").expect("data");
        assert_eq!(symbol, "btcusdt");
        let Event::Depth(d) = ev else {
            panic!("depth expected, got {ev:?}")
        };
        assert_eq!(
            (d.event_time_ms, d.first_update_id, d.final_update_id),
            (123456789, 157, 160)
        );
        assert_eq!(d.prev_final_update_id, Some(149));
        assert_eq!(d.bids, vec![(240_000, 1_000_000_000)]);
        assert_eq!(d.asks, vec![(260_000, 10_000_000_000)]);
    }

    #[test]
    fn a_spot_book_ticker_has_no_event_time() {
        let text = combined(
            "bnbusdt@bookTicker",
            r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#,
        );
        let (_, ev) = decode(&text).expect("decodes").expect("data");
        assert_eq!(
            ev,
            Event::Ticker(Ticker {
                update_id: 400900217,
                event_time: None,
                bid_price: 2_535_190_000,
                bid_qty: 3_121_000_000,
                ask_price: 2_536_520_000,
                ask_qty: 4_066_000_000,
            })
        );
    }

    #[test]
    fn an_agg_trade_keeps_both_times() {
        let text = combined(
            "bnbbtc@aggTrade",
            r#"{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":1672515782130,"m":true,"M":true}"#,
        );
        let (_, ev) = decode(&text).expect("decodes").expect("data");
        let Event::Trade(t) = ev else {
            panic!("trade expected, got {ev:?}")
        };
        assert_eq!((t.trade_time, t.event_time), (1672515782130, 1672515782136));
        assert_eq!(
            (t.agg_trade_id, t.first_trade_id, t.last_trade_id),
            (12345, 100, 105)
        );
        assert_eq!(
            (t.price, t.qty, t.buyer_is_maker),
            (100_000, 10_000_000_000, true)
        );
    }

    #[test]
    fn a_mark_price_keeps_a_negative_funding_rate() {
        let text = combined(
            "btcusdt@markPrice@1s",
            r#"{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"-0.00038167","T":0}"#,
        );
        let (_, ev) = decode(&text).expect("decodes").expect("data");
        let Event::Mark(m) = ev else {
            panic!("mark expected, got {ev:?}")
        };
        assert_eq!(m.mark_price, 1_179_415_000_000);
        assert_eq!(m.funding_rate, Some(-38_167));
        assert_eq!(m.next_funding_time, None);
    }

    #[test]
    fn replies_are_told_apart_from_refusals() {
        assert!(matches!(
            frame(r#"{"result":null,"id":1}"#),
            Ok(Frame::Reply)
        ));
        assert!(matches!(
            frame(r#"{"code":2,"msg":"Invalid request","id":1}"#),
            Ok(Frame::Refused)
        ));
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert_eq!(frame("not json").err(), Some(DecodeError::Unexpected));
        assert_eq!(
            frame(&combined("btcusdt@kline_1m", "{}")).err(),
            Some(DecodeError::Stream("btcusdt@kline_1m".into()))
        );
        assert_eq!(
            decode(&combined("btcusdt@aggTrade", r#"{"e":"aggTrade"}"#)).err(),
            Some(DecodeError::Payload("aggTrade"))
        );
        let nine_places = r#"{"u":1,"s":"X","b":"1.000000001","B":"1","a":"2","A":"1"}"#;
        assert_eq!(
            decode(&combined("x@bookTicker", nine_places)).err(),
            Some(DecodeError::Decimal("bookTicker"))
        );
    }
}
