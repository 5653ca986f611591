//! ingest against the simulator and a private PostgreSQL: the books reconstructed from the
//! database equal the simulator's true books, every injected gap is recorded, nothing is
//! duplicated, and shutdown flushes everything.

use std::sync::Arc;
use std::time::Duration;

use binance::units::parse_e8;
use binance::Venue;
use ingest::metrics::Metrics;
use ingest::run::RunConfig;
use ingest::universe::Selection;
use sim::{Fault, Sim, SimConfig, VenueConfig};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);

fn venue_cfg(v: Venue) -> VenueConfig {
    let mut c = VenueConfig::for_venue(v);
    c.symbols = 4;
    c.levels = 300;
    c.depth_interval = Duration::from_millis(20);
    c.changes_per_event = 5.0;
    c.truth_checkpoint_every = 100;
    c.truth_checkpoints = 60;
    c
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
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

async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

fn run_config(db_url: &str, sim: &Sim, spool: &std::path::Path) -> RunConfig {
    let (s, u) = (
        sim.spot.as_ref().expect("spot"),
        sim.usdm.as_ref().expect("usdm"),
    );
    RunConfig {
        database_url: db_url.to_owned(),
        venues: vec![Venue::Spot, Venue::Usdm],
        spot_rest: s.rest_url(),
        spot_ws: s.ws_url(),
        usdm_rest: u.rest_url(),
        usdm_ws: u.ws_url(),
        selection: Selection {
            symbols: None,
            top: 4,
            quote: Some("USDT".into()),
        },
        streams_per_connection: 6,
        connection_lifetime: Duration::from_secs(3600),
        stale_after: Duration::from_secs(10),
        spot_weight_limit: 6000,
        usdm_weight_limit: 2400,
        checkpoint_every: Duration::from_secs(1),
        top_every: Duration::from_millis(200),
        top_levels: 20,
        batch_rows: 2000,
        batch_delay: Duration::from_millis(50),
        queue_rows: 100_000,
        spool_dir: spool.to_owned(),
        metrics_bind: "127.0.0.1:0".parse().expect("addr"),
        shutdown_grace: Duration::from_secs(30),
    }
}

type Book = (Vec<(i64, i64)>, Vec<(i64, i64)>);

async fn db_book(db: &Client, iid: i32, time_ms: i64) -> (Book, i64) {
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

fn truth_book(t: &binance::wire::DepthSnapshot) -> Book {
    let conv = |v: &Vec<binance::wire::Level>| {
        v.iter()
            .map(|[p, q]| (parse_e8(p).expect("p"), parse_e8(q).expect("q")))
            .collect()
    };
    (conv(&t.bids), conv(&t.asks))
}

#[tokio::test]
async fn collects_exact_books_through_faults_and_flushes_on_shutdown() {
    let sim = Sim::start(SimConfig {
        seed: 11,
        spot: Some(venue_cfg(Venue::Spot)),
        usdm: Some(venue_cfg(Venue::Usdm)),
    })
    .await
    .expect("sim");
    let tdb = pgembed::test_database("ingest_e2e")
        .await
        .expect("database");
    let (mut db, conn) = tokio_postgres::connect(&tdb.url, NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    schema::apply(&mut db, schema::FlavorChoice::Auto)
        .await
        .expect("migrate");
    db.execute("UPDATE storage_policies SET drop_after = NULL", &[])
        .await
        .expect("policies");

    let spool = tempfile::tempdir().expect("spool");
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(ingest::run::run(
        run_config(&tdb.url, &sim, spool.path()),
        metrics.clone(),
        shutdown.clone(),
    ));

    let m = metrics.clone();
    wait_until("all 8 books synced", || {
        let m = m.clone();
        async move { m.synced_books() == 8 }
    })
    .await;

    let spot = sim.spot.as_ref().expect("spot");
    let usdm = sim.usdm.as_ref().expect("usdm");
    // A gap on spot, duplicates and a reorder on USD-M, a stale snapshot on the next resync,
    // and a dropped connection.
    spot.inject(Fault::StaleSnapshots {
        count: 1,
        behind_events: 20,
    });
    spot.inject(Fault::DropDepth {
        symbol: Some("BTCUSDT".into()),
        count: 2,
    });
    usdm.inject(Fault::DuplicateDepth {
        symbol: Some("ETHUSDT".into()),
        count: 3,
    });
    usdm.inject(Fault::ReorderDepth {
        symbol: Some("BNBUSDT".into()),
        count: 1,
    });
    let dbr = &db;
    wait_until("the spot gap recorded", || async move {
        count(dbr, "SELECT count(*) FROM sync_events e JOIN instruments i ON i.id = e.instrument_id WHERE i.venue = 'spot' AND i.symbol = 'BTCUSDT' AND e.kind = 'gap'").await >= 1
    })
    .await;
    wait_until("the reorder recorded as a gap", || async move {
        count(dbr, "SELECT count(*) FROM sync_events e JOIN instruments i ON i.id = e.instrument_id WHERE i.venue = 'usdm' AND i.symbol = 'BNBUSDT' AND e.kind = 'gap'").await >= 1
    })
    .await;
    assert_eq!(usdm.inject(Fault::Disconnect { count: Some(1) }), 1);
    let m = metrics.clone();
    wait_until("books synced again", || {
        let m = m.clone();
        async move { m.synced_books() == 8 }
    })
    .await;
    // Let data flow after the resyncs.
    let before: i64 = count(&db, "SELECT count(*) FROM depth_updates").await;
    wait_until("more depth rows", || async move {
        count(dbr, "SELECT count(*) FROM depth_updates").await > before + 500
    })
    .await;

    wait_until("periodic checkpoints of every book", || async move {
        count(
            dbr,
            "SELECT count(DISTINCT instrument_id) FROM book_checkpoints WHERE kind = 'periodic'",
        )
        .await
            == 8
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, run)
        .await
        .expect("shutdown in time")
        .expect("join")
        .expect("run ends cleanly");

    // Every synced epoch was closed with 'stopped' on shutdown.
    let open = count(&db, "SELECT count(*) FROM (SELECT DISTINCT ON (instrument_id) kind FROM sync_events WHERE kind IN ('synced','gap','stopped') ORDER BY instrument_id, time DESC, id DESC) s WHERE kind = 'synced'").await;
    if open != 0 {
        for r in db.query("SELECT instrument_id, epoch, kind, time::text, first_update_id, last_update_id, detail FROM sync_events ORDER BY instrument_id, time, id", &[]).await.expect("dump") {
            eprintln!("{:?} {:?} {:?} {:?} {:?} {:?} {:?}", r.get::<_, i32>(0), r.get::<_, Option<i64>>(1), r.get::<_, String>(2), r.get::<_, String>(3), r.get::<_, Option<i64>>(4), r.get::<_, Option<i64>>(5), r.get::<_, Option<String>>(6));
        }
    }
    assert_eq!(open, 0, "no epoch left open");
    // Nothing written twice.
    let dups = count(&db, "SELECT count(*) FROM (SELECT instrument_id, update_id, side, price FROM depth_updates GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d").await;
    assert_eq!(dups, 0, "no duplicate depth rows");
    let dup_trades = count(&db, "SELECT count(*) FROM (SELECT instrument_id, agg_trade_id FROM trades GROUP BY 1, 2 HAVING count(*) > 1) d").await;
    assert_eq!(dup_trades, 0, "no duplicate trades");
    assert!(count(&db, "SELECT count(*) FROM trades").await > 0);
    assert!(count(&db, "SELECT count(*) FROM book_ticker").await > 0);
    assert!(count(&db, "SELECT count(*) FROM mark_prices").await > 0);
    assert!(count(&db, "SELECT count(*) FROM book_top WHERE mid IS NOT NULL").await > 0);
    assert!(
        count(
            &db,
            "SELECT count(*) FROM book_checkpoints WHERE kind = 'periodic'"
        )
        .await
            > 0
    );

    // Books from the database equal the simulator's truth, at several events per instrument.
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
        assert!(events.len() > 10, "{venue} {symbol}: events stored");
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
            let (book, book_id) = db_book(&db, iid, t).await;
            let truth = handle
                .truth(&symbol, Some(uid as u64), usize::MAX)
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
    assert!(compared >= 16, "compared {compared} books");

    // Spot ids are contiguous inside an epoch: every hole in the stored ids is covered by a
    // recorded gap (or precedes a new snapshot).
    for inst in instruments
        .iter()
        .filter(|i| i.get::<_, String>(1) == "spot")
    {
        let iid: i32 = inst.get(0);
        let evs = db.query("SELECT DISTINCT first_update_id, update_id FROM depth_updates WHERE instrument_id = $1 ORDER BY 2", &[&iid]).await.expect("events");
        for w in evs.windows(2) {
            let (prev_last, next_first): (i64, i64) = (w[0].get(1), w[1].get(0));
            if next_first == prev_last + 1 {
                continue;
            }
            let explained = count(
                &db,
                &format!(
                    "SELECT count(*) FROM book_checkpoints WHERE instrument_id = {iid} AND kind = 'snapshot' AND update_id >= {prev_last} AND update_id < {next_first}"
                ),
            )
            .await;
            assert!(
                explained > 0,
                "instrument {iid}: ids {}..{} missing without a resync",
                prev_last + 1,
                next_first - 1
            );
        }
    }
    let _ = Arc::clone(&metrics);
}
