//! Exact decimals for prices and quantities.
//!
//! Binance sends prices and quantities as decimal strings with at most 8 fractional digits.
//! Inside the code they are `i64` counts of 1e-8 ("e8 units"): exact, cheap to compare and
//! hash, and wide enough for any Binance value (9.2e10 at most). A string with more than 8
//! fractional digits that are not zeros is refused, never rounded.

/// Fractional digits Binance uses at most (spot formats every value with exactly 8).
pub const SCALE: u32 = 8;
/// 10^SCALE.
pub const ONE: i64 = 100_000_000;

/// A decimal string that is not an exact non-negative value with at most 8 fractional digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an exact decimal with at most 8 fractional digits: {0:?}")]
pub struct DecimalError(pub String);

impl DecimalError {
    /// How every such error's message starts (a parser that only passes messages on, such as
    /// serde's, can still tell it apart).
    pub const MESSAGE: &'static str = "not an exact decimal with at most 8 fractional digits";
}

/// One side of a book as Binance sends it (`[["price", "qty"], …]`, `wire::Level`) in e8 units;
/// the first level that is not an exact decimal refuses the whole side.
pub fn parse_levels(side: &[[String; 2]]) -> Result<Vec<(i64, i64)>, DecimalError> {
    side.iter()
        .map(|[p, q]| Ok((parse_e8(p)?, parse_e8(q)?)))
        .collect()
}

/// Parses "12.3400" into e8 units (1_234_000_000). Only digits and one dot; no sign, no exponent.
pub fn parse_e8(s: &str) -> Result<i64, DecimalError> {
    let err = || DecimalError(s.to_owned());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    let (kept, rest) = frac.split_at(frac.len().min(SCALE as usize));
    if !rest.bytes().all(|b| b == b'0') {
        return Err(err());
    }
    let mut v: i64 = 0;
    for b in int.bytes().chain(kept.bytes()) {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(err)?;
    }
    for _ in kept.len()..SCALE as usize {
        v = v.checked_mul(10).ok_or_else(err)?;
    }
    Ok(v)
}

/// Like [`parse_e8`], with an optional leading minus (funding rates can be negative).
pub fn parse_e8_signed(s: &str) -> Result<i64, DecimalError> {
    match s.strip_prefix('-') {
        Some(rest) => parse_e8(rest).map(|v| -v),
        None => parse_e8(s),
    }
}

/// Formats e8 units with exactly `decimals` fractional digits (`decimals` <= 8); digits beyond
/// `decimals` must be zero, or they are kept (the value is never rounded).
pub fn format_e8(v: i64, decimals: u32) -> String {
    let mut out = String::with_capacity(24);
    push_e8(&mut out, v, decimals);
    out
}

/// [`format_e8`] appended to `out`: digits written directly, no allocation of its own (every
/// price and quantity announced to the API's subscribers goes through it).
pub fn push_e8(out: &mut String, v: i64, decimals: u32) {
    let a = v.unsigned_abs();
    let (mut int, mut frac) = (a / ONE as u64, a % ONE as u64);
    if v < 0 {
        out.push('-');
    }
    let mut digits = [b'0'; 20]; // u64::MAX has 20 digits
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (int % 10) as u8;
        int /= 10;
        if int == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
    let mut fraction = [b'0'; SCALE as usize];
    for d in fraction.iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    let significant = fraction
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(0, |p| p + 1);
    let keep = (decimals.min(SCALE) as usize).max(significant);
    if keep > 0 {
        out.push('.');
        out.extend(fraction[..keep].iter().map(|&d| char::from(d)));
    }
}

/// Fractional digits of a step such as a tick size: 0.01 (1_000_000 e8) → 2.
pub fn decimals_of(step_e8: i64) -> u32 {
    let mut d = SCALE;
    let mut v = step_e8;
    while d > 0 && v % 10 == 0 && v != 0 {
        v /= 10;
        d -= 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_parses_whole_or_not_at_all() {
        let side = |l: &[(&str, &str)]| -> Vec<[String; 2]> {
            l.iter()
                .map(|(p, q)| [p.to_string(), q.to_string()])
                .collect()
        };
        let ok = side(&[("67000.01000000", "0.50000000"), ("66999.9", "0")]);
        assert_eq!(
            parse_levels(&ok),
            Ok(vec![
                (6_700_001_000_000, 50_000_000),
                (6_699_990_000_000, 0)
            ])
        );
        let bad = side(&[("1.0", "2.0"), ("1.000000001", "1")]);
        assert_eq!(parse_levels(&bad), Err(DecimalError("1.000000001".into())));
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_e8("0.01634790"), Ok(1_634_790));
        assert_eq!(parse_e8("67234.01"), Ok(6_723_401_000_000));
        assert_eq!(parse_e8("1"), Ok(ONE));
        assert_eq!(
            parse_e8("0.000000010"),
            Ok(1),
            "trailing zeros past 8 digits are fine"
        );
        for bad in [
            "",
            ".5",
            "1.2.3",
            "-1",
            "1e5",
            "0.000000001",
            "abc",
            "99999999999999999999",
        ] {
            assert!(parse_e8(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_without_rounding() {
        assert_eq!(format_e8(1_634_790, 8), "0.01634790");
        assert_eq!(format_e8(6_723_401_000_000, 2), "67234.01");
        assert_eq!(format_e8(ONE, 0), "1");
        assert_eq!(format_e8(1, 2), "0.00000001", "never rounds away digits");
        assert_eq!(format_e8(-150_000_000, 2), "-1.50");
        assert_eq!(format_e8(0, 0), "0");
        assert_eq!(format_e8(0, 2), "0.00");
        assert_eq!(format_e8(i64::MAX, 0), "92233720368.54775807");
        assert_eq!(format_e8(i64::MIN, 0), "-92233720368.54775808");
        assert_eq!(parse_e8_signed("-0.00010000"), Ok(-10_000));
        assert!(parse_e8_signed("--1").is_err());
        for v in [0, 1, 12_345, ONE, 987_654_321_012] {
            assert_eq!(parse_e8(&format_e8(v, 8)), Ok(v));
        }
    }

    #[test]
    fn decimals_of_steps() {
        assert_eq!(decimals_of(1_000_000), 2);
        assert_eq!(decimals_of(1), 8);
        assert_eq!(decimals_of(ONE), 0);
        assert_eq!(decimals_of(10 * ONE), 0);
    }
}
