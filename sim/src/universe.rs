//! The simulated instruments: names, tick and step sizes, starting prices and activity.

use binance::units::ONE;

/// One simulated instrument.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolSpec {
    /// Upper case, as in exchangeInfo (`BTCUSDT`).
    pub symbol: String,
    pub base: String,
    pub quote: String,
    /// PRICE_FILTER.tickSize in e8 units.
    pub tick_e8: i64,
    /// LOT_SIZE.stepSize in e8 units.
    pub step_e8: i64,
    /// Starting mid price, e8 (a multiple of the tick).
    pub start_mid_e8: i64,
    /// Relative activity, 1.0 for the busiest; the 24 h volume ranking follows it.
    pub activity: f64,
    /// 24 h quote volume reported by ticker/24hr (ranked like `activity`).
    pub quote_volume_24h: i64,
}

/// Real names first (so demos look familiar), then synthetic ones.
const BASES: &[(&str, i64)] = &[
    ("BTC", 67_000),
    ("ETH", 3_500),
    ("BNB", 600),
    ("SOL", 150),
    ("XRP", 1),
    ("DOGE", 0),
    ("ADA", 0),
    ("TRX", 0),
    ("AVAX", 35),
    ("LINK", 15),
    ("DOT", 7),
    ("MATIC", 1),
    ("LTC", 80),
    ("BCH", 450),
    ("UNI", 10),
    ("ATOM", 9),
    ("XLM", 0),
    ("ETC", 25),
    ("FIL", 6),
    ("APT", 9),
    ("ARB", 1),
    ("OP", 2),
    ("NEAR", 6),
    ("INJ", 25),
    ("SUI", 1),
    ("TIA", 8),
    ("SEI", 0),
    ("PEPE", 0),
    ("SHIB", 0),
    ("WIF", 2),
    ("AAVE", 100),
    ("MKR", 2_500),
    ("RUNE", 5),
    ("FTM", 0),
];

/// `count` instruments ranked by activity. Prices below 1 get finer ticks, as on Binance.
pub fn generate(count: usize) -> Vec<SymbolSpec> {
    (0..count)
        .map(|i| {
            let (base, whole) = match BASES.get(i) {
                Some((b, p)) => ((*b).to_owned(), *p),
                None => (format!("SIM{i:03}"), (i as i64 * 37) % 500),
            };
            // Sub-unit prices: a few cents to a fraction of a cent.
            let (mid_e8, tick_e8, step_e8) = if whole >= 1_000 {
                (whole * ONE, ONE / 100, ONE / 100_000)
            } else if whole >= 10 {
                (whole * ONE, ONE / 1_000, ONE / 10_000)
            } else if whole >= 1 {
                (whole * ONE + ONE / 4, ONE / 10_000, ONE / 100)
            } else {
                (ONE / 8 + (i as i64 % 7) * ONE / 100, ONE / 100_000, ONE)
            };
            let activity = 1.0 / (1.0 + i as f64 * 0.05);
            SymbolSpec {
                symbol: format!("{base}USDT"),
                base,
                quote: "USDT".to_owned(),
                tick_e8,
                step_e8,
                start_mid_e8: mid_e8 - mid_e8 % tick_e8,
                activity,
                quote_volume_24h: (2_000_000_000.0 * activity) as i64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prices_sit_on_ticks() {
        let specs = generate(250);
        let mut names: Vec<&str> = specs.iter().map(|s| s.symbol.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 250);
        for s in &specs {
            assert!(
                s.start_mid_e8 > 0 && s.start_mid_e8 % s.tick_e8 == 0,
                "{s:?}"
            );
            assert!(s
                .symbol
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        }
        assert!(specs
            .windows(2)
            .all(|w| w[0].quote_volume_24h >= w[1].quote_volume_24h));
    }
}
