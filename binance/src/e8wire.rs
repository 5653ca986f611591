//! The three busy streams read straight into e8 integers: what a collector parses per message.
//! The same fields as [`crate::wire`] (names as Binance spells them), with every price and
//! quantity parsed from the frame's text as it is read, so no string is allocated per level or
//! per value, and fields a collector does not use (`e`, `s`, `T`, `M`) are skipped. `wire` stays
//! the faithful, serializable form; `tests/conformance.rs` checks both read every recorded
//! message the same.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::units::{parse_e8, DecimalError};

/// A price or quantity in e8 units, read from its decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E8(pub i64);

impl<'de> Deserialize<'de> for E8 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<E8, D::Error> {
        struct Decimal;
        impl Visitor<'_> for Decimal {
            type Value = E8;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<E8, E> {
                parse_e8(s).map(E8).map_err(E::custom)
            }
        }
        d.deserialize_str(Decimal)
    }
}

/// One side of a book, `[["price", "qty"], …]`, in e8 units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Levels(pub Vec<(i64, i64)>);

impl<'de> Deserialize<'de> for Levels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Levels, D::Error> {
        struct Side;
        impl<'de> Visitor<'de> for Side {
            type Value = Levels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of [price, qty] decimal strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Levels, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(16));
                while let Some((E8(price), E8(qty))) = seq.next_element::<(E8, E8)>()? {
                    out.push((price, qty));
                }
                Ok(Levels(out))
            }
        }
        d.deserialize_seq(Side)
    }
}

/// Whether a parse error is a decimal that is not exact (as opposed to a malformed message).
pub fn is_decimal_error(message: &str) -> bool {
    message.contains(DecimalError::MESSAGE)
}

/// `<symbol>@depth@100ms` (spot and USD-M).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DepthUpdate {
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "U")]
    pub first_update_id: u64,
    #[serde(rename = "u")]
    pub final_update_id: u64,
    /// USD-M only.
    #[serde(rename = "pu", default)]
    pub prev_final_update_id: Option<u64>,
    #[serde(rename = "b")]
    pub bids: Levels,
    #[serde(rename = "a")]
    pub asks: Levels,
}

/// `<symbol>@bookTicker` (spot has no `E`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BookTicker {
    #[serde(rename = "u")]
    pub update_id: u64,
    #[serde(rename = "E", default)]
    pub event_time: Option<u64>,
    #[serde(rename = "b")]
    pub bid_price: E8,
    #[serde(rename = "B")]
    pub bid_qty: E8,
    #[serde(rename = "a")]
    pub ask_price: E8,
    #[serde(rename = "A")]
    pub ask_qty: E8,
}

/// `<symbol>@aggTrade`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AggTrade {
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "a")]
    pub agg_trade_id: u64,
    #[serde(rename = "p")]
    pub price: E8,
    #[serde(rename = "q")]
    pub qty: E8,
    #[serde(rename = "f")]
    pub first_trade_id: u64,
    #[serde(rename = "l")]
    pub last_trade_id: u64,
    #[serde(rename = "T")]
    pub trade_time: u64,
    #[serde(rename = "m")]
    pub buyer_is_maker: bool,
}
