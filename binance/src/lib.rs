//! Binance's public market-data protocol, shared by the collector (`ingest`) and the simulator
//! (`sim`): venues, endpoints and the rules both sides must agree on.
//!
pub mod e8wire;
pub mod rules;
pub mod streams;
pub mod units;
pub mod wire;

/// The two markets collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Venue {
    /// Spot (`api.binance.com`, `stream.binance.com`).
    Spot,
    /// USD-M perpetual futures (`fapi.binance.com`, `fstream.binance.com`).
    Usdm,
}

impl Venue {
    /// The name stored in `instruments.venue`.
    pub fn as_str(self) -> &'static str {
        match self {
            Venue::Spot => "spot",
            Venue::Usdm => "usdm",
        }
    }

    /// The venue of an `instruments.venue` name.
    pub fn from_name(name: &str) -> Option<Venue> {
        match name {
            "spot" => Some(Venue::Spot),
            "usdm" => Some(Venue::Usdm),
            _ => None,
        }
    }
}
