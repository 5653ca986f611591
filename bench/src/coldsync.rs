//! Cold sync: a fresh collector syncing every book of both venues under Binance's real REST
//! weight budgets, against the least time those budgets allow for the weight it spent.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use binance::Venue;
use sim::{Sim, SimConfig};

use crate::stack::{self, IngestArgs, Server};
use crate::Plan;

/// Longer than any sync within Binance's budgets at the sizes benchmarked.
const DEADLINE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct ColdSync {
    pub books: usize,
    /// From the simulator's start (its weight windows start there) to every book synced.
    pub secs: f64,
    pub venues: Vec<VenueWeight>,
}

/// What a venue's REST budget allowed, and what ingest spent of it.
#[derive(Debug, Clone)]
pub struct VenueWeight {
    pub venue: &'static str,
    pub symbols: usize,
    pub weight: u64,
    pub limit: u32,
    pub window_secs: u64,
}

impl VenueWeight {
    /// Windows needed to spend `weight` at `share` of the limit.
    pub fn windows(&self, share: f64) -> f64 {
        let per_window = (f64::from(self.limit) * share).floor().max(1.0);
        (self.weight as f64 / per_window).ceil().max(1.0)
    }

    /// The least time to spend `weight` from the first window's start at `share` of the limit:
    /// every window but the last is spent whole, so the last opens after the others.
    pub fn minimum_secs(&self, share: f64) -> f64 {
        (self.windows(share) - 1.0) * self.window_secs as f64
    }
}

impl ColdSync {
    /// How far over the minimum at the venues' limits the sync took, as a share of it.
    pub fn over_minimum(&self) -> f64 {
        let min = self.minimum_secs(1.0);
        if min > 0.0 {
            (self.secs - min) / min
        } else {
            0.0
        }
    }

    /// The REST-weight minimum: the slowest venue's, at the venues' whole limits.
    pub fn minimum_secs(&self, share: f64) -> f64 {
        self.venues
            .iter()
            .map(|v| v.minimum_secs(share))
            .fold(0.0, f64::max)
    }
}

pub async fn run(server: &Server, plan: &Plan, bin_dir: &Path, work: &Path) -> Result<ColdSync> {
    let name = "bench_coldsync";
    let url = server.fresh_database(name).await?;
    let n = plan.nominal_symbols;
    let venue = |v| {
        let mut c = stack::sim_venue(v, n, 1.0);
        // Binance's budgets, not the raised one of the other parts: here syncing is measured.
        c.weight_limit = sim::VenueConfig::for_venue(v).weight_limit;
        c
    };
    let started = Instant::now();
    let sim = Sim::start(SimConfig {
        seed: 13,
        spot: Some(venue(Venue::Spot)),
        usdm: Some(venue(Venue::Usdm)),
    })
    .await?;
    let args = IngestArgs::both_venues(&sim, &url, n, &plan.ingest_args)?;
    let (spot, usdm) = (
        sim.spot.as_ref().context("spot")?,
        sim.usdm.as_ref().context("usdm")?,
    );
    let mut ingest = stack::spawn_ingest(bin_dir, &args, work)?;
    let http = reqwest::Client::new();
    stack::wait_synced(&http, &mut ingest, 2 * n, DEADLINE)
        .await
        .context("cold sync")?;
    let secs = started.elapsed().as_secs_f64();
    let venues = [(spot, Venue::Spot), (usdm, Venue::Usdm)]
        .into_iter()
        .map(|(h, v)| {
            let s = h.state();
            VenueWeight {
                venue: v.as_str(),
                symbols: n,
                weight: s.weight_total,
                limit: s.weight_limit,
                window_secs: s.weight_window_secs,
            }
        })
        .collect();
    ingest.stop().await?;
    sim.shutdown();
    if !plan.keep {
        server.drop_database(name).await?;
    }
    Ok(ColdSync {
        books: 2 * n,
        secs,
        venues,
    })
}

impl ColdSync {
    pub fn render(&self, o: &mut String) {
        let _ = writeln!(o, "## 11. Cold sync\n");
        let _ = writeln!(
            o,
            "A fresh collector, an empty database, {} books ({} symbols on each venue), the simulator at Binance's REST \
             budgets (spot 6 000, USD-M 2 400 weight a minute; its windows start with it). Time from the simulator's \
             start to every book synced, against the least time the budgets allow for the weight ingest spent \
             (snapshots by tier, exchangeInfo, ticker/24hr): every window but the last spent whole.\n",
            self.books,
            self.books / 2
        );
        let _ = writeln!(
            o,
            "| venue | symbols | weight spent | limit per window | windows needed at the limit | at ingest's 90 % |\n|---|---|---|---|---|---|"
        );
        for v in &self.venues {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} per {} s | {:.0} | {:.0} |",
                v.venue,
                v.symbols,
                v.weight,
                v.limit,
                v.window_secs,
                v.windows(1.0),
                v.windows(ingest::rest_client::BUDGET_SHARE)
            );
        }
        let min = self.minimum_secs(1.0);
        let min_share = self.minimum_secs(ingest::rest_client::BUDGET_SHARE);
        let against = if min > 0.0 {
            format!(
                "{:+.0} % over the minimum at the limits",
                self.over_minimum() * 100.0
            )
        } else {
            "the weight fits in one window, so the requests' own time is the bound".to_owned()
        };
        let _ = writeln!(
            o,
            "\nEvery book synced after **{:.1} s**. The REST-weight minimum is {:.0} s at the venues' limits ({:.0} s at \
             the 90 % ingest allows itself, leaving room for other clients of the same address): {against}.\n",
            self.secs, min, min_share,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spent(weight: u64, limit: u32) -> VenueWeight {
        VenueWeight {
            venue: "spot",
            symbols: 200,
            weight,
            limit,
            window_secs: 60,
        }
    }

    #[test]
    fn every_window_but_the_last_is_waited_for() {
        assert_eq!(spent(6_000, 6_000).minimum_secs(1.0), 0.0, "fits in one");
        assert_eq!(spent(6_001, 6_000).minimum_secs(1.0), 60.0);
        assert_eq!(spent(14_300, 6_000).minimum_secs(1.0), 120.0);
        // At 90 % of 2 400 (2 160 a window), 4 400 needs a third window; at the limit, two.
        assert_eq!(spent(4_400, 2_400).minimum_secs(1.0), 60.0);
        assert_eq!(spent(4_400, 2_400).minimum_secs(0.9), 120.0);
    }

    #[test]
    fn the_slowest_venue_sets_the_minimum() {
        let c = ColdSync {
            books: 400,
            secs: 132.0,
            venues: vec![spent(14_300, 6_000), spent(4_040, 2_400)],
        };
        assert_eq!(c.minimum_secs(1.0), 120.0);
        assert!((c.over_minimum() - 0.1).abs() < 1e-9);
    }
}
