//! Sizing from real Binance data. The recordings in `../shared/real-binance/` give the rates
//! (per symbol, from their own event times) and the rows: each is replayed through `sim` into
//! `ingest` (a child process, as in production) in a database of its own, then measured hot
//! (bytes per row in the database, compressed where the path compresses) and cold (the same rows
//! exported as the daily files, gzip CSV and Parquet). The report turns both into GB per day.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use binance::streams::StreamKind;
use binance::Venue;
use sim::{Sim, SimConfig};
use tokio_postgres::Client;

use crate::measure::{self, Storage};
use crate::procstat::CpuWindow;
use crate::stack::{self, IngestArgs, Server};

/// How fast a recording is replayed: its own pace times this (the rates come from its event
/// times, not from the replay).
const REPLAY_SPEED: f64 = 50.0;

/// One symbol's rates in a recording.
#[derive(Debug, Clone)]
pub struct Rate {
    pub recording: String,
    pub venue: Venue,
    pub symbol: String,
    pub levels_per_sec: f64,
    pub events_per_sec: f64,
    pub tickers_per_sec: f64,
    /// `None`: the recording has no aggTrade stream.
    pub trades_per_sec: Option<f64>,
}

/// Cold bytes of one data type over every replayed symbol.
#[derive(Debug, Clone, Default)]
pub struct Cold {
    pub rows: u64,
    pub csv_bytes: u64,
    pub parquet_bytes: u64,
}

#[derive(Debug, Default)]
pub struct Sizing {
    pub rates: Vec<Rate>,
    /// Per table, the replayed rows on this path.
    pub hot: Vec<(String, Storage)>,
    /// Per Tardis data type.
    pub cold: Vec<(String, Cold)>,
    /// What depth windows keep of each recorded book.
    pub windows: Vec<crate::windows::Kept>,
    /// The depth rows in narrower shapes.
    pub narrow: Vec<(&'static str, Storage)>,
}

/// The recordings' directory, if this machine has it.
pub fn corpus() -> Option<PathBuf> {
    let root = std::env::var_os("DEPTHBOOK_REAL_BINANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/real-binance")
        });
    root.join("README.md").is_file().then_some(root)
}

pub fn recordings(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("messages.jsonl").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

pub fn venue_of(dir: &Path) -> Venue {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if name.is_some_and(|n| n.starts_with("usdm")) {
        Venue::Usdm
    } else {
        Venue::Spot
    }
}

/// What a recording holds of one symbol.
#[derive(Default)]
pub struct Count {
    pub levels: u64,
    pub events: u64,
    pub tickers: u64,
    pub trades: u64,
    pub last_update_id: i64,
}

/// Per symbol: what the recording holds, and the span of its event times in seconds. The
/// recording is read as `sim` replays it (`sim::replay::load`).
pub fn count(dir: &Path) -> Result<(BTreeMap<String, Count>, f64, bool)> {
    let data = sim::replay::load(&sim::replay::ReplayConfig {
        dir: dir.to_owned(),
        speed: REPLAY_SPEED,
    })?;
    let mut by: BTreeMap<String, Count> = BTreeMap::new();
    let (mut first, mut last, mut has_trades) = (u64::MAX, u64::MIN, false);
    for m in &data.messages {
        let stream = m.frame.stream.split('@').next().unwrap_or_default();
        let c = by.entry(stream.to_ascii_uppercase()).or_default();
        match (m.frame.kind, &m.depth) {
            (StreamKind::Depth100ms, Some((_, d))) => {
                c.levels += (d.bids.len() + d.asks.len()) as u64;
                c.events += 1;
                c.last_update_id = i64::try_from(d.final_update_id)?;
                (first, last) = (first.min(d.event_time), last.max(d.event_time));
            }
            (StreamKind::AggTrade, _) => {
                c.trades += 1;
                has_trades = true;
            }
            (StreamKind::BookTicker, _) => c.tickers += 1,
            _ => {}
        }
    }
    Ok((by, last.saturating_sub(first) as f64 / 1000.0, has_trades))
}

fn rates(dir: &Path, by: &BTreeMap<String, Count>, span: f64, has_trades: bool) -> Vec<Rate> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    by.iter()
        .filter(|(_, c)| c.events > 0)
        .map(|(symbol, c)| Rate {
            recording: name.clone(),
            venue: venue_of(dir),
            symbol: symbol.clone(),
            levels_per_sec: c.levels as f64 / span,
            events_per_sec: c.events as f64 / span,
            tickers_per_sec: c.tickers as f64 / span,
            trades_per_sec: has_trades.then(|| c.trades as f64 / span),
        })
        .collect()
}

/// What one replay cost, from every book synced to the whole recording stored.
#[derive(Debug, Clone, Default)]
pub struct Played {
    /// Every book synced to the last batch committed (the database's clock).
    pub secs: f64,
    /// Messages ingest received, and rows it committed, in that time.
    pub messages: f64,
    pub rows: i64,
    /// CPU seconds of ingest, of PostgreSQL (with its backends) and of this harness (the
    /// simulator), over the same window.
    pub cpu_ingest: f64,
    pub cpu_postgres: Option<f64>,
    pub cpu_sim: f64,
    /// The CPU window's length: to the moment the whole recording was seen stored.
    pub cpu_secs: f64,
    pub gaps: f64,
    pub dropped_rows: f64,
    /// Consumers the simulator cut for falling a buffer behind: frames lost.
    pub sim_cut: u64,
}

/// Replays one recording (`speed` times its pace; 0 flat out) into the database at `url` and
/// waits until every depth event and ticker is stored.
pub async fn replay(
    dir: &Path,
    by: &BTreeMap<String, Count>,
    url: &str,
    run: (&Path, &Path, Option<i32>),
    speed: f64,
) -> Result<Played> {
    let (bin_dir, work, postmaster) = run;
    let venue = venue_of(dir);
    let mut cfg = sim::VenueConfig::for_venue(venue);
    cfg.replay = Some(sim::replay::ReplayConfig {
        dir: dir.to_owned(),
        speed,
    });
    cfg.weight_limit = 1_000_000;
    let sim = Sim::start(SimConfig {
        seed: 1,
        spot: (venue == Venue::Spot).then(|| cfg.clone()),
        usdm: (venue == Venue::Usdm).then_some(cfg),
    })
    .await?;
    let v = match venue {
        Venue::Spot => sim.spot.as_ref(),
        Venue::Usdm => sim.usdm.as_ref(),
    }
    .context("the replayed venue")?;
    let symbols = depth_symbols(by);
    let args = IngestArgs {
        database_url: url.to_owned(),
        venues: vec![(venue, v.rest_url(), v.ws_url())],
        top: symbols.len(),
        extra: vec![("symbols".into(), symbols.join(","))],
    };
    let db = stack::connect(url).await?;
    let tickers_before: i64 = db
        .query_one(
            "SELECT coalesce(sum(rows), 0)::int8 FROM ingest_batches WHERE relation = 'book_ticker'",
            &[],
        )
        .await?
        .get(0);
    let mut ingest = stack::spawn_ingest(bin_dir, &args, work)?;
    let stored = Stored {
        venue,
        by,
        tickers_before,
    };
    let mut played = measure_until_stored(&db, &mut ingest, &stored, postmaster).await?;
    ingest.stop().await?;
    played.sim_cut = stack::consumers_cut(&sim);
    sim.shutdown();
    Ok(played)
}

/// The symbols with depth events in a recording: the books a replay collects.
pub fn depth_symbols(by: &BTreeMap<String, Count>) -> Vec<&str> {
    by.iter()
        .filter(|(_, c)| c.events > 0)
        .map(|(s, _)| s.as_str())
        .collect()
}

/// What a replay is stored once: every book's last depth event, and the book tickers
/// committed before it began plus the recording's.
struct Stored<'a> {
    venue: Venue,
    by: &'a BTreeMap<String, Count>,
    tickers_before: i64,
}

/// From every book synced (polled closely: flat out, the replay waits for each book's first
/// snapshot, so the bulk follows) until every depth event and ticker of `by` is stored.
async fn measure_until_stored(
    db: &Client,
    ingest: &mut stack::Proc,
    stored: &Stored<'_>,
    postmaster: Option<i32>,
) -> Result<Played> {
    let (venue, by, tickers_before) = (stored.venue, stored.by, stored.tickers_before);
    let names = depth_symbols(by);
    let (http, addr, books) = (&reqwest::Client::new(), ingest.addr, names.len() as f64);
    let synced = || async move {
        stack::scrape(http, addr)
            .await
            .is_ok_and(|t| stack::metric_sum(&t, "depthbook_ingest_books_synced") >= books)
    };
    let (deadline, every) = (Duration::from_secs(120), Duration::from_millis(2));
    stack::poll_until("every book synced", deadline, every, ingest, synced).await?;
    tracing::info!("every book synced; measuring until the recording is stored");
    let before = stack::IngestCounters::scrape(http, addr).await?;
    let (t0, cpu) = (
        measure::db_now(db).await?,
        Cpu::start(ingest.pid, postmaster)?,
    );
    let want: i64 = by.values().map(|c| c.last_update_id).sum();
    let tickers = tickers_before + by.values().map(|c| c.tickers as i64).sum::<i64>();
    let names = &names;
    // Cheap enough to poll beside the load: each book's newest row by the index, tickers by
    // the ledger (a count over the tables would cost PostgreSQL a scan every time).
    stack::wait_for("the whole recording stored", Duration::from_secs(600), ingest, || async move {
        let stored = db
            .query_one(
                "SELECT (SELECT coalesce(sum(d.update_id), 0)::int8 FROM instruments i
                         CROSS JOIN LATERAL (SELECT update_id FROM depth_updates x WHERE x.instrument_id = i.id
                                             ORDER BY time DESC, update_id DESC LIMIT 1) d
                         WHERE i.venue = $1 AND i.symbol = ANY($2)),
                        (SELECT coalesce(sum(rows), 0)::int8 FROM ingest_batches WHERE relation = 'book_ticker')",
                &[&venue.as_str(), names],
            )
            .await;
        stored.is_ok_and(|r| r.get::<_, i64>(0) == want && r.get::<_, i64>(1) >= tickers)
    })
    .await?;
    let (cpu_ingest, cpu_postgres, cpu_sim) = cpu.seconds()?;
    let cpu_secs = cpu.elapsed();
    let counted = stack::IngestCounters::scrape(http, addr)
        .await?
        .since(&before);
    let ledger = db
        .query_one(
            "SELECT coalesce(sum(rows), 0)::int8, extract(epoch FROM max(committed_at))::float8
             FROM ingest_batches WHERE committed_at >= to_timestamp($1)",
            &[&t0],
        )
        .await?;
    Ok(Played {
        secs: ledger.get::<_, Option<f64>>(1).map_or(0.0, |t| t - t0),
        messages: counted.messages,
        rows: ledger.get(0),
        cpu_ingest,
        cpu_postgres,
        cpu_sim,
        cpu_secs,
        gaps: counted.gaps,
        dropped_rows: counted.dropped_rows,
        sim_cut: 0,
    })
}

/// CPU windows of ingest, PostgreSQL and this harness, started together.
struct Cpu(CpuWindow, Option<CpuWindow>, CpuWindow);

impl Cpu {
    fn start(ingest: i32, postmaster: Option<i32>) -> Result<Cpu> {
        Ok(Cpu(
            CpuWindow::start(ingest, false)?,
            postmaster.map(|p| CpuWindow::start(p, true)).transpose()?,
            CpuWindow::start(std::process::id() as i32, false)?,
        ))
    }

    /// Seconds since the start.
    fn elapsed(&self) -> f64 {
        self.0.elapsed()
    }

    /// CPU seconds since the start: (ingest, PostgreSQL, harness).
    fn seconds(&self) -> Result<(f64, Option<f64>, f64)> {
        Ok((
            self.0.seconds()?,
            self.1.as_ref().map(CpuWindow::seconds).transpose()?,
            self.2.seconds()?,
        ))
    }
}

/// Exports every instrument's whole range of `t` in both formats, in memory.
async fn cold(db: &Client, t: export::DataType) -> Result<Cold> {
    let mut out = Cold::default();
    let rows = db
        .query(
            &format!(
                "SELECT i.id, i.venue, i.symbol, min(x.time), max(x.time) + interval '1 millisecond'
                 FROM {} x JOIN instruments i ON i.id = x.instrument_id GROUP BY 1, 2, 3",
                t.table()
            ),
            &[],
        )
        .await?;
    for r in rows {
        let venue = if r.get::<_, &str>(1) == "usdm" {
            Venue::Usdm
        } else {
            Venue::Spot
        };
        let inst = export::Instrument {
            id: r.get(0),
            venue,
            symbol: r.get(2),
        };
        let range = export::Range::new(r.get(3), r.get(4))?;
        let (csv, bytes) =
            export::write_file(db, &inst, t, range, export::Format::Csv, Vec::new()).await?;
        let (_, pq) =
            export::write_file(db, &inst, t, range, export::Format::Parquet, Vec::new()).await?;
        out.rows += csv.rows;
        out.csv_bytes += bytes.len() as u64;
        out.parquet_bytes += pq.len() as u64;
    }
    Ok(out)
}

/// Replays every recording, then measures; `None` where the recordings are absent.
pub async fn run(server: &Server, bin_dir: &Path, work: &Path) -> Result<Option<Sizing>> {
    let Some(root) = corpus() else {
        println!("skipped: sizing: no real Binance recordings at ../shared/real-binance");
        return Ok(None);
    };
    let url = server.fresh_database("bench_real").await?;
    let db = stack::connect(&url).await?;
    // The recordings are years old: nothing may count as past retention.
    db.batch_execute("UPDATE storage_policies SET drop_after = NULL")
        .await?;
    let mut s = Sizing::default();
    for dir in recordings(&root)? {
        let (by, span, has_trades) = count(&dir)?;
        tracing::info!(recording = %dir.display(), "replaying");
        replay(&dir, &by, &url, (bin_dir, work, None), REPLAY_SPEED).await?;
        s.rates.extend(rates(&dir, &by, span, has_trades));
        s.windows
            .extend(crate::windows::measure(&dir, venue_of(&dir))?);
    }
    for t in [
        export::DataType::IncrementalBookL2,
        export::DataType::Quotes,
        export::DataType::Trades,
    ] {
        s.cold.push((t.name().to_owned(), cold(&db, t).await?));
    }
    s.narrow = crate::narrow::measure(&db).await?;
    for t in [
        "depth_updates",
        "book_checkpoints",
        "book_top",
        "book_ticker",
        "trades",
    ] {
        s.hot.push((t.to_owned(), measure::storage(&db, t).await?));
    }
    drop(db);
    server.drop_database("bench_real").await?;
    Ok(Some(s))
}

/// Symbols per venue the sizing table is computed for (the default universe is 200 + 200).
const UNIVERSES: [usize; 4] = [20, 50, 100, 200];
/// The two busiest books per venue (BTCUSDT, ETHUSDT) are recorded at their own rates; every
/// other symbol of a universe is counted at the median rate of the recorded mid-sized pairs.
const MAJORS: [&str; 2] = ["BTCUSDT", "ETHUSDT"];
const DAY: f64 = 86_400.0;
const GB: f64 = 1e9;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Rows per second of one venue's universe of `n` symbols: (depth levels, tickers, trades).
pub fn venue_rows(rates: &[Rate], venue: Venue, n: usize) -> (f64, f64, f64) {
    let of = |major: bool| -> Vec<&Rate> {
        rates
            .iter()
            .filter(|r| r.venue == venue && MAJORS.contains(&r.symbol.as_str()) == major)
            // Mid-sized: quoted in USDT, as the top N by volume are.
            .filter(|r| major || r.symbol.ends_with("USDT"))
            .collect()
    };
    let (majors, mids) = (of(true), of(false));
    let major = |f: fn(&Rate) -> f64| mean(&majors.iter().map(|r| f(r)).collect::<Vec<_>>());
    let mid = |f: fn(&Rate) -> f64| median(mids.iter().map(|r| f(r)).collect());
    let m = majors.len().min(n) as f64;
    let rest = n as f64 - m;
    let trades = |r: &Rate| r.trades_per_sec.unwrap_or(f64::NAN);
    let mid_trades = median(
        mids.iter()
            .map(|r| trades(r))
            .filter(|t| !t.is_nan())
            .collect(),
    );
    (
        m * major(|r| r.levels_per_sec) + rest * mid(|r| r.levels_per_sec),
        m * major(|r| r.tickers_per_sec) + rest * mid(|r| r.tickers_per_sec),
        n as f64 * mid_trades,
    )
}

impl Sizing {
    fn hot(&self, table: &str) -> Storage {
        self.hot
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }

    fn cold(&self, t: &str) -> Cold {
        self.cold
            .iter()
            .find(|(n, _)| n == t)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }

    /// Bytes per stored row of (depth, tickers, trades): hot uncompressed, hot compressed (where
    /// measured), cold gzip CSV, cold Parquet. Checkpoints and sampled tops are counted per
    /// depth row, the L2 file's opening books likewise.
    pub fn per_row(&self) -> [[Option<f64>; 3]; 4] {
        let depth = self.hot("depth_updates");
        let extra = |f: fn(&Storage) -> Option<i64>| -> Option<f64> {
            let sum = f(&depth)? + f(&self.hot("book_checkpoints"))? + f(&self.hot("book_top"))?;
            Some(sum as f64 / depth.rows.max(1) as f64)
        };
        let per = |s: Storage, f: fn(&Storage) -> Option<i64>| {
            f(&s).map(|b| b as f64 / s.rows.max(1) as f64)
        };
        let raw = |s: &Storage| Some(s.bytes);
        let packed = |s: &Storage| s.compressed_bytes;
        let file = |c: Cold, rows: i64, parquet: bool| {
            let b = if parquet {
                c.parquet_bytes
            } else {
                c.csv_bytes
            };
            Some(b as f64 / rows.max(1) as f64)
        };
        let (tk, tr) = (self.hot("book_ticker"), self.hot("trades"));
        [
            [extra(raw), per(tk, raw), per(tr, raw)],
            [extra(packed), per(tk, packed), per(tr, packed)],
            [
                file(self.cold("incremental_book_L2"), depth.rows, false),
                file(self.cold("quotes"), tk.rows, false),
                file(self.cold("trades"), tr.rows, false),
            ],
            [
                file(self.cold("incremental_book_L2"), depth.rows, true),
                file(self.cold("quotes"), tk.rows, true),
                file(self.cold("trades"), tr.rows, true),
            ],
        ]
    }

    /// GB per day of `n` symbols per venue on both venues, per column of `per_row`.
    pub fn gb_per_day(&self, n: usize) -> ([f64; 3], [Option<f64>; 4]) {
        let (s, u) = (
            venue_rows(&self.rates, Venue::Spot, n),
            venue_rows(&self.rates, Venue::Usdm, n),
        );
        let rows = [s.0 + u.0, s.1 + u.1, s.2 + u.2];
        let per = self.per_row();
        let gb = per.map(|col| {
            let mut sum = 0.0;
            for (i, b) in col.iter().enumerate() {
                sum += rows[i] * (*b)? * DAY / GB;
            }
            Some(sum)
        });
        (rows, gb)
    }

    pub fn render(&self, o: &mut String) {
        let _ = writeln!(o, "## 7. Sizing from real Binance data\n");
        let _ = writeln!(o, "Rates of every recording in `../shared/real-binance/`, per symbol, from its own event times (depth level changes, depth events, bookTicker messages and aggTrades per second):\n");
        let _ = writeln!(o, "| recording | symbol | levels/s | events/s | tickers/s | trades/s |\n|---|---|---|---|---|---|");
        for r in &self.rates {
            let trades = r
                .trades_per_sec
                .map_or("not recorded".into(), |t| format!("{t:.1}"));
            let _ = writeln!(
                o,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {trades} |",
                r.recording, r.symbol, r.levels_per_sec, r.events_per_sec, r.tickers_per_sec
            );
        }
        self.render_bytes(o);
        self.render_days(o);
        crate::narrow::render(&self.hot("depth_updates"), &self.narrow, o);
        crate::windows::render(&self.windows, o);
    }

    fn render_bytes(&self, o: &mut String) {
        let depth = self.hot("depth_updates");
        let _ = writeln!(o, "\nEvery recording replayed (×{REPLAY_SPEED} its pace) through `sim` into `ingest`, then measured on this path: {} depth rows, {} tickers, {} trades. Bytes per stored row; a depth row carries its share of the checkpoints and sampled tops (`book_checkpoints` {:.1} MB, `book_top` {:.1} MB), and of the L2 files' opening books:\n",
            depth.rows, self.hot("book_ticker").rows, self.hot("trades").rows,
            self.hot("book_checkpoints").bytes as f64 / 1e6, self.hot("book_top").bytes as f64 / 1e6);
        let _ = writeln!(
            o,
            "| bytes per row | depth | quote | trade |\n|---|---|---|---|"
        );
        let names = [
            "hot, in the database (uncompressed: also the Apache and plain paths' size)",
            "hot, compressed (TimescaleDB community)",
            "cold, gzip CSV (Tardis format)",
            "cold, Parquet",
        ];
        for (name, col) in names.iter().zip(self.per_row()) {
            let f = |v: Option<f64>| v.map_or("n/a on this path".into(), |v| format!("{v:.1}"));
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} |",
                f(col[0]),
                f(col[1]),
                f(col[2])
            );
        }
    }

    fn render_days(&self, o: &mut String) {
        let _ = writeln!(o, "\nGB per day for the top N symbols per venue on both venues. BTCUSDT and ETHUSDT at their recorded rates (spot and USD-M alike), every other symbol at the median of the recorded mid-sized USDT pairs of its venue; trades at the mid pairs' median for every symbol (the majors' aggTrade streams are not in the recordings). The tail of a top 200 trades less than the recorded mid pairs, so the larger universes are upper bounds on depth.\n");
        let _ = writeln!(o, "| N per venue | depth rows/s | rows/day (depth + quotes + trades) | hot GB/day uncompressed | hot GB/day compressed | cold GB/day gzip CSV | cold GB/day Parquet |\n|---|---|---|---|---|---|---|");
        for n in UNIVERSES {
            let (rows, gb) = self.gb_per_day(n);
            let f = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.1}"));
            let _ = writeln!(
                o,
                "| {n} | {:.0} | {:.0} M | {} | {} | {} | {} |",
                rows[0],
                rows.iter().sum::<f64>() * DAY / 1e6,
                f(gb[0]),
                f(gb[1]),
                f(gb[2]),
                f(gb[3])
            );
        }
        let _ = writeln!(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(venue: Venue, symbol: &str, levels: f64, trades: Option<f64>) -> Rate {
        Rate {
            recording: "r".into(),
            venue,
            symbol: symbol.into(),
            levels_per_sec: levels,
            events_per_sec: 1.0,
            tickers_per_sec: 2.0,
            trades_per_sec: trades,
        }
    }

    #[test]
    fn a_universe_is_two_majors_and_the_median_mid_pair() {
        let rates = [
            rate(Venue::Spot, "BTCUSDT", 400.0, None),
            rate(Venue::Spot, "ETHUSDT", 300.0, None),
            rate(Venue::Spot, "AUSDT", 10.0, Some(1.0)),
            rate(Venue::Spot, "BUSDT", 30.0, Some(3.0)),
            rate(Venue::Spot, "CUSDT", 20.0, Some(2.0)),
            // Not quoted in USDT, and another venue: neither counts as a spot mid pair.
            rate(Venue::Spot, "DBNB", 1000.0, Some(9.0)),
            rate(Venue::Usdm, "EUSDT", 1000.0, Some(9.0)),
        ];
        let (levels, tickers, trades) = venue_rows(&rates, Venue::Spot, 10);
        assert_eq!(levels, 2.0 * 350.0 + 8.0 * 20.0);
        assert_eq!(tickers, 10.0 * 2.0);
        assert_eq!(trades, 10.0 * 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
