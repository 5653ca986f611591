//! The symbol universe: exchangeInfo (status TRADING) ranked by 24 h quote volume,
//! tiers by rank, `--symbols` pins a list, `--top N` takes the first N; upserted into
//! `instruments`.

use std::collections::HashMap;

use binance::units::parse_e8;
use binance::wire::ExchangeInfo;
use binance::Venue;
use tokio_postgres::Client;

use crate::rest_client::{Rest, RestError};

/// Snapshot priority and depth follow the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Critical,
    High,
    Medium,
    Low,
}

impl Tier {
    /// Tiers by rank: critical 1–20, high 21–60, medium 61–120, low 121+.
    pub fn of_rank(rank: usize) -> Tier {
        match rank {
            0..=20 => Tier::Critical,
            21..=60 => Tier::High,
            61..=120 => Tier::Medium,
            _ => Tier::Low,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Critical => "critical",
            Tier::High => "high",
            Tier::Medium => "medium",
            Tier::Low => "low",
        }
    }
}

/// The most levels a depth window may name: the deepest snapshot Binance serves, so a larger
/// window would keep no less than `all`.
pub const MAX_DEPTH_LEVELS: u32 = binance::rules::SPOT_SNAPSHOT_LIMIT;

/// How many levels of each side a tier's books keep (`--depth-levels`): `None` is every level.
/// Indexed by tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepthLevels([Option<u32>; 4]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DepthLevelsError {
    #[error("{0:?}: expected TIER=N or TIER=all, TIER one of critical, high, medium, low")]
    Form(String),
    #[error("{0:?}: a window is 1 to {MAX_DEPTH_LEVELS} levels, or all")]
    Size(String),
}

impl DepthLevels {
    /// The window of a tier's books.
    pub fn of(&self, tier: Tier) -> Option<u32> {
        self.0[tier as usize]
    }

    /// `TIER=N` or `TIER=all` items (e.g. `low=100`); tiers not named keep every level.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<DepthLevels, DepthLevelsError> {
        let mut out = DepthLevels::default();
        for item in items
            .iter()
            .map(|s| s.as_ref().trim())
            .filter(|s| !s.is_empty())
        {
            let form = || DepthLevelsError::Form(item.to_owned());
            let (tier, n) = item.split_once('=').ok_or_else(form)?;
            let tier = match tier.trim() {
                "critical" => Tier::Critical,
                "high" => Tier::High,
                "medium" => Tier::Medium,
                "low" => Tier::Low,
                _ => return Err(form()),
            };
            out.0[tier as usize] = match n.trim() {
                "all" => None,
                n => match n.parse::<u32>() {
                    Ok(n) if (1..=MAX_DEPTH_LEVELS).contains(&n) => Some(n),
                    _ => return Err(DepthLevelsError::Size(item.to_owned())),
                },
            };
        }
        Ok(out)
    }
}

/// One collected instrument.
#[derive(Debug, Clone)]
pub struct Instrument {
    pub id: i32,
    pub venue: Venue,
    pub symbol: String,
    pub tier: Tier,
    pub rank: usize,
    /// Its books keep only this many levels per side; `None`: every level.
    pub depth_levels: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum UniverseError {
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error("unknown or not trading on {venue}: {symbols}")]
    Unknown {
        venue: &'static str,
        symbols: String,
    },
    #[error("{symbol}: bad tick or step size ({why})")]
    BadFilter { symbol: String, why: String },
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// What to collect.
#[derive(Debug, Clone)]
pub struct Selection {
    pub symbols: Option<Vec<String>>,
    pub top: usize,
    pub quote: Option<String>,
    /// The depth window of each tier.
    pub depth_levels: DepthLevels,
}

struct Candidate {
    symbol: String,
    base: String,
    quote: String,
    status: String,
    tick: String,
    step: String,
}

/// Chooses the instruments of one venue and records them; the rest of the venue's instruments
/// are marked inactive.
pub async fn load(
    rest: &Rest,
    db: &Client,
    sel: &Selection,
) -> Result<Vec<Instrument>, UniverseError> {
    let venue = rest.venue;
    let info = rest.exchange_info().await?;
    let tickers = rest.tickers().await?;
    let volume: HashMap<String, f64> = tickers
        .iter()
        .map(|t| {
            (
                t.symbol.clone(),
                t.quote_volume.parse::<f64>().unwrap_or(0.0),
            )
        })
        .collect();
    let trading = ranked(venue, &info, &volume);
    let mut out = Vec::new();
    for (rank, c) in choose(venue, &trading, sel)? {
        let qv = volume.get(&c.symbol).map(|v| v.to_string());
        let levels = sel.depth_levels.of(Tier::of_rank(rank));
        out.push(record(db, venue, (rank, levels), c, qv).await?);
    }
    let names: Vec<&str> = out.iter().map(|i| i.symbol.as_str()).collect();
    db.execute(
        "UPDATE instruments SET active = false, updated_at = now() WHERE venue = $1 AND active AND NOT (symbol = ANY($2))",
        &[&venue.as_str(), &names],
    )
    .await?;
    Ok(out)
}

/// The venue's trading instruments (USD-M: perpetuals), by 24 h quote volume, highest first
/// (ties by name, so the order is stable).
fn ranked(venue: Venue, info: &ExchangeInfo, volume: &HashMap<String, f64>) -> Vec<Candidate> {
    let mut trading: Vec<Candidate> = info
        .symbols
        .iter()
        .filter(|s| s.status == "TRADING")
        .filter(|s| {
            venue == Venue::Spot || s.contract_type.as_deref().is_none_or(|c| c == "PERPETUAL")
        })
        .filter_map(|s| {
            Some(Candidate {
                symbol: s.symbol.clone(),
                base: s.base_asset.clone(),
                quote: s.quote_asset.clone(),
                status: s.status.clone(),
                tick: s.tick_size()?.to_owned(),
                step: s.step_size()?.to_owned(),
            })
        })
        .collect();
    let vol = |c: &Candidate| volume.get(&c.symbol).copied().unwrap_or(0.0);
    trading.sort_by(|a, b| {
        vol(b)
            .total_cmp(&vol(a))
            .then_with(|| a.symbol.cmp(&b.symbol))
    });
    trading
}

/// The selection with each instrument's volume rank: the named symbols (all must trade), or
/// the top N (of a quote asset).
fn choose<'a>(
    venue: Venue,
    trading: &'a [Candidate],
    sel: &Selection,
) -> Result<Vec<(usize, &'a Candidate)>, UniverseError> {
    let ranked = trading.iter().enumerate().map(|(i, c)| (i + 1, c));
    let Some(list) = &sel.symbols else {
        let quoted = trading
            .iter()
            .filter(|c| sel.quote.as_ref().is_none_or(|q| &c.quote == q));
        return Ok(quoted
            .take(sel.top)
            .enumerate()
            .map(|(i, c)| (i + 1, c))
            .collect());
    };
    let unknown: Vec<&str> = list
        .iter()
        .filter(|s| !trading.iter().any(|c| &c.symbol == *s))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(UniverseError::Unknown {
            venue: venue.as_str(),
            symbols: unknown.join(", "),
        });
    }
    Ok(ranked.filter(|(_, c)| list.contains(&c.symbol)).collect())
}

/// Upserts one chosen instrument into `instruments` (active again if it was delisted).
async fn record(
    db: &Client,
    venue: Venue,
    (rank, depth_levels): (usize, Option<u32>),
    c: &Candidate,
    quote_volume: Option<String>,
) -> Result<Instrument, UniverseError> {
    for (what, v) in [("tickSize", &c.tick), ("stepSize", &c.step)] {
        if parse_e8(v).map(|x| x <= 0).unwrap_or(true) {
            return Err(UniverseError::BadFilter {
                symbol: c.symbol.clone(),
                why: format!("{what} {v:?}"),
            });
        }
    }
    let tier = Tier::of_rank(rank);
    let row = db
        .query_one(
            "INSERT INTO instruments (venue, symbol, base, quote, status, tick_size, step_size, tier, volume_rank, quote_volume_24h, depth_levels, active, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6::text::numeric, $7::text::numeric, $8, $9, $10::text::numeric, $11, true, now())
             ON CONFLICT (venue, symbol) DO UPDATE SET
               status = EXCLUDED.status, tick_size = EXCLUDED.tick_size, step_size = EXCLUDED.step_size,
               tier = EXCLUDED.tier, volume_rank = EXCLUDED.volume_rank, quote_volume_24h = EXCLUDED.quote_volume_24h,
               depth_levels = EXCLUDED.depth_levels, active = true, delisted_at = NULL, updated_at = now()
             RETURNING id",
            &[&venue.as_str(), &c.symbol, &c.base, &c.quote, &c.status, &c.tick, &c.step, &tier.as_str(), &(rank as i32), &quote_volume, &depth_levels.map(|n| n as i32)],
        )
        .await?;
    Ok(Instrument {
        id: row.get(0),
        venue,
        symbol: c.symbol.clone(),
        tier,
        rank,
        depth_levels,
    })
}

#[cfg(test)]
mod tests {
    use super::{DepthLevels, DepthLevelsError, Tier};

    #[test]
    fn depth_levels_name_a_window_per_tier() {
        let d = DepthLevels::parse(&["low=100", " medium = 500 ", "high=all", ""]).expect("valid");
        assert_eq!(d.of(Tier::Low), Some(100));
        assert_eq!(d.of(Tier::Medium), Some(500));
        assert_eq!(d.of(Tier::High), None);
        assert_eq!(d.of(Tier::Critical), None);
        assert_eq!(DepthLevels::parse::<&str>(&[]), Ok(DepthLevels::default()));
        for bad in ["low", "lowest=5", "=5"] {
            assert_eq!(
                DepthLevels::parse(&[bad]),
                Err(DepthLevelsError::Form(bad.into()))
            );
        }
        for bad in ["low=0", "low=-1", "low=5001", "low=ten"] {
            assert_eq!(
                DepthLevels::parse(&[bad]),
                Err(DepthLevelsError::Size(bad.into()))
            );
        }
    }

    #[test]
    fn tiers_follow_design() {
        assert_eq!(Tier::of_rank(1), Tier::Critical);
        assert_eq!(Tier::of_rank(20), Tier::Critical);
        assert_eq!(Tier::of_rank(21), Tier::High);
        assert_eq!(Tier::of_rank(61), Tier::Medium);
        assert_eq!(Tier::of_rank(121), Tier::Low);
        assert_eq!(Tier::of_rank(400), Tier::Low);
    }
}
