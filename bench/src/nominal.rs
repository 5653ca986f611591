//! Nominal load: both venues, 200 symbols each at Binance-like rates (depth@100ms, bookTicker,
//! aggTrade, markPrice@1s), ingest and graphql as deployed (default flags). Measures event→
//! commit latency, CPU and memory, then the subscription fan-out, bytes per row and queries on
//! the data collected.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use binance::Venue;
use sim::{Sim, SimConfig};

use crate::fanout::{self, Fanout};
use crate::measure::{self, Latency, Storage};
use crate::procstat::{self, CpuWindow};
use crate::queries::{self, Timing};
use crate::stack::{self, IngestArgs, IngestCounters, Server};
use crate::Plan;

/// The symbol whose book, trades and subscription are timed: the simulator's busiest.
pub const SYMBOL: &str = "BTCUSDT";

#[derive(Debug, Clone, Default)]
pub struct Nominal {
    pub symbols_per_venue: usize,
    pub books: usize,
    pub sync_secs: f64,
    pub window_secs: f64,
    pub messages_per_sec: f64,
    pub rows_per_sec: f64,
    /// Per table, then all tables together.
    pub latency: Vec<(String, Latency)>,
    /// Receive→commit, per table with a `received_at`, then those tables together.
    pub receive_latency: Vec<(String, Latency)>,
    pub gaps: f64,
    pub dropped_rows: f64,
    /// Consumers the simulator cut for falling behind, both venues, sync and window: the
    /// frames it lost.
    pub sim_cut: u64,
    pub cpu_ingest: f64,
    pub cpu_graphql: f64,
    pub cpu_postgres: Option<f64>,
    pub cpu_sim: f64,
    pub peak_rss_ingest: u64,
    /// At the window's end: what collecting costs, without the sync's peak.
    pub rss_ingest: u64,
    pub peak_rss_graphql: u64,
    pub api_load: String,
    pub fanout: Fanout,
    pub storage: Vec<(String, Storage)>,
    pub queries: Vec<Timing>,
    pub query_note: String,
    pub export: crate::export::Export,
}

pub async fn run(server: &Server, plan: &Plan, bin_dir: &Path, work: &Path) -> Result<Nominal> {
    let name = "bench_nominal";
    let url = server.fresh_database(name).await?;
    let n = plan.nominal_symbols;
    let stack = start(plan, &url, bin_dir, work).await?;
    let http = reqwest::Client::new();
    let api = stack.graphql.addr;
    let load = ApiLoad::start(plan, &http, api).await?;
    tokio::time::sleep(plan.warmup).await;
    let db = stack::connect(&url).await?;
    let w = measure_window(server, plan, &http, &stack, &db).await?;
    let api_load = load.stop().await?;
    let peak_rss_graphql = procstat::peak_rss(stack.graphql.pid)?;
    let latency = latencies(&db, w.t0, w.t1).await?;
    let receive_latency = receive_latencies(&db, w.t0, w.t1).await?;
    let iid: i32 = db
        .query_one(
            "SELECT id FROM instruments WHERE venue = 'spot' AND symbol = $1",
            &[&SYMBOL],
        )
        .await?
        .get(0);
    tracing::info!(clients = plan.fanout_clients, "subscription fan-out");
    let fanout = fanout::run(
        &url,
        api,
        stack.graphql.pid,
        iid,
        SYMBOL,
        plan.fanout_clients,
        plan.fanout_window,
    )
    .await
    .context("fan-out")?;
    stack.ingest.stop().await.context("stopping ingest")?;
    let sim_cut = stack::consumers_cut(&stack.sim);
    stack.sim.shutdown();
    let storage = storage(&db).await?;
    tracing::info!("queries");
    let (queries, query_note) = time_queries(plan, &db, &http, api, iid).await?;
    stack.graphql.stop().await.context("stopping graphql")?;
    tracing::info!("export");
    // An hour of the busiest book (≈ 1 300 level changes/s) in full runs.
    let busy_rows = if plan.smoke { 20_000 } else { 5_000_000 };
    let export = crate::export::run(&db, &url, (bin_dir, work), SYMBOL, busy_rows)
        .await
        .context("export")?;
    drop(db);
    if !plan.keep {
        server.drop_database(name).await?;
    }
    let secs = w.t1 - w.t0;
    Ok(Nominal {
        symbols_per_venue: n,
        books: 2 * n,
        sync_secs: stack.sync_secs,
        window_secs: secs,
        messages_per_sec: w.counted.messages / secs,
        rows_per_sec: w.rows as f64 / secs,
        latency,
        receive_latency,
        gaps: w.counted.gaps,
        dropped_rows: w.counted.dropped_rows,
        sim_cut,
        cpu_ingest: w.cpu_ingest,
        cpu_graphql: w.cpu_graphql,
        cpu_postgres: w.cpu_postgres,
        cpu_sim: w.cpu_sim,
        peak_rss_ingest: w.peak_rss_ingest,
        rss_ingest: w.rss_ingest,
        peak_rss_graphql,
        api_load,
        fanout,
        storage,
        queries,
        query_note,
        export,
    })
}

/// The simulator, ingest and graphql, running with every book synced and the API answering.
struct Stack {
    sim: Sim,
    ingest: stack::Proc,
    graphql: stack::Proc,
    sync_secs: f64,
}

async fn start(plan: &Plan, url: &str, bin_dir: &Path, work: &Path) -> Result<Stack> {
    let n = plan.nominal_symbols;
    let sim = Sim::start(SimConfig {
        seed: 11,
        spot: Some(stack::sim_venue(Venue::Spot, n, 1.0)),
        usdm: Some(stack::sim_venue(Venue::Usdm, n, 1.0)),
    })
    .await?;
    let started = std::time::Instant::now();
    let args = IngestArgs::both_venues(&sim, url, n, &plan.ingest_args)?;
    let mut ingest = stack::spawn_ingest(bin_dir, &args, work)?;
    let mut graphql = stack::spawn_graphql(bin_dir, url, work)?;
    let http = reqwest::Client::new();
    let api = graphql.addr;
    stack::wait_synced(&http, &mut ingest, 2 * n, plan.sync_deadline).await?;
    let sync_secs = started.elapsed().as_secs_f64();
    stack::wait_for("the API", plan.sync_deadline, &mut graphql, || async {
        http.get(format!("http://{api}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await?;
    let q = book_query();
    stack::wait_for(
        "a book from the API",
        plan.sync_deadline,
        &mut graphql,
        || async { queries::gql(&http, api, &q).await.is_ok() },
    )
    .await?;
    Ok(Stack {
        sim,
        ingest,
        graphql,
        sync_secs,
    })
}

/// Bytes per row of every collected table.
async fn storage(db: &tokio_postgres::Client) -> Result<Vec<(String, Storage)>> {
    tracing::info!("storage");
    let mut out = Vec::new();
    for t in ["depth_updates", "book_top", "book_ticker", "trades"] {
        out.push((t.to_owned(), measure::storage(db, t).await?));
    }
    Ok(out)
}

fn book_query() -> String {
    format!("{{ book(symbol: \"{SYMBOL}\", depth: 20) {{ updateId }} }}")
}

/// A steady, modest API load while resources are measured: live subscribers and one client
/// polling the book.
struct ApiLoad {
    stop: tokio_util::sync::CancellationToken,
    /// Each subscriber's received (id, latency) pairs; only their completion matters here.
    subs: Vec<tokio::task::JoinHandle<Vec<(i64, f64)>>>,
    poller: tokio::task::JoinHandle<Result<()>>,
}

impl ApiLoad {
    async fn start(
        plan: &Plan,
        http: &reqwest::Client,
        api: std::net::SocketAddr,
    ) -> Result<ApiLoad> {
        let stop = tokio_util::sync::CancellationToken::new();
        let ws_url = format!("ws://{api}/graphql/ws");
        let mut subs = Vec::new();
        for q in [
            format!("subscription {{ book(symbol: \"{SYMBOL}\", depth: 20) {{ updateId }} }}"),
            format!("subscription {{ trades(symbol: \"{SYMBOL}\") {{ aggTradeId }} }}"),
        ] {
            for _ in 0..plan.nominal_subscribers / 2 {
                subs.push(fanout::subscribe(&ws_url, &q, stop.clone()).await?);
            }
        }
        let (http, stop2, q) = (http.clone(), stop.clone(), book_query());
        let poller = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop2.cancelled() => return Ok::<_, anyhow::Error>(()),
                    _ = tick.tick() => { queries::gql(&http, api, &q).await?; }
                }
            }
        });
        Ok(ApiLoad { stop, subs, poller })
    }

    /// Stops the load; returns what it was, for the report.
    async fn stop(self) -> Result<String> {
        let n = self.subs.len();
        self.stop.cancel();
        for s in self.subs {
            s.await?;
        }
        self.poller.await?.context("the polling client")?;
        Ok(format!(
            "{n} graphql-ws subscribers ({} to `book`, {} to `trades` of {SYMBOL}) and one `book(depth: 20)` query a second",
            n / 2,
            n / 2
        ))
    }
}

/// What the measurement window saw.
struct Window {
    t0: f64,
    t1: f64,
    counted: IngestCounters,
    rows: i64,
    cpu_ingest: f64,
    cpu_graphql: f64,
    cpu_postgres: Option<f64>,
    cpu_sim: f64,
    peak_rss_ingest: u64,
    rss_ingest: u64,
}

async fn measure_window(
    server: &Server,
    plan: &Plan,
    http: &reqwest::Client,
    stack: &Stack,
    db: &tokio_postgres::Client,
) -> Result<Window> {
    let before = IngestCounters::scrape(http, stack.ingest.addr).await?;
    let windows = (
        CpuWindow::start(stack.ingest.pid, false)?,
        CpuWindow::start(stack.graphql.pid, false)?,
        server
            .postmaster_pid
            .map(|p| CpuWindow::start(p, true))
            .transpose()?,
        CpuWindow::start(std::process::id() as i32, false)?,
    );
    let t0 = measure::db_now(db).await?;
    tokio::time::sleep(plan.nominal_window).await;
    let t1 = measure::db_now(db).await?;
    let counted = IngestCounters::scrape(http, stack.ingest.addr)
        .await?
        .since(&before);
    let rows = measure::committed_rows(db, t0, t1)
        .await?
        .iter()
        .map(|c| c.1)
        .sum();
    Ok(Window {
        t0,
        t1,
        counted,
        rows,
        cpu_ingest: windows.0.percent()?,
        cpu_graphql: windows.1.percent()?,
        cpu_postgres: windows.2.map(|w| w.percent()).transpose()?,
        cpu_sim: windows.3.percent()?,
        peak_rss_ingest: procstat::peak_rss(stack.ingest.pid)?,
        rss_ingest: procstat::rss(stack.ingest.pid)?,
    })
}

/// Event→commit latency per table, then all tables together.
async fn latencies(
    db: &tokio_postgres::Client,
    t0: f64,
    t1: f64,
) -> Result<Vec<(String, Latency)>> {
    let mut latency = Vec::new();
    for t in ["depth_updates", "book_ticker", "trades", "book_top"] {
        latency.push((t.to_owned(), measure::latency(db, &[t], t0, t1).await?));
    }
    latency.push((
        "all tables".to_owned(),
        measure::latency(db, &measure::EVENT_TABLES, t0, t1).await?,
    ));
    Ok(latency)
}

/// Receive→commit latency per table that records `received_at`, then all of them together.
async fn receive_latencies(
    db: &tokio_postgres::Client,
    t0: f64,
    t1: f64,
) -> Result<Vec<(String, Latency)>> {
    let tables = ["depth_updates", "book_ticker", "trades"];
    let mut latency = Vec::new();
    for t in tables {
        latency.push((
            t.to_owned(),
            measure::receive_latency(db, &[t], t0, t1).await?,
        ));
    }
    let all = measure::receive_latency(db, &tables, t0, t1).await?;
    latency.push(("these tables".to_owned(), all));
    Ok(latency)
}

/// `book_at` at two depths, candles and a trades page; the note says what they read.
async fn time_queries(
    plan: &Plan,
    db: &tokio_postgres::Client,
    http: &reqwest::Client,
    api: std::net::SocketAddr,
    iid: i32,
) -> Result<(Vec<Timing>, String)> {
    let mut timings = Vec::new();
    let (_, span_from, span_to) = queries::book_span(db, SYMBOL).await?;
    for depth in [20, 1000] {
        let (s, g) = queries::book_at(db, http, api, SYMBOL, depth, plan.query_samples).await?;
        timings.push(s);
        timings.push(g);
    }
    // How much each answer had to replay: the widest stretch of updates between checkpoints.
    let r = db
        .query_one(
            "SELECT count(*)::int8,
                    coalesce(max((SELECT count(*) FROM depth_updates d
                                  WHERE d.instrument_id = c.instrument_id
                                    AND d.update_id > c.update_id
                                    AND d.update_id <= coalesce(c.next_id, 9223372036854775807))), 0)::int8
             FROM (SELECT instrument_id, update_id,
                          lead(update_id) OVER (ORDER BY time, update_id) AS next_id
                   FROM book_checkpoints WHERE instrument_id = $1) c",
            &[&iid],
        )
        .await?;
    let (checkpoints, widest): (i64, i64) = (r.get(0), r.get(1));
    let hour = queries::synthetic_hour(db, iid, plan.synthetic_trades_per_sec).await?;
    timings.push(queries::candles_hour(http, api, SYMBOL, hour, plan.query_repeat).await?);
    timings.push(queries::trades_page(http, api, SYMBOL, hour, plan.query_samples).await?);
    let query_note = format!(
        "`book_at` instants are spread evenly over {:.0} s of {SYMBOL} history. ingest stored {checkpoints} \
         full books of it in that time (the snapshot, then a checkpoint every 5 000 depth rows or 300 s, \
         whichever comes first), so an answer replays at most {widest} updates onto a checkpoint. \
         Candles and trades read one synthetic hour of {} trades a second written beside the collected data.",
        span_to - span_from,
        plan.synthetic_trades_per_sec
    );
    Ok((timings, query_note))
}
