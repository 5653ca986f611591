//! ingest through a database outage, SIGTERM under load, connection rotation, rate limits,
//! malformed messages and bad configuration.

mod common;

use std::time::Duration;

use binance::Venue;
use common::*;
use ingest::epochs::FOUND_AT_START;
use ingest::metrics::Metrics;
use sim::{Fault, Sim, SimConfig};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

async fn sim(changes: f64) -> Sim {
    let mut s = venue_cfg(Venue::Spot);
    let mut u = venue_cfg(Venue::Usdm);
    s.changes_per_event = changes;
    u.changes_per_event = changes;
    Sim::start(SimConfig {
        seed: 5,
        spot: Some(s),
        usdm: Some(u),
    })
    .await
    .expect("sim")
}

async fn connect(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    c
}

async fn synced(metrics: &std::sync::Arc<Metrics>, n: i64) {
    let m = metrics.clone();
    wait_until("books synced", || {
        let m = m.clone();
        async move { m.synced_books() == n }
    })
    .await;
}

/// `ingest run` as a process of its own (so it can be signalled, or killed outright).
fn spawn_ingest_binary(url: &str, sim: &Sim, spool: &std::path::Path) -> tokio::process::Child {
    let (s, u) = (
        sim.spot.as_ref().expect("spot"),
        sim.usdm.as_ref().expect("usdm"),
    );
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args([
            "run",
            "--top",
            "4",
            "--metrics-bind",
            "127.0.0.1:0",
            "--book-top-ms",
            "200",
            "--batch-delay-ms",
            "50",
        ])
        .args([
            "--spot-rest-url",
            &s.rest_url(),
            "--spot-ws-url",
            &s.ws_url(),
            "--usdm-rest-url",
            &u.rest_url(),
            "--usdm-ws-url",
            &u.ws_url(),
        ])
        .arg("--spool-dir")
        .arg(spool)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ingest")
}

/// A private server of `path` in `dir` on a fixed port, so it can be stopped and started
/// again at the same URL; a database `depthbook` in it, migrated.
async fn restartable_server(
    path: StoragePath,
    dir: &std::path::Path,
) -> (pgembed::PgServer, pgembed::Options, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let opts = pgembed::Options {
        dir: Some(dir.join("pg")),
        port: Some(port),
        ephemeral: true,
        settings: vec![],
        timescaledb: path.preload(),
        replica_of: None,
    };
    let server = start_server(&opts).await;
    let admin = connect(&server.url("postgres")).await;
    admin
        .batch_execute("CREATE DATABASE depthbook")
        .await
        .expect("create");
    let url = server.url("depthbook");
    migrate(&url, path).await;
    (server, opts, url)
}

async fn start_server(opts: &pgembed::Options) -> pgembed::PgServer {
    let o = opts.clone();
    tokio::task::spawn_blocking(move || pgembed::PgServer::start(o))
        .await
        .expect("join")
        .expect("server")
}

async fn stop_server(server: pgembed::PgServer) {
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("stop");
}

/// The 'synced' events in the spool: epochs that began while the database was down. The kind
/// is a text field of the batch's binary COPY rows, so it is found whole by its length prefix.
fn spooled_syncs(spool: &std::path::Path) -> usize {
    const FIELD: &[u8] = b"\0\0\0\x06synced";
    spooled(spool, "sync_events")
        .iter()
        .filter_map(|p| ingest::spool::Spool::read(p))
        .map(|b| b.bytes.windows(FIELD.len()).filter(|w| *w == FIELD).count())
        .sum()
}

/// The batch files spooled for `table`.
fn spooled(spool: &std::path::Path, table: &str) -> Vec<std::path::PathBuf> {
    walk(&spool.join(table))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "copy"))
        .collect()
}

fn spooled_files(spool: &std::path::Path, table: &str) -> usize {
    spooled(spool, table).len()
}

/// `kill -9` while the database is down, then a restart: what was spooled is replayed before
/// open epochs are judged, so every row lies inside its epoch, epochs that began during the
/// outage are closed too, and `book_at` refuses the time ingest was dead.
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn a_crash_during_an_outage_leaves_no_row_outside_an_epoch(path: StoragePath) {
    let root = tempfile::tempdir().expect("tempdir");
    let (server, opts, url) = restartable_server(path, root.path()).await;
    let sim = sim(5.0).await;
    let spool = tempfile::tempdir().expect("spool");
    let mut child = spawn_ingest_binary(&url, &sim, spool.path());
    {
        let db = connect(&url).await;
        let dbr = &db;
        wait_until("8 books synced", || async move {
            count(
                dbr,
                "SELECT count(DISTINCT instrument_id) FROM sync_events WHERE kind = 'synced'",
            )
            .await
                == 8
        })
        .await;
    }
    let outage_ms = ingest::now_ms();
    stop_server(server).await;
    // Books resync while the database is down: their epochs exist only in the spool.
    let spot = sim.spot.as_ref().expect("spot");
    spot.inject(Fault::DropDepth {
        symbol: None,
        count: 4,
    });
    let sp = spool.path().to_owned();
    wait_until("depth rows and a new epoch spooled", || {
        let sp = sp.clone();
        async move { spooled_files(&sp, "depth_updates") >= 5 && spooled_syncs(&sp) >= 1 }
    })
    .await;
    child.start_kill().expect("kill -9");
    child.wait().await.expect("reaped");
    let killed_ms = ingest::now_ms();

    let server = start_server(&opts).await;
    let restart = connect(&url).await;
    let restarted: f64 = restart
        .query_one("SELECT extract(epoch FROM now())::float8", &[])
        .await
        .expect("now")
        .get(0);
    let mut child = spawn_ingest_binary(&url, &sim, spool.path());
    let dbr = &restart;
    wait_until("the spool replayed and books synced again", || {
        let sp = spool.path().to_owned();
        async move {
            walk(&sp).iter().all(|p| p.extension().is_none_or(|e| e != "copy"))
                && count(dbr, &format!("SELECT count(DISTINCT instrument_id) FROM sync_events WHERE kind = 'synced' AND time > to_timestamp({restarted})")).await == 8
        }
    })
    .await;
    let pid = child.id().expect("pid").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits")
        .expect("wait");

    let db = restart;
    // Every epoch ended.
    let open = count(&db, "SELECT count(*) FROM sync_events s WHERE kind = 'synced' AND NOT EXISTS (SELECT 1 FROM sync_events e WHERE e.epoch = s.epoch AND e.kind IN ('gap', 'stopped'))").await;
    assert_eq!(open, 0, "no epoch is left open");
    // What the killed run received (spooled rows included) lies inside the epochs it closed.
    let outside = count(
        &db,
        &format!(
            "SELECT count(*) FROM depth_updates d
         WHERE d.received_at < to_timestamp({restarted})
           AND d.time > (SELECT max(e.time) FROM sync_events e
                         WHERE e.instrument_id = d.instrument_id AND e.kind IN ('gap', 'stopped')
                           AND e.time < to_timestamp({restarted}))"
        ),
    )
    .await;
    // The epochs the killed run left open (a book between a gap and its next sync had none),
    // and those closed at start; some of them began during the outage.
    let left_open = count(
        &db,
        &format!(
            "SELECT count(*) FROM sync_events s
             WHERE s.kind = 'synced' AND s.time < to_timestamp({restarted})
               AND NOT EXISTS (SELECT 1 FROM sync_events e WHERE e.epoch = s.epoch
                                 AND (e.kind = 'gap' OR (e.kind = 'stopped' AND e.detail IS DISTINCT FROM '{FOUND_AT_START}')))"
        ),
    )
    .await;
    let closed_at_start = |since_ms: u64| {
        format!(
            "SELECT count(*) FROM sync_events e JOIN sync_events s ON s.epoch = e.epoch AND s.kind = 'synced'
             WHERE e.kind = 'stopped' AND e.detail = '{FOUND_AT_START}' AND s.time >= to_timestamp({since_ms} / 1000.0)"
        )
    };
    let last_closed = count(&db, &closed_at_start(0)).await;
    assert!(left_open >= 1, "the killed run left epochs open");
    assert_eq!(
        last_closed, left_open,
        "every epoch the killed run left open was closed at start"
    );
    assert!(
        count(&db, &closed_at_start(outage_ms)).await >= 1,
        "an epoch that began during the outage, only in the spool, was closed at start"
    );
    assert_eq!(
        outside, 0,
        "rows of the killed run stored after their epoch's end"
    );
    // Nobody can read a book for the time ingest was dead.
    let iids: Vec<i32> = db
        .query("SELECT DISTINCT instrument_id FROM sync_events", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let dead_at = (killed_ms as f64 + restarted * 1000.0) / 2000.0;
    for iid in iids {
        let res = db
            .query(
                "SELECT * FROM book_at($1, to_timestamp($2), 10)",
                &[&iid, &dead_at],
            )
            .await;
        let code = res
            .err()
            .and_then(|e| e.as_db_error().map(|d| d.code().code().to_owned()));
        assert_eq!(
            code.as_deref(),
            Some("DB001"),
            "instrument {iid}: book_at while ingest was dead"
        );
    }
    drop(server);
}

async fn a_database_outage_is_spooled_and_replayed_in_order(path: StoragePath) {
    let root = tempfile::tempdir().expect("tempdir");
    let (server, opts, url) = restartable_server(path, root.path()).await;

    let sim = sim(5.0).await;
    let ingest = start_ingest(&url, &sim, |_| {});
    let metrics = ingest.metrics.clone();
    synced(&metrics, 8).await;

    // The database goes away for 30 seconds while the market goes on.
    let outage = std::time::Instant::now();
    stop_server(server).await;
    let m = metrics.clone();
    wait_until("batches spooled", || {
        let m = m.clone();
        async move {
            m.spooled_batches
                .with_label_values(&["depth_updates"])
                .get()
                > 0
        }
    })
    .await;
    assert_eq!(
        metrics.synced_books(),
        8,
        "books keep syncing while the database is down"
    );
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    let server = start_server(&opts).await;

    // The spool drains; rows from the outage are there, in order, once.
    let spool_dir = ingest.spool().to_owned();
    wait_until("the spool drained", || {
        let d = spool_dir.clone();
        async move {
            walk(&d)
                .iter()
                .all(|p| p.extension().is_none_or(|e| e != "copy"))
        }
    })
    .await;
    let db = connect(&url).await;
    let dbr = &db;
    let before = count(&db, "SELECT count(*) FROM depth_updates").await;
    wait_until("live rows again", || async move {
        count(dbr, "SELECT count(*) FROM depth_updates").await > before + 200
    })
    .await;
    events_since_sync(&db, 30).await;
    ingest.stop().await;

    let during = count(&db, &format!("SELECT count(*) FROM depth_updates WHERE received_at BETWEEN now() - interval '{} seconds' AND now() - interval '10 seconds'", outage.elapsed().as_secs())).await;
    assert!(during > 0, "rows from the outage were replayed");
    assert!(count(&db, "SELECT count(*) FROM ingest_batches WHERE spooled").await > 0);
    check_aggregates_complete(&db).await;
    check_no_duplicates(&db).await;
    check_continuity(&db).await;
    let compared = check_books(&db, &sim).await;
    assert!(compared >= 8, "compared {compared}");
    drop(server);
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn sigterm_under_load_flushes_everything_and_exits_0(path: StoragePath) {
    let sim = sim(30.0).await;
    let Some((tdb, db)) = migrated_on(path, "ingest_sigterm").await else {
        return;
    };
    let spool = tempfile::tempdir().expect("spool");
    let mut child = spawn_ingest_binary(&tdb.url, &sim, spool.path());
    let dbr = &db;
    wait_until("8 books synced", || async move {
        count(
            dbr,
            "SELECT count(DISTINCT instrument_id) FROM sync_events WHERE kind = 'synced'",
        )
        .await
            == 8
    })
    .await;
    wait_until("rows flowing", || async move {
        count(dbr, "SELECT count(*) FROM depth_updates").await > 2000
    })
    .await;

    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(exit.success(), "exit status {exit:?}");

    // Every book ended with 'stopped' at its last applied id, and every depth row up to it is
    // stored: nothing the collector had applied was lost.
    let stops = db
        .query(
            "SELECT DISTINCT ON (instrument_id) instrument_id, kind, first_update_id FROM sync_events
             WHERE kind IN ('synced', 'gap', 'stopped') ORDER BY instrument_id, time DESC, id DESC",
            &[],
        )
        .await
        .expect("stops");
    assert_eq!(stops.len(), 8);
    for r in &stops {
        let (iid, kind, last): (i32, String, Option<i64>) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(kind, "stopped", "instrument {iid}");
        let stored: i64 = db
            .query_one(
                "SELECT coalesce(max(update_id), 0) FROM depth_updates WHERE instrument_id = $1",
                &[&iid],
            )
            .await
            .expect("max")
            .get(0);
        assert!(
            stored >= last.expect("book id"),
            "instrument {iid}: rows up to {last:?} stored, found up to {stored}"
        );
    }
    assert!(walk(spool.path()).is_empty(), "nothing left in the spool");
    check_no_duplicates(&db).await;
    check_continuity(&db).await;
}

async fn rotation_is_make_before_break(path: StoragePath) {
    let sim = sim(5.0).await;
    let Some((tdb, db)) = migrated_on(path, "ingest_rotation").await else {
        return;
    };
    let ingest = start_ingest(&tdb.url, &sim, |cfg| {
        cfg.connection_lifetime = Duration::from_millis(700);
    });
    let metrics = ingest.metrics.clone();
    synced(&metrics, 8).await;
    let m = metrics.clone();
    wait_until("several rotations of every connection", || {
        let m = m.clone();
        async move {
            m.reconnects.with_label_values(&["spot", "rotation"]).get() >= 6
                && m.reconnects.with_label_values(&["usdm", "rotation"]).get() >= 6
        }
    })
    .await;
    ingest.stop().await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM sync_events WHERE kind = 'gap'").await,
        0,
        "rotation loses nothing"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM (SELECT instrument_id, update_id FROM book_ticker GROUP BY 1, 2 HAVING count(*) > 1) d").await, 0, "overlap deduplicated");
    check_no_duplicates(&db).await;
    check_continuity(&db).await;
    let seen = instants::check_every_instant(&db, &sim).await;
    assert!(seen.equal > 100, "{seen:?}");
}

async fn rate_limits_pause_snapshots_and_are_recorded(path: StoragePath) {
    let sim = sim(5.0).await;
    let Some((tdb, db)) = migrated_on(path, "ingest_ratelimit").await else {
        return;
    };
    let ingest = start_ingest(&tdb.url, &sim, |_| {});
    let metrics = ingest.metrics.clone();
    synced(&metrics, 8).await;
    let spot = sim.spot.as_ref().expect("spot");
    spot.inject(Fault::RestErrors {
        status: 429,
        count: 1,
    });
    spot.inject(Fault::RestErrors {
        status: 418,
        count: 1,
    });
    spot.inject(Fault::DropDepth {
        symbol: Some("ETHUSDT".into()),
        count: 1,
    });
    let dbr = &db;
    wait_until("rate limiting recorded", || async move {
        count(
            dbr,
            "SELECT count(*) FROM sync_events WHERE kind = 'rate_limited'",
        )
        .await
            >= 1
    })
    .await;
    synced(&metrics, 8).await;
    assert!(
        metrics
            .rest_responses
            .with_label_values(&["spot", "429"])
            .get()
            == 1
    );
    assert!(
        metrics
            .rest_responses
            .with_label_values(&["spot", "418"])
            .get()
            == 1
    );
    ingest.stop().await;
}

async fn malformed_messages_are_counted_and_the_book_resyncs(path: StoragePath) {
    let sim = sim(5.0).await;
    let Some((tdb, db)) = migrated_on(path, "ingest_malformed").await else {
        return;
    };
    let ingest = start_ingest(&tdb.url, &sim, |_| {});
    let metrics = ingest.metrics.clone();
    synced(&metrics, 8).await;
    let usdm = sim.usdm.as_ref().expect("usdm");
    usdm.inject(Fault::MalformedFrames {
        symbol: Some("BTCUSDT".into()),
        count: 1,
    });
    usdm.inject(Fault::TruncatedFrames {
        symbol: Some("BTCUSDT".into()),
        count: 1,
    });
    let m = metrics.clone();
    wait_until("parse errors counted", || {
        let m = m.clone();
        async move { m.parse_errors.with_label_values(&["usdm"]).get() >= 2 }
    })
    .await;
    let dbr = &db;
    wait_until("the lost event recorded as a gap", || async move {
        count(dbr, "SELECT count(*) FROM sync_events e JOIN instruments i ON i.id = e.instrument_id WHERE i.venue = 'usdm' AND i.symbol = 'BTCUSDT' AND kind = 'gap'").await >= 1
    })
    .await;
    synced(&metrics, 8).await;
    events_since_sync(&db, 30).await;
    ingest.stop().await;
    let compared = check_books(&db, &sim).await;
    assert!(compared >= 8);
}

#[tokio::test]
async fn unknown_symbols_are_a_clear_startup_error() {
    let sim = sim(1.0).await;
    let Some((tdb, _db)) = migrated_on(StoragePath::Postgres, "ingest_unknown").await else {
        return;
    };
    let spool = tempfile::tempdir().expect("spool");
    let mut cfg = run_config(&tdb.url, &sim, spool.path());
    cfg.selection.symbols = Some(vec!["BTCUSDT".into(), "NOPEUSDT".into(), "FAKEUSDT".into()]);
    let err = ingest::run::run(cfg, Metrics::new(), CancellationToken::new())
        .await
        .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("NOPEUSDT") && msg.contains("FAKEUSDT") && !msg.contains("BTCUSDT,"),
        "{msg}"
    );
}

async fn listings_and_delistings_are_picked_up_without_a_restart(path: StoragePath) {
    let mut s = venue_cfg(Venue::Spot);
    s.symbols = 5;
    let sim = Sim::start(SimConfig {
        seed: 9,
        spot: Some(s),
        usdm: None,
    })
    .await
    .expect("sim");
    let Some((tdb, db)) = migrated_on(path, "ingest_listing").await else {
        return;
    };
    let ingest = start_ingest(&tdb.url, &sim, |cfg| {
        cfg.venues = vec![Venue::Spot];
        cfg.universe_refresh = Duration::from_millis(300);
    });
    let metrics = ingest.metrics.clone();
    synced(&metrics, 4).await;
    let dbr = &db;
    let active = |sym: &'static str| async move {
        dbr.query_opt(
            "SELECT active FROM instruments WHERE venue = 'spot' AND symbol = $1",
            &[&sym],
        )
        .await
        .expect("query")
        .map(|r| r.get::<_, bool>(0))
    };
    assert_eq!(
        active("XRPUSDT").await,
        None,
        "the fifth symbol is not collected yet"
    );

    // ETHUSDT stops trading: the fifth by volume takes its place.
    let spot = sim.spot.as_ref().expect("spot");
    let r = reqwest::Client::new()
        .post(format!(
            "{}/_control/status?symbol=ETHUSDT&status=BREAK",
            spot.rest_url()
        ))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 204);
    wait_until("XRPUSDT synced", || async move {
        count(dbr, "SELECT count(*) FROM sync_events e JOIN instruments i ON i.id = e.instrument_id WHERE i.symbol = 'XRPUSDT' AND e.kind = 'synced'").await >= 1
    })
    .await;
    assert_eq!(active("ETHUSDT").await, Some(false));
    assert_eq!(active("XRPUSDT").await, Some(true));
    wait_until("ETHUSDT's epoch closed", || async move {
        count(dbr, "SELECT count(*) FROM sync_events e JOIN instruments i ON i.id = e.instrument_id WHERE i.symbol = 'ETHUSDT' AND e.kind = 'stopped'").await >= 1
    })
    .await;
    synced(&metrics, 4).await;
    assert_eq!(metrics.symbols.with_label_values(&["spot"]).get(), 4);
    ingest.stop().await;
}

pgembed::storage_tests!(
    a_database_outage_is_spooled_and_replayed_in_order,
    a_crash_during_an_outage_leaves_no_row_outside_an_epoch,
    sigterm_under_load_flushes_everything_and_exits_0,
    rotation_is_make_before_break,
    rate_limits_pause_snapshots_and_are_recorded,
    malformed_messages_are_counted_and_the_book_resyncs,
    listings_and_delistings_are_picked_up_without_a_restart,
);
