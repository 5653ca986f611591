//! Checkpoints by row count: a busy symbol is checkpointed every `checkpoint_rows` depth rows
//! (or two per level of its last checkpoint, if more) even when the time interval is far off,
//! so `book_at` replays at most that many rows, and the books it builds stay exact. Depth
//! windows, and a window moved by a tier change, keep them exact too.

use std::time::Duration;

mod common;

use common::*;

const ROWS: usize = 200;
/// Levels per side of the busy test's books: two rows per level of both sides (320) is more
/// than `ROWS`, so the per-level rule sets the pace.
const LEVELS: usize = 80;

async fn busy_symbols_are_checkpointed_by_rows_and_books_stay_exact(path: StoragePath) {
    let Some((tdb, db)) = migrated_on(path, "ingest_ckpt_rows").await else {
        return;
    };
    let venue = |v| {
        let mut c = venue_cfg(v);
        c.levels = LEVELS;
        Some(c)
    };
    let sim = sim::Sim::start(sim::SimConfig {
        seed: 5,
        spot: venue(binance::Venue::Spot),
        usdm: venue(binance::Venue::Usdm),
    })
    .await
    .expect("sim");
    let ingest = start_ingest(&tdb.url, &sim, |c| {
        c.checkpoint_every = Duration::from_secs(3600);
        c.checkpoint_rows = ROWS;
    });
    let db = &db;
    wait_until("three periodic checkpoints of every instrument", || async move {
        count(db, "SELECT coalesce(min(n), 0) FROM (SELECT i.id, (SELECT count(*) FROM book_checkpoints b WHERE b.instrument_id = i.id AND b.kind = 'periodic') AS n FROM instruments i WHERE i.active) x").await >= 3
    })
    .await;
    ingest.stop().await;

    // Between two consecutive checkpoints of an epoch lie at most ROWS rows (or two per level
    // of the first, if more) plus one event's.
    let widest_event = count(
        db,
        "SELECT max(n) FROM (SELECT count(*) AS n FROM depth_updates GROUP BY instrument_id, update_id) x",
    )
    .await;
    // How far each stretch's rows are past its limit.
    let past = format!(
        "SELECT min(past), max(past), count(*) FROM (
           SELECT (SELECT count(*) FROM depth_updates d
                   WHERE d.instrument_id = c.instrument_id
                     AND d.update_id > c.update_id AND d.update_id <= c.next_id)
                  - greatest({ROWS}, {per_level} * c.levels) AS past
           FROM (SELECT instrument_id, update_id,
                        cardinality(bid_prices) + cardinality(ask_prices) AS levels,
                        lead(update_id) OVER (PARTITION BY instrument_id, epoch ORDER BY update_id) AS next_id
                 FROM book_checkpoints) c
           WHERE c.next_id IS NOT NULL) x",
        per_level = ingest::symbol::ROWS_PER_CHECKPOINT_LEVEL
    );
    let r = db.query_one(&past, &[]).await.expect("stretches");
    let (least, most, stretches): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert!(stretches >= 16, "{stretches} stretches between checkpoints");
    assert!(
        most <= widest_event,
        "a stretch went {most} rows past its limit (widest event {widest_event})"
    );
    // A stretch from a sync's checkpoint already counts the events that bridged the snapshot.
    assert!(
        least >= -widest_event,
        "a checkpoint came {} rows early: spaced by rows, not written back to back",
        -least
    );
    let seen = instants::check_every_instant(db, &sim).await;
    assert!(seen.equal > 1000, "{seen:?}");
    let compared = check_books(db, &sim).await;
    assert!(compared >= 8, "compared {compared} books");
}

pgembed::storage_tests!(busy_symbols_are_checkpointed_by_rows_and_books_stay_exact);

/// Levels per side the windowed test keeps: far fewer than the simulator's 300, so most
/// changes fall outside and levels are pushed out of and pulled into the window all the time.
const WINDOW: i32 = 7;

/// A tier with a depth window keeps exactly its best levels: `instruments` and every checkpoint
/// say so, and `book_at` equals the true book's best `WINDOW` levels at every instant.
async fn a_windowed_tier_keeps_exactly_its_best_levels(path: StoragePath) {
    let Some((sim, tdb, db)) = sim_and_db(path, 6, "ingest_window").await else {
        return;
    };
    let ingest = start_ingest(&tdb.url, &sim, |c| {
        c.checkpoint_rows = ROWS;
        let levels = format!("critical={WINDOW}");
        c.selection.depth_levels =
            ingest::universe::DepthLevels::parse(&[levels]).expect("a window");
    });
    let db = &db;
    wait_until("three periodic checkpoints of every instrument", || async move {
        count(db, "SELECT coalesce(min(n), 0) FROM (SELECT i.id, (SELECT count(*) FROM book_checkpoints b WHERE b.instrument_id = i.id AND b.kind = 'periodic') AS n FROM instruments i WHERE i.active) x").await >= 3
    })
    .await;
    ingest.stop().await;

    let windows = db
        .query(
            "SELECT DISTINCT depth_levels FROM instruments WHERE active",
            &[],
        )
        .await
        .expect("windows");
    let windows: Vec<Option<i32>> = windows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        windows,
        [Some(WINDOW)],
        "every instrument states its window"
    );
    let wider = count(
        db,
        &format!("SELECT count(*) FROM book_checkpoints WHERE levels IS DISTINCT FROM {WINDOW} OR cardinality(bid_prices) > {WINDOW} OR cardinality(ask_prices) > {WINDOW}"),
    )
    .await;
    assert_eq!(wider, 0, "every checkpoint holds the window, and says so");
    let full = count(db, &format!("SELECT count(*) FROM book_checkpoints WHERE cardinality(bid_prices) = {WINDOW} AND cardinality(ask_prices) = {WINDOW}")).await;
    assert!(full > 0, "the windows are full");
    let seen = instants::check_every_instant(db, &sim).await;
    assert!(seen.equal > 500, "{seen:?}");
    let compared = check_books(db, &sim).await;
    assert!(compared >= 8, "compared {compared} books");
    let symbol = sim.spot.as_ref().expect("spot").symbols()[0].clone();
    let rebuilt = exported_depth_rebuilds_the_window(db, &symbol).await;
    assert!(rebuilt > 50, "{rebuilt} books rebuilt from the file");
}

pgembed::storage_tests!(a_windowed_tier_keeps_exactly_its_best_levels);

/// A spot symbol's exported L2 stream says which window its books were kept in, and rebuilds
/// `book_at`'s windowed book at its row times; returns how many books were compared.
async fn exported_depth_rebuilds_the_window(db: &tokio_postgres::Client, symbol: &str) -> usize {
    use common::tardis::{book_at_us, parse_l2, rebuild_at};
    let inst = export::instrument(db, binance::Venue::Spot, symbol)
        .await
        .expect("instrument");
    let r = db
        .query_one(
            "SELECT min(time) + interval '1 millisecond', max(time) FROM depth_updates WHERE instrument_id = $1",
            &[&inst.id],
        )
        .await
        .expect("range");
    let range = export::Range {
        from: r.get(0),
        to: r.get(1),
    };
    let mut csv = Vec::new();
    let l2 = export::DataType::IncrementalBookL2;
    let summary = export::write_csv(db, &inst, l2, range, &mut csv)
        .await
        .expect("export");
    assert_eq!(
        summary.depth_levels,
        Some(WINDOW),
        "the file says its window"
    );
    let rows = parse_l2(std::str::from_utf8(&csv).expect("utf-8"));
    let mut instants: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
    instants.dedup();
    let books = rebuild_at(&rows, &instants);
    for (t, file_book) in instants.iter().zip(&books) {
        let db_book = book_at_us(db, inst.id, *t).await.expect("inside the epoch");
        assert_eq!(file_book, &db_book, "{symbol} at {t} us");
    }
    books.len()
}

/// Ranks the simulated spot venue has: enough that the last is outside the critical tier.
const RANKED: usize = 22;

/// Sets a simulated symbol's 24 h volume, and so its rank and tier.
async fn set_volume(spot: &sim::VenueHandle, symbol: &str, volume: i64) {
    let url = format!(
        "{}/_control/volume?symbol={symbol}&quote_volume={volume}",
        spot.rest_url()
    );
    let r = reqwest::Client::new().post(url).send().await.expect("post");
    assert_eq!(r.status(), 204);
}

/// A symbol's checkpoints in order: (epoch, window).
async fn checkpoint_windows(db: &tokio_postgres::Client, symbol: &str) -> Vec<(i64, Option<i32>)> {
    db.query(
        "SELECT c.epoch, c.levels FROM book_checkpoints c JOIN instruments i ON i.id = c.instrument_id
         WHERE i.symbol = $1 ORDER BY c.time, c.update_id",
        &[&symbol],
    )
    .await
    .expect("checkpoints")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// A symbol whose tier changes takes the new window mid-epoch, with a checkpoint of its own:
/// the busiest symbol falls to the high tier (a window of `WINDOW`), the quietest rises to the
/// critical tier (every level), and `book_at` equals the truth at every instant on both sides
/// of the switch.
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn a_tier_change_moves_the_window_mid_epoch(path: StoragePath) {
    let Some((tdb, db)) = migrated_on(path, "ingest_tier_change").await else {
        return;
    };
    let mut spot = venue_cfg(binance::Venue::Spot);
    (spot.symbols, spot.levels) = (RANKED, 60);
    spot.depth_interval = Duration::from_millis(50);
    let sim = sim::Sim::start(sim::SimConfig {
        seed: 7,
        spot: Some(spot),
        usdm: None,
    })
    .await
    .expect("sim");
    let names = sim.spot.as_ref().expect("spot").symbols();
    let (falls, rises) = (names[0].clone(), names[RANKED - 1].clone());
    let ingest = start_ingest(&tdb.url, &sim, |c| {
        c.selection.symbols = Some(vec![falls.clone(), rises.clone()]);
        c.selection.depth_levels =
            ingest::universe::DepthLevels::parse(&[format!("high={WINDOW}")]).expect("a window");
        c.universe_refresh = Duration::from_millis(300);
    });
    let db = &db;
    let checkpoints = |symbol: String, levels: String| async move {
        count(db, &format!("SELECT count(*) FROM book_checkpoints c JOIN instruments i ON i.id = c.instrument_id WHERE i.symbol = '{symbol}' AND c.levels {levels}")).await
    };
    wait_until("checkpoints in each tier's window", || async {
        checkpoints(falls.clone(), "IS NULL".into()).await >= 2
            && checkpoints(rises.clone(), format!("= {WINDOW}")).await >= 2
    })
    .await;
    let spot_handle = sim.spot.as_ref().expect("spot");
    set_volume(spot_handle, &falls, 1).await;
    set_volume(spot_handle, &rises, 10_000_000_000).await;
    wait_until("checkpoints in the new windows", || async {
        checkpoints(falls.clone(), format!("= {WINDOW}")).await >= 2
            && checkpoints(rises.clone(), "IS NULL".into()).await >= 2
    })
    .await;
    ingest.stop().await;

    let stated = db
        .query(
            "SELECT symbol, depth_levels FROM instruments WHERE active ORDER BY volume_rank",
            &[],
        )
        .await
        .expect("instruments");
    let stated: Vec<(String, Option<i32>)> = stated.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        stated,
        [(rises.clone(), None), (falls.clone(), Some(WINDOW))]
    );
    for (symbol, from, to) in [(&falls, None, Some(WINDOW)), (&rises, Some(WINDOW), None)] {
        let cps = checkpoint_windows(db, symbol).await;
        let switch = cps
            .windows(2)
            .find(|w| w[0].1 == from && w[1].1 == to)
            .unwrap_or_else(|| panic!("{symbol}: no switch from {from:?} to {to:?} in {cps:?}"));
        assert_eq!(
            switch[0].0, switch[1].0,
            "{symbol}: the window changed inside its epoch"
        );
        let back = cps.iter().skip_while(|c| c.1 != to).any(|c| c.1 == from);
        assert!(!back, "{symbol}: once switched, the window stays: {cps:?}");
    }
    let seen = instants::check_every_instant(db, &sim).await;
    assert!(seen.equal > 200, "{seen:?}");
}

pgembed::storage_tests!(a_tier_change_moves_the_window_mid_epoch);
