//! ingest against the simulator and a private PostgreSQL: the books reconstructed from the
//! database equal the simulator's true books, every injected gap is recorded, nothing is
//! duplicated, and shutdown flushes everything.

use schema::live::{
    BookNote, TickerNote, TradesNote, BOOK_CHANNEL, TICKER_CHANNEL, TRADES_CHANNEL,
};
use sim::Fault;
use tokio_postgres::NoTls;

mod common;

use common::*;

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn collects_exact_books_through_faults_and_flushes_on_shutdown(path: StoragePath) {
    let Some((sim, tdb, db)) = sim_and_db(path, 11, "ingest_e2e").await else {
        return;
    };
    db.execute("UPDATE storage_policies SET drop_after = NULL", &[])
        .await
        .expect("policies");

    // A listener, as the API will be: live book samples, best bid/ask and trades.
    let (listener, mut lconn) = tokio_postgres::connect(&tdb.url, NoTls)
        .await
        .expect("connect");
    let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| lconn.poll_message(cx));
        while let Some(Ok(m)) = futures_util::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = ntx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener
        .batch_execute(&format!(
            "LISTEN {BOOK_CHANNEL}; LISTEN {TICKER_CHANNEL}; LISTEN {TRADES_CHANNEL}"
        ))
        .await
        .expect("listen");

    let ingest = start_ingest(&tdb.url, &sim, |_| {});
    let metrics = ingest.metrics.clone();

    let m = metrics.clone();
    wait_until("all 8 books synced", || {
        let m = m.clone();
        async move { m.synced_books() == 8 }
    })
    .await;

    let mut channels = std::collections::HashSet::new();
    while channels.len() < 3 {
        let (channel, payload) = tokio::time::timeout(DEADLINE, nrx.recv())
            .await
            .expect("notifications")
            .expect("open");
        let v: sonic_rs::Value = sonic_rs::from_str(&payload).expect("JSON payload");
        assert!(
            sonic_rs::JsonValueTrait::get(&v, "instrument_id").is_some(),
            "{payload}"
        );
        // Each payload is the contract's type for its channel (what the API parses).
        let parsed = match channel.as_str() {
            BOOK_CHANNEL => sonic_rs::from_str::<BookNote>(&payload).map(|_| ()),
            TICKER_CHANNEL => sonic_rs::from_str::<TickerNote>(&payload).map(|_| ()),
            TRADES_CHANNEL => sonic_rs::from_str::<TradesNote>(&payload).map(|_| ()),
            other => panic!("unexpected channel {other}"),
        };
        assert!(parsed.is_ok(), "{channel}: {payload}");
        channels.insert(channel);
    }

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
    events_since_sync(&db, 30).await;

    wait_until("periodic checkpoints of every book", || async move {
        count(
            dbr,
            "SELECT count(DISTINCT instrument_id) FROM book_checkpoints WHERE kind = 'periodic'",
        )
        .await
            == 8
    })
    .await;

    // /health says ready; /metrics carries the collector's numbers.
    let base = format!("http://{}", metrics.http_addr.get().expect("bound"));
    let m = metrics.clone();
    wait_until("database probe", || {
        let m = m.clone();
        async move { m.db_ok.load(std::sync::atomic::Ordering::Relaxed) }
    })
    .await;
    let health = reqwest::get(format!("{base}/health"))
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    assert!(health
        .text()
        .await
        .expect("body")
        .contains("\"ready\":true"));
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for name in [
        "depthbook_ingest_messages_total",
        "depthbook_ingest_gaps_total",
        "depthbook_ingest_rows_written_total",
        "depthbook_ingest_event_to_commit_seconds_bucket",
        "depthbook_ingest_copy_seconds_bucket",
        "depthbook_ingest_rest_weight_used",
    ] {
        assert!(text.contains(name), "{name} exported");
    }

    ingest.stop().await;

    // Every synced epoch was closed with 'stopped' on shutdown.
    let open = count(&db, "SELECT count(*) FROM (SELECT DISTINCT ON (instrument_id) kind FROM sync_events WHERE kind IN ('synced','gap','stopped') ORDER BY instrument_id, time DESC, id DESC) s WHERE kind = 'synced'").await;
    if open != 0 {
        for r in db.query("SELECT instrument_id, epoch, kind, time::text, first_update_id, last_update_id, detail FROM sync_events ORDER BY instrument_id, time, id", &[]).await.expect("dump") {
            eprintln!("{:?} {:?} {:?} {:?} {:?} {:?} {:?}", r.get::<_, i32>(0), r.get::<_, Option<i64>>(1), r.get::<_, String>(2), r.get::<_, String>(3), r.get::<_, Option<i64>>(4), r.get::<_, Option<i64>>(5), r.get::<_, Option<String>>(6));
        }
    }
    assert_eq!(open, 0, "no epoch left open");
    check_no_duplicates(&db).await;
    check_aggregates_complete(&db).await;
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

    let compared = check_books(&db, &sim).await;
    assert!(compared >= 16, "compared {compared} books");
    check_continuity(&db).await;
    // Through stale snapshots, dropped, duplicated and reordered events and a disconnect.
    let seen = instants::check_every_instant(&db, &sim).await;
    assert!(seen.equal > 1000 && seen.refused > 0, "{seen:?}");
}

pgembed::storage_tests!(collects_exact_books_through_faults_and_flushes_on_shutdown);
