//! Shared by the ingest tests: the simulator, a database, and the checks.
#![allow(dead_code)]

pub mod instants;
pub mod s3;
pub mod tardis;

use std::time::Duration;

use binance::units::parse_e8;
use binance::Venue;
use ingest::run::RunConfig;
use ingest::universe::Selection;
pub use pgembed::StoragePath;
use sim::{Sim, VenueConfig};
use tokio_postgres::Client;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn venue_cfg(v: Venue) -> VenueConfig {
    let mut c = VenueConfig::for_venue(v);
    c.symbols = 4;
    c.levels = 300;
    c.depth_interval = Duration::from_millis(20);
    c.changes_per_event = 5.0;
    c.truth_checkpoint_every = 100;
    c.truth_checkpoints = 60;
    c
}

pub async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `f` says done, failing only when its progress (any measure that grows while work
/// is being done) stands still for `DEADLINE`, or after `cap` in all: a long replay on a slow
/// machine is not a stall, and a stall still fails within a minute.
pub async fn wait_while_progressing<F, Fut>(what: &str, cap: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, u64)>,
{
    let start = tokio::time::Instant::now();
    let (mut last, mut moved) = (None, start);
    loop {
        let (done, progress) = f().await;
        if done {
            return;
        }
        if last != Some(progress) {
            (last, moved) = (Some(progress), tokio::time::Instant::now());
        }
        assert!(
            moved.elapsed() < DEADLINE,
            "timed out waiting for {what}: no progress for {DEADLINE:?} (at {progress})"
        );
        assert!(
            start.elapsed() < cap,
            "timed out waiting for {what} after {cap:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The schema path a storage path's server takes.
pub fn flavor(path: StoragePath) -> schema::Flavor {
    schema::Flavor::parse(path.as_str()).expect("every storage path is a schema flavor")
}

/// Migrates `url` on `path` (required, so a wrong automatic choice fails the test) and keeps
/// every row forever: the simulator's clock is the wall clock, but tests compare every row.
pub async fn migrate(url: &str, path: StoragePath) -> Client {
    let (mut db, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    schema::apply(&mut db, schema::FlavorChoice::Require(flavor(path)))
        .await
        .expect("migrate");
    db.execute("UPDATE storage_policies SET drop_after = NULL", &[])
        .await
        .expect("policies");
    db
}

/// A fresh database on `path`'s server, migrated on that path; `None` (said) where this
/// machine has no such server.
pub async fn migrated_on(
    path: StoragePath,
    prefix: &str,
) -> Option<(pgembed::TestDatabase, Client)> {
    let Some(tdb) = pgembed::test_database_on(path, prefix)
        .await
        .expect("database")
    else {
        pgembed::say_skipped(prefix, &format!("{path}: the server here does not run it"));
        return None;
    };
    let db = migrate(&tdb.url, path).await;
    Some((tdb, db))
}

/// The simulator with both venues (`venue_cfg`) and a fresh database migrated on `path`.
pub async fn sim_and_db(
    path: StoragePath,
    seed: u64,
    prefix: &str,
) -> Option<(Sim, pgembed::TestDatabase, Client)> {
    let (tdb, db) = migrated_on(path, prefix).await?;
    let sim = Sim::start(sim::SimConfig {
        seed,
        spot: Some(venue_cfg(Venue::Spot)),
        usdm: Some(venue_cfg(Venue::Usdm)),
    })
    .await
    .expect("sim");
    Some((sim, tdb, db))
}

pub async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

pub fn run_config(db_url: &str, sim: &Sim, spool: &std::path::Path) -> RunConfig {
    let urls =
        |h: Option<&sim::VenueHandle>| h.map(|h| (h.rest_url(), h.ws_url())).unwrap_or_default();
    let ((spot_rest, spot_ws), (usdm_rest, usdm_ws)) =
        (urls(sim.spot.as_ref()), urls(sim.usdm.as_ref()));
    let venues = [
        (Venue::Spot, sim.spot.is_some()),
        (Venue::Usdm, sim.usdm.is_some()),
    ]
    .into_iter()
    .filter(|v| v.1)
    .map(|v| v.0)
    .collect();
    RunConfig {
        database_url: db_url.to_owned(),
        venues,
        spot_rest,
        spot_ws,
        usdm_rest,
        usdm_ws,
        selection: Selection {
            symbols: None,
            top: 4,
            quote: Some("USDT".into()),
            depth_levels: Default::default(),
        },
        streams_per_connection: 6,
        connection_lifetime: Duration::from_secs(3600),
        stale_after: Duration::from_secs(10),
        spot_weight_limit: 6000,
        usdm_weight_limit: 2400,
        checkpoint_every: Duration::from_secs(1),
        checkpoint_rows: 5000,
        top_every: Duration::from_millis(200),
        top_levels: 20,
        batch_rows: 2000,
        batch_delay: Duration::from_millis(50),
        queue_rows: 100_000,
        spool_dir: spool.to_owned(),
        metrics_bind: "127.0.0.1:0".parse().expect("addr"),
        shutdown_grace: Duration::from_secs(30),
        universe_refresh: Duration::from_secs(600),
        maintain_every: Duration::from_millis(500),
        leases: None,
    }
}

pub type Book = (Vec<(i64, i64)>, Vec<(i64, i64)>);

pub async fn db_book(db: &Client, iid: i32, time_ms: i64) -> (Book, i64) {
    let rows = db
        .query(
            "SELECT side, price::text, qty::text, book_update_id FROM book_at($1, to_timestamp($2::float8 / 1000), 100000)",
            &[&iid, &(time_ms as f64)],
        )
        .await
        .expect("book_at");
    let mut book: Book = (Vec::new(), Vec::new());
    let mut id = 0;
    for r in rows {
        let side: String = r.get(0);
        let lvl = (
            parse_e8(r.get::<_, &str>(1)).expect("price"),
            parse_e8(r.get::<_, &str>(2)).expect("qty"),
        );
        id = r.get(3);
        if side == "bid" {
            book.0.push(lvl)
        } else {
            book.1.push(lvl)
        }
    }
    (book, id)
}

/// The window of the checkpoint `book_at` starts from at `time_ms` (`None`: every level).
pub async fn checkpoint_window(db: &Client, iid: i32, time_ms: i64) -> Option<i32> {
    db.query_one(
        "SELECT levels FROM book_checkpoints WHERE instrument_id = $1 AND time <= to_timestamp($2::float8 / 1000)
         ORDER BY time DESC, update_id DESC LIMIT 1",
        &[&iid, &(time_ms as f64)],
    )
    .await
    .expect("the checkpoint")
    .get(0)
}

/// How many levels per side a book kept in `levels` holds.
pub fn window(depth_levels: Option<i32>) -> usize {
    depth_levels.map_or(usize::MAX, |n| {
        usize::try_from(n).expect("a positive window")
    })
}

pub fn truth_book(t: &binance::wire::DepthSnapshot) -> Book {
    let conv = |v: &Vec<binance::wire::Level>| {
        v.iter()
            .map(|[p, q]| (parse_e8(p).expect("p"), parse_e8(q).expect("q")))
            .collect()
    };
    (conv(&t.bids), conv(&t.asks))
}

/// Books from the database equal the simulator's truth, at several events of each
/// instrument's last epoch; returns how many books were compared.
pub async fn check_books(db: &Client, sim: &Sim) -> usize {
    let (spot, usdm) = (
        sim.spot.as_ref().expect("spot"),
        sim.usdm.as_ref().expect("usdm"),
    );
    let instruments = db
        .query(
            "SELECT id, venue, symbol FROM instruments WHERE active ORDER BY id",
            &[],
        )
        .await
        .expect("instruments");
    assert_eq!(instruments.len(), 8);
    let mut compared = 0;
    for inst in &instruments {
        let (iid, venue, symbol): (i32, String, String) = (inst.get(0), inst.get(1), inst.get(2));
        let handle = if venue == "spot" { spot } else { usdm };
        // Events of the last completed epoch, sampled.
        let events = db
            .query(
                "SELECT DISTINCT update_id, (extract(epoch FROM time) * 1000)::int8 FROM depth_updates d
                 WHERE instrument_id = $1
                   AND time > (SELECT max(time) FROM book_checkpoints WHERE instrument_id = $1 AND kind = 'snapshot')
                   AND time <= (SELECT max(time) FROM sync_events WHERE instrument_id = $1 AND kind = 'stopped')
                 ORDER BY 1",
                &[&iid],
            )
            .await
            .expect("events");
        if events.len() <= 10 {
            for r in db.query("SELECT kind, time::text, first_update_id, last_update_id FROM sync_events WHERE instrument_id = $1 ORDER BY time, id", &[&iid]).await.expect("dump") {
                eprintln!("event {:?} {:?} {:?} {:?}", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, Option<i64>>(2), r.get::<_, Option<i64>>(3));
            }
            for r in db.query("SELECT kind, time::text, update_id FROM book_checkpoints WHERE instrument_id = $1 ORDER BY time", &[&iid]).await.expect("dump") {
                eprintln!("checkpoint {:?} {:?} {:?}", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i64>(2));
            }
            let r = db.query_one("SELECT count(*), min(time)::text, max(time)::text FROM depth_updates WHERE instrument_id = $1", &[&iid]).await.expect("dump");
            eprintln!(
                "depth {:?} {:?} {:?}",
                r.get::<_, i64>(0),
                r.get::<_, Option<String>>(1),
                r.get::<_, Option<String>>(2)
            );
        }
        assert!(
            events.len() > 10,
            "{venue} {symbol}: events stored: {}",
            events.len()
        );
        for idx in [events.len() / 3, events.len() / 2, events.len() - 1] {
            let (uid, t): (i64, i64) = (events[idx].get(0), events[idx].get(1));
            // Two events in one millisecond cannot be told apart by time: skip those.
            let same_ms = db
                .query_one("SELECT count(DISTINCT update_id) FROM depth_updates WHERE instrument_id = $1 AND time = to_timestamp($2::float8 / 1000)", &[&iid, &(t as f64)])
                .await
                .expect("count")
                .get::<_, i64>(0);
            if same_ms > 1 {
                continue;
            }
            let (book, book_id) = db_book(db, iid, t).await;
            let window = window(checkpoint_window(db, iid, t).await);
            let truth = handle
                .truth(&symbol, Some(uid as u64), window)
                .expect("truth within the window");
            assert_eq!(
                book_id, uid,
                "{venue} {symbol}: book_at stands at the event's id"
            );
            assert_eq!(truth.last_update_id, uid as u64);
            assert_eq!(
                book,
                truth_book(&truth),
                "{venue} {symbol} at {uid}: database book equals the truth"
            );
            compared += 1;
        }
    }
    compared
}

/// Inside an epoch the stored events are continuous (spot: `U` = previous `u` + 1; USD-M:
/// `pu` = previous `u`); every break is covered by a resync (a snapshot checkpoint in it).
pub async fn check_continuity(db: &Client) {
    let instruments = db
        .query(
            "SELECT id, venue FROM instruments WHERE active ORDER BY id",
            &[],
        )
        .await
        .expect("instruments");
    for inst in &instruments {
        let (iid, venue): (i32, String) = (inst.get(0), inst.get(1));
        let evs = db
            .query("SELECT DISTINCT first_update_id, update_id, prev_update_id FROM depth_updates WHERE instrument_id = $1 ORDER BY 2", &[&iid])
            .await
            .expect("events");
        let mut breaks = 0;
        for w in evs.windows(2) {
            let (prev_last, next_first, next_last, next_pu): (i64, i64, i64, Option<i64>) =
                (w[0].get(1), w[1].get(0), w[1].get(1), w[1].get(2));
            let continuous = match venue.as_str() {
                "spot" => next_first == prev_last + 1,
                _ => next_pu == Some(prev_last),
            };
            if continuous {
                continue;
            }
            breaks += 1;
            // Explained by a sync whose snapshot (lastUpdateId, the 'synced' event's first id)
            // lies between the last stored event and the one that bridged it.
            let explained = count(
                db,
                &format!("SELECT count(*) FROM sync_events WHERE instrument_id = {iid} AND kind = 'synced' AND first_update_id >= {prev_last} AND first_update_id <= {next_last}"),
            )
            .await;
            assert!(
                explained > 0,
                "{venue} instrument {iid}: break after id {prev_last} without a resync"
            );
        }
        let resyncs = count(db, &format!("SELECT count(*) FROM book_checkpoints WHERE instrument_id = {iid} AND kind = 'snapshot'")).await;
        assert!(
            breaks < resyncs.max(1),
            "{venue} instrument {iid}: {breaks} breaks, {resyncs} snapshots"
        );
    }
}

/// No depth row or trade stored twice.
pub async fn check_no_duplicates(db: &Client) {
    let dups = count(db, "SELECT count(*) FROM (SELECT instrument_id, update_id, side, price FROM depth_updates GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d").await;
    assert_eq!(dups, 0, "no duplicate depth rows");
    let dup_trades = count(db, "SELECT count(*) FROM (SELECT instrument_id, agg_trade_id FROM trades GROUP BY 1, 2 HAVING count(*) > 1) d").await;
    assert_eq!(dup_trades, 0, "no duplicate trades");
}

/// Waits until every active instrument has stored at least `n` depth events since its latest
/// snapshot (so its current epoch has history to compare).
pub async fn events_since_sync(db: &Client, n: i64) {
    let sql = "SELECT coalesce(min(c), 0) FROM (
                 SELECT i.id, (SELECT count(DISTINCT d.update_id) FROM depth_updates d
                               WHERE d.instrument_id = i.id
                                 AND d.time > (SELECT max(time) FROM book_checkpoints b WHERE b.instrument_id = i.id AND b.kind = 'snapshot')) AS c
                 FROM instruments i WHERE i.active) x";
    wait_until("events in every current epoch", || async move {
        count(db, sql).await >= n
    })
    .await;
}

/// After one more `maintain()`, the aggregates account for every raw row: nothing replayed late
/// was left out of a materialized bucket.
pub async fn check_aggregates_complete(db: &Client) {
    db.query_one("SELECT maintain()", &[])
        .await
        .expect("maintain");
    for (agg, raw) in [
        (
            "SELECT coalesce(sum(samples), 0)::int8 FROM ticker_1s",
            "SELECT count(*) FROM book_ticker",
        ),
        (
            "SELECT coalesce(sum(agg_trade_count), 0)::int8 FROM trades_1s",
            "SELECT count(*) FROM trades",
        ),
        (
            "SELECT coalesce(sum(samples), 0)::int8 FROM ticker_1h",
            "SELECT count(*) FROM book_ticker",
        ),
    ] {
        let (a, r) = (count(db, agg).await, count(db, raw).await);
        if a != r {
            let diff: Vec<String> = db
                .query(
                    "SELECT b::text || ' ' || coalesce(v.samples, 0) || '/' || coalesce(x.n, 0)
                     FROM (SELECT date_trunc('second', time) b, instrument_id i, count(*) n FROM book_ticker GROUP BY 1, 2) x
                     FULL JOIN (SELECT bucket b, instrument_id i, samples FROM ticker_1s) v USING (b, i)
                     WHERE v.samples IS DISTINCT FROM x.n ORDER BY 1 LIMIT 20",
                    &[],
                )
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default();
            panic!("{agg}: {a} aggregated, {r} raw rows; first differing 1 s buckets (aggregated/raw): {diff:?}");
        }
    }
}

/// ingest running in this test's process, with a spool of its own.
pub struct Running {
    pub metrics: std::sync::Arc<ingest::metrics::Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _spool: tempfile::TempDir,
}

/// Starts ingest against `sim` and the database at `db_url`; `tweak` adjusts the config.
pub fn start_ingest(db_url: &str, sim: &Sim, tweak: impl FnOnce(&mut RunConfig)) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let spool = tempfile::tempdir().expect("spool");
    let mut cfg = run_config(db_url, sim, spool.path());
    tweak(&mut cfg);
    let metrics = ingest::metrics::Metrics::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(ingest::run::run(cfg, metrics.clone(), shutdown.clone()));
    Running {
        metrics,
        shutdown,
        handle,
        _spool: spool,
    }
}

impl Running {
    /// Where this ingest spools.
    pub fn spool(&self) -> &std::path::Path {
        self._spool.path()
    }

    /// SIGTERM's path: stops, and asserts that ingest flushed and ended cleanly in time.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("shutdown in time")
            .expect("join")
            .expect("run ends cleanly");
    }
}
