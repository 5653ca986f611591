//! Arguments checked before any SQL: a symbol Binance could list, a time RFC 3339 can write,
//! a cursor this server made. What fails here is the client's mistake (GraphQL
//! `BAD_USER_INPUT` with reason `BAD_REQUEST`, HTTP 400); only database trouble is
//! `INTERNAL_SERVER_ERROR` or a 5xx.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;

use crate::error::ApiError;

/// RFC 3339 writes years with four digits, so `0001-01-01T00:00:00Z` ..
/// `9999-12-31T23:59:59.999999Z` is every time a client can mean (PostgreSQL's `timestamptz`
/// holds all of it; chrono parses further, into what PostgreSQL refuses).
fn time_bounds() -> (DateTime<Utc>, DateTime<Utc>) {
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
    let earliest = day(1, 1, 1).and_hms_opt(0, 0, 0).unwrap_or_default();
    let latest = day(9999, 12, 31)
        .and_hms_micro_opt(23, 59, 59, 999_999)
        .unwrap_or_default();
    (earliest.and_utc(), latest.and_utc())
}

/// The symbol as stored (trimmed, upper case), or why it cannot be one.
pub fn symbol(s: &str) -> Result<String, ApiError> {
    let sym = s.trim().to_uppercase();
    if binance::rules::is_symbol(&sym) {
        return Ok(sym);
    }
    let shown: String = s.chars().take(40).collect();
    Err(ApiError::BadRequest(format!(
        "{shown:?} is not a symbol: 1 to {} letters, digits, '-', '_' or '.'",
        binance::rules::MAX_SYMBOL_CHARS
    )))
}

/// `t` when the database can compare with it; `name` is the argument, for the message.
pub fn time(name: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let (earliest, latest) = time_bounds();
    if (earliest..=latest).contains(&t) {
        Ok(t)
    } else {
        Err(ApiError::BadRequest(format!(
            "`{name}` ({t}) is outside years 0001 to 9999"
        )))
    }
}

/// The SQL type of one column of a keyset (a cursor part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `timestamptz`, carried as microseconds since the Unix epoch.
    Time,
    /// `int8`.
    Int,
    /// `text`, `bid` or `ask`.
    Side,
    /// `numeric`, exact.
    Price,
}

impl KeyKind {
    /// The column as the cursor text carries it.
    pub fn select(self, column: &str) -> String {
        match self {
            KeyKind::Time => format!("(extract(epoch FROM {column}) * 1000000)::int8::text"),
            _ => format!("{column}::text"),
        }
    }

    /// The parameter as SQL compares it with the column.
    pub fn param(self, n: usize) -> String {
        let ty = match self {
            KeyKind::Time => "timestamptz",
            KeyKind::Int => "int8",
            KeyKind::Side => "text",
            KeyKind::Price => "numeric",
        };
        format!("${n}::{ty}")
    }

    fn parse(self, part: &str) -> Option<KeyValue> {
        match self {
            KeyKind::Time => {
                let t = DateTime::from_timestamp_micros(part.parse().ok()?)?;
                time("after", t).ok().map(KeyValue::Time)
            }
            KeyKind::Int => part.parse().ok().map(KeyValue::Int),
            KeyKind::Side => matches!(part, "bid" | "ask").then(|| KeyValue::Side(part.into())),
            KeyKind::Price => Decimal::from_str_exact(part).ok().map(KeyValue::Price),
        }
    }
}

/// One decoded cursor part, typed as its column.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    Time(DateTime<Utc>),
    Int(i64),
    Side(String),
    Price(Decimal),
}

impl KeyValue {
    pub fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            KeyValue::Time(t) => t,
            KeyValue::Int(i) => i,
            KeyValue::Side(s) => s,
            KeyValue::Price(p) => p,
        }
    }
}

/// Cursors are the key columns' text joined by `|`, in hex: opaque to clients, and every
/// byte of them is checked on the way back.
pub fn encode_cursor(parts: &[String]) -> String {
    hex::encode(parts.join("|"))
}

/// The longest cursor [`encode_cursor`] makes is far below this; longer is not ours.
const MAX_CURSOR_LEN: usize = 512;

pub fn decode_cursor(c: &str, kinds: &[KeyKind]) -> Result<Vec<KeyValue>, ApiError> {
    let bad = || {
        let shown: String = c.chars().take(40).collect();
        ApiError::BadRequest(format!(
            "invalid cursor {shown:?}: pass a cursor from this API"
        ))
    };
    if c.len() > MAX_CURSOR_LEN {
        return Err(bad());
    }
    let bytes = hex::decode(c).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<&str> = text.split('|').collect();
    if parts.len() != kinds.len() {
        return Err(bad());
    }
    kinds
        .iter()
        .zip(parts)
        .map(|(k, p)| k.parse(p).ok_or_else(bad))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRADES: &[KeyKind] = &[KeyKind::Time, KeyKind::Int];
    const DEPTH: &[KeyKind] = &[KeyKind::Int, KeyKind::Side, KeyKind::Price];

    #[test]
    fn a_cursor_round_trips_typed() {
        let c = encode_cursor(&["1764000000123456".into(), "42".into()]);
        let parts = decode_cursor(&c, TRADES).expect("ours");
        assert_eq!(
            parts[0],
            KeyValue::Time(DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("t"))
        );
        assert_eq!(parts[1], KeyValue::Int(42));
        let c = encode_cursor(&["7".into(), "ask".into(), "0.00012300".into()]);
        let parts = decode_cursor(&c, DEPTH).expect("ours");
        assert_eq!(
            parts[2],
            KeyValue::Price(Decimal::from_str_exact("0.00012300").expect("d"))
        );
    }

    #[test]
    fn forged_cursors_are_bad_requests() {
        let forged = [
            "aéa".to_owned(),                    // not hex, and not at a char boundary
            "zz".to_owned(),                     // not hex
            "abc".to_owned(),                    // odd length
            hex::encode("a|b"),                  // parts of the wrong type
            hex::encode("1"),                    // too few parts
            hex::encode([0xff, 0xfe]),           // not UTF-8
            hex::encode("1|2|3"),                // too many parts
            hex::encode("-99999999999999999|1"), // before year 1
            "00".repeat(MAX_CURSOR_LEN),         // too long
        ];
        for c in &forged {
            let e = decode_cursor(c, TRADES).expect_err(c);
            assert_eq!(e.code(), "BAD_REQUEST", "{c}");
        }
        for c in [
            hex::encode("1|x|y"),
            hex::encode("1|bid|NaN"),
            hex::encode("1|bid|1e999"),
        ] {
            assert_eq!(
                decode_cursor(&c, DEPTH).expect_err(&c).code(),
                "BAD_REQUEST"
            );
        }
    }

    #[test]
    fn symbols_are_checked_and_normalised() {
        assert_eq!(symbol(" btcusdt ").expect("ok"), "BTCUSDT");
        assert_eq!(symbol("币安人生usdt").expect("ok"), "币安人生USDT");
        for bad in ["BTC\u{0}USDT", "", "x".repeat(10_000).as_str(), "BTC USDT"] {
            assert_eq!(symbol(bad).expect_err(bad).code(), "BAD_REQUEST");
        }
    }

    #[test]
    fn times_outside_four_digit_years_are_refused() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect(s)
                .with_timezone(&Utc)
        };
        assert!(time("at", t("2026-11-26T00:00:00Z")).is_ok());
        assert!(time("at", t("0001-01-01T00:00:00Z")).is_ok());
        let before = DateTime::from_timestamp(-220_000_000_000, 0).expect("chrono holds it");
        assert_eq!(time("at", before).expect_err("-5000").code(), "BAD_REQUEST");
        let after = DateTime::from_timestamp(300_000_000_000, 0).expect("chrono holds it");
        assert_eq!(
            time("to", after).expect_err("year 11476").code(),
            "BAD_REQUEST"
        );
    }
}
