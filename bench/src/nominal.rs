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
    pub gaps: f64,
    pub dropped_rows: f64,
    pub cpu_ingest: f64,
    pub cpu_graphql: f64,
    pub cpu_postgres: Option<f64>,
    pub cpu_sim: f64,
    pub peak_rss_ingest: u64,
    pub peak_rss_graphql: u64,
    pub api_load: String,
    pub fanout: Fanout,
    pub storage: Vec<(String, Storage)>,
    pub queries: Vec<Timing>,
    pub query_note: String,
}

pub async fn run(server: &Server, plan: &Plan, bin_dir: &Path, work: &Path) -> Result<Nominal> {
    let name = "bench_nominal";
    let url = server.fresh_database(name).await?;
    let n = plan.nominal_symbols;
    let sim = Sim::start(SimConfig {
        seed: 11,
        spot: Some(stack::sim_venue(Venue::Spot, n, 1.0)),
        usdm: Some(stack::sim_venue(Venue::Usdm, n, 1.0)),
    })
    .await?;
    let (spot, usdm) = (
        sim.spot.as_ref().context("spot")?,
        sim.usdm.as_ref().context("usdm")?,
    );
    let started = std::time::Instant::now();
    let mut ingest = stack::spawn_ingest(
        bin_dir,
        &IngestArgs {
            database_url: url.clone(),
            venues: vec![
                (Venue::Spot, spot.rest_url(), spot.ws_url()),
                (Venue::Usdm, usdm.rest_url(), usdm.ws_url()),
            ],
            top: n,
            extra: plan.ingest_args.clone(),
        },
        work,
    )?;
    let mut graphql = stack::spawn_graphql(bin_dir, &url, work)?;
    let http = reqwest::Client::new();
    let (iaddr, api) = (ingest.addr, graphql.addr);
    let books = 2 * n;
    stack::wait_synced(&http, &mut ingest, books, plan.sync_deadline).await?;
    let sync_secs = started.elapsed().as_secs_f64();
    stack::wait_for("the API", plan.sync_deadline, &mut graphql, || async {
        http.get(format!("http://{api}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await?;
    let book_query = format!("{{ book(symbol: \"{SYMBOL}\", depth: 20) {{ updateId }} }}");
    stack::wait_for(
        "a book from the API",
        plan.sync_deadline,
        &mut graphql,
        || async { queries::gql(&http, api, &book_query).await.is_ok() },
    )
    .await?;

    // A steady, modest API load while resources are measured: live subscribers and one
    // client polling the book.
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
    let poller = {
        let (http, stop) = (http.clone(), stop.clone());
        let q = book_query.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok::<_, anyhow::Error>(()),
                    _ = tick.tick() => { queries::gql(&http, api, &q).await?; }
                }
            }
        })
    };
    let api_load = format!(
        "{} graphql-ws subscribers ({} to `book`, {} to `trades` of {SYMBOL}) and one `book(depth: 20)` query a second",
        subs.len(),
        subs.len() / 2,
        subs.len() / 2
    );
    tokio::time::sleep(plan.warmup).await;

    let db = stack::connect(&url).await?;
    let before = IngestCounters::scrape(&http, iaddr).await?;
    let windows = (
        CpuWindow::start(ingest.pid, false)?,
        CpuWindow::start(graphql.pid, false)?,
        server
            .postmaster_pid
            .map(|p| CpuWindow::start(p, true))
            .transpose()?,
        CpuWindow::start(std::process::id() as i32, false)?,
    );
    let t0 = measure::db_now(&db).await?;
    tokio::time::sleep(plan.nominal_window).await;
    let t1 = measure::db_now(&db).await?;
    let counted = IngestCounters::scrape(&http, iaddr).await?.since(&before);
    let cpu_ingest = windows.0.percent()?;
    let cpu_graphql = windows.1.percent()?;
    let cpu_postgres = windows.2.map(|w| w.percent()).transpose()?;
    let cpu_sim = windows.3.percent()?;
    let peak_rss_ingest = procstat::peak_rss(ingest.pid)?;
    stop.cancel();
    for s in subs {
        s.await?;
    }
    poller.await?.context("the polling client")?;
    let peak_rss_graphql = procstat::peak_rss(graphql.pid)?;

    let secs = t1 - t0;
    let rows: i64 = measure::committed_rows(&db, t0, t1)
        .await?
        .iter()
        .map(|c| c.1)
        .sum();
    let mut latency = Vec::new();
    for t in ["depth_updates", "book_ticker", "trades", "book_top"] {
        latency.push((t.to_owned(), measure::latency(&db, &[t], t0, t1).await?));
    }
    latency.push((
        "all tables".to_owned(),
        measure::latency(&db, &measure::EVENT_TABLES, t0, t1).await?,
    ));

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
        graphql.pid,
        iid,
        SYMBOL,
        plan.fanout_clients,
        plan.fanout_window,
    )
    .await
    .context("fan-out")?;

    ingest.stop().await.context("stopping ingest")?;
    sim.shutdown();

    tracing::info!("storage");
    let mut storage = Vec::new();
    for t in ["depth_updates", "book_top", "book_ticker", "trades"] {
        storage.push((t.to_owned(), measure::storage(&db, t).await?));
    }

    tracing::info!("queries");
    let mut timings = Vec::new();
    let (_, span_from, span_to) = queries::book_span(&db, SYMBOL).await?;
    for depth in [20, 1000] {
        let (s, g) = queries::book_at(&db, &http, api, SYMBOL, depth, plan.query_samples).await?;
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
    let hour = queries::synthetic_hour(&db, iid, plan.synthetic_trades_per_sec).await?;
    timings.push(queries::candles_hour(&http, api, SYMBOL, hour, plan.query_repeat).await?);
    timings.push(queries::trades_page(&http, api, SYMBOL, hour, plan.query_samples).await?);
    let query_note = format!(
        "`book_at` instants are spread evenly over {:.0} s of {SYMBOL} history. ingest stored {checkpoints} \
         full books of it in that time (the snapshot, then a checkpoint every 5 000 depth rows or 300 s, \
         whichever comes first), so an answer replays at most {widest} updates onto a checkpoint. \
         Candles and trades read one synthetic hour of {} trades a second written beside the collected data.",
        span_to - span_from,
        plan.synthetic_trades_per_sec
    );
    graphql.stop().await.context("stopping graphql")?;
    drop(db);
    if !plan.keep {
        server.drop_database(name).await?;
    }
    Ok(Nominal {
        symbols_per_venue: n,
        books,
        sync_secs,
        window_secs: secs,
        messages_per_sec: counted.messages / secs,
        rows_per_sec: rows as f64 / secs,
        latency,
        gaps: counted.gaps,
        dropped_rows: counted.dropped_rows,
        cpu_ingest,
        cpu_graphql,
        cpu_postgres,
        cpu_sim,
        peak_rss_ingest,
        peak_rss_graphql,
        api_load,
        fanout,
        storage,
        queries: timings,
        query_note,
    })
}
