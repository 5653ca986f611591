//! Real Binance recordings (`../shared/real-binance/`, see its README) replayed through
//! `sim` → `ingest` → the database, on every storage path. The recording is read here with
//! serde_json, field by field, never through `binance::wire`, so a field misread by the shared
//! types cannot agree with itself. Checked: every depth event, bookTicker and aggTrade stored
//! exactly once with the recorded values; no gap where the recording has none; and the stored
//! book's top, at every depth event that a recorded bookTicker names by its `u`, equals that
//! bookTicker (Binance's own answer).
//!
//! Where the folder is absent, each test says so and passes.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use binance::Venue;
use common::*;
use serde_json::Value;
use sim::{Sim, SimConfig};
use tokio_postgres::Client;

/// Replay pace: flat out (0). The simulator then sends as fast as ingest reads and waits for it,
/// so a slow machine or a debug build is never cut for falling behind (at a fixed 50× pace a
/// slow machine's debug build was, and the recording ended before it could resync).
const SPEED: f64 = 0.0;
/// The most a recording may take to be stored, however steadily it progresses.
const STORE_CAP: Duration = Duration::from_secs(600);

fn corpus(name: &str) -> Option<PathBuf> {
    let root = std::env::var_os("DEPTHBOOK_REAL_BINANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/real-binance")
        });
    let dir = root.join(name);
    if dir.join("messages.jsonl").is_file() {
        Some(dir)
    } else {
        pgembed::say_skipped(
            name,
            &format!("no real Binance recording at {}", dir.display()),
        );
        None
    }
}

/// Decimal text without trailing zeros, as a key that ignores the scale (`0.0100` = `0.01`).
fn norm(s: &str) -> String {
    if !s.contains('.') {
        return s.to_owned();
    }
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .map(norm)
        .unwrap_or_else(|| panic!("field {key} in {v}"))
}

fn int(v: &Value, key: &str) -> i64 {
    v.get(key)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("field {key} in {v}"))
}

/// One level change: side, price, quantity (normalized text).
type Level = (String, String, String);
/// E, U, u and the levels of a depth event.
type Event = (i64, i64, i64, Vec<Level>);
/// u, bid, bid qty, ask, ask qty.
type Ticker = (i64, String, String, String, String);
/// a, price, qty, f, l, m, T.
type Trade = (i64, String, String, i64, i64, bool, i64);

#[derive(Debug, Default)]
struct Recorded {
    /// Per symbol, in recorded order.
    depth: BTreeMap<String, Vec<Event>>,
    tickers: BTreeMap<String, Vec<Ticker>>,
    trades: BTreeMap<String, Vec<Trade>>,
}

fn levels(v: &Value, key: &str, side: &str) -> Vec<Level> {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .iter()
        .map(|l| {
            let p = l[0].as_str().expect("price text");
            let q = l[1].as_str().expect("qty text");
            (side.to_owned(), norm(p), norm(q))
        })
        .collect()
}

fn read(dir: &std::path::Path) -> Recorded {
    let mut r = Recorded::default();
    let body = std::fs::read_to_string(dir.join("messages.jsonl")).expect("messages.jsonl");
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        let data = v.get("data").unwrap_or(&v);
        let symbol = data["s"].as_str().expect("s").to_owned();
        match data.get("e").and_then(Value::as_str) {
            Some("depthUpdate") => {
                let mut lv = levels(data, "b", "bid");
                lv.extend(levels(data, "a", "ask"));
                r.depth.entry(symbol).or_default().push((
                    int(data, "E"),
                    int(data, "U"),
                    int(data, "u"),
                    lv,
                ));
            }
            Some("aggTrade") => r.trades.entry(symbol).or_default().push((
                int(data, "a"),
                text(data, "p"),
                text(data, "q"),
                int(data, "f"),
                int(data, "l"),
                data["m"].as_bool().expect("m"),
                int(data, "T"),
            )),
            Some("bookTicker") | None => r.tickers.entry(symbol).or_default().push((
                int(data, "u"),
                text(data, "b"),
                text(data, "B"),
                text(data, "a"),
                text(data, "A"),
            )),
            Some(other) => panic!("unexpected event type {other}"),
        }
    }
    r
}

async fn instrument_ids(db: &Client, venue: Venue) -> HashMap<String, i32> {
    db.query(
        "SELECT symbol, id FROM instruments WHERE venue = $1",
        &[&venue.as_str()],
    )
    .await
    .expect("instruments")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Replays `name` and waits until every symbol's last recorded depth event and every ticker
/// is stored.
async fn replay(
    path: StoragePath,
    name: &str,
) -> Option<(Recorded, Venue, pgembed::TestDatabase, Client)> {
    let dir = corpus(name)?;
    let venue = if name.starts_with("usdm") {
        Venue::Usdm
    } else {
        Venue::Spot
    };
    let rec = read(&dir);
    let (tdb, db) = migrated_on(path, &format!("real_{}", name.replace('-', "_"))).await?;
    let mut cfg = sim::VenueConfig::for_venue(venue);
    cfg.replay = Some(sim::replay::ReplayConfig { dir, speed: SPEED });
    let sim = Sim::start(SimConfig {
        seed: 1,
        spot: (venue == Venue::Spot).then(|| cfg.clone()),
        usdm: (venue == Venue::Usdm).then_some(cfg),
    })
    .await
    .expect("sim replays the recording");
    let symbols: Vec<String> = rec.depth.keys().cloned().collect();
    let ingest = start_ingest(&tdb.url, &sim, |c| {
        c.venues = vec![venue];
        c.selection.symbols = Some(symbols.clone());
        c.selection.quote = None;
        c.checkpoint_every = Duration::from_secs(2);
    });
    let tickers: usize = rec.tickers.values().map(Vec::len).sum();
    let last_ids: Vec<i64> = rec
        .depth
        .values()
        .filter_map(|e| e.last().map(|e| e.2))
        .collect();
    let dbr = &db;
    let last_ids = &last_ids;
    // Progress, not a fixed minute: a debug build on a slow machine stores the larger
    // recordings more slowly than they are replayed.
    wait_while_progressing("the whole recording stored", STORE_CAP, || async move {
        let stored: Vec<i64> = dbr
            .query(
                "SELECT coalesce(max(update_id), 0) FROM depth_updates GROUP BY instrument_id",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default();
        let tickers_stored = count(dbr, "SELECT count(*) FROM book_ticker").await as usize;
        let progress = stored.iter().map(|&id| id as u64).sum::<u64>() + tickers_stored as u64;
        let mut stored = stored;
        stored.sort_unstable();
        let mut want = last_ids.clone();
        want.sort_unstable();
        (stored == want && tickers_stored >= tickers, progress)
    })
    .await;
    ingest.stop().await;
    Some((rec, venue, tdb, db))
}

/// Depth rows: from each symbol's first stored event on, every recorded event is stored with
/// its time and exactly its levels; nothing else is.
async fn check_depth(db: &Client, rec: &Recorded, ids: &HashMap<String, i32>) -> usize {
    let mut compared = 0;
    for (symbol, events) in &rec.depth {
        let iid = ids[symbol];
        let rows = db
            .query(
                "SELECT (extract(epoch FROM time) * 1000)::int8, first_update_id, update_id, side, price::text, qty::text
                 FROM depth_updates WHERE instrument_id = $1",
                &[&iid],
            )
            .await
            .expect("depth rows");
        let mut stored: BTreeMap<i64, (i64, i64, Vec<Level>)> = BTreeMap::new();
        for r in &rows {
            let e = stored
                .entry(r.get(2))
                .or_insert_with(|| (r.get(0), r.get(1), Vec::new()));
            e.2.push((r.get(3), norm(r.get(4)), norm(r.get(5))));
        }
        let first = *stored.keys().next().expect("events stored");
        let mut expected: BTreeMap<i64, (i64, i64, Vec<Level>)> = BTreeMap::new();
        for (e, u0, u, lv) in events.iter().filter(|e| e.2 >= first) {
            let mut lv = lv.clone();
            lv.sort();
            expected.insert(*u, (*e, *u0, lv));
        }
        for v in stored.values_mut() {
            v.2.sort();
        }
        assert_eq!(stored.len(), expected.len(), "{symbol}: events stored");
        for (u, want) in &expected {
            assert_eq!(stored.get(u), Some(want), "{symbol}: event u={u}");
        }
        compared += expected.len();
    }
    compared
}

async fn check_tickers_and_trades(db: &Client, rec: &Recorded, ids: &HashMap<String, i32>) {
    for (symbol, tickers) in &rec.tickers {
        let rows = db
            .query(
                "SELECT update_id, bid_price::text, bid_qty::text, ask_price::text, ask_qty::text
                 FROM book_ticker WHERE instrument_id = $1 ORDER BY update_id",
                &[&ids[symbol]],
            )
            .await
            .expect("tickers");
        let mut stored: Vec<Ticker> = rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    norm(r.get(1)),
                    norm(r.get(2)),
                    norm(r.get(3)),
                    norm(r.get(4)),
                )
            })
            .collect();
        let mut want = tickers.clone();
        want.sort();
        want.dedup();
        stored.sort();
        assert_eq!(stored, want, "{symbol}: bookTicker rows");
    }
    for (symbol, trades) in &rec.trades {
        let rows = db
            .query(
                "SELECT agg_trade_id, price::text, qty::text, first_trade_id, last_trade_id, buyer_is_maker,
                        (extract(epoch FROM time) * 1000)::int8
                 FROM trades WHERE instrument_id = $1 ORDER BY agg_trade_id",
                &[&ids[symbol]],
            )
            .await
            .expect("trades");
        let stored: Vec<Trade> = rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    norm(r.get(1)),
                    norm(r.get(2)),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                )
            })
            .collect();
        let mut want = trades.clone();
        want.sort_by_key(|t| t.0);
        assert_eq!(stored, want, "{symbol}: aggTrade rows");
    }
}

/// At each depth event a recorded bookTicker names (and that is the last of its millisecond,
/// so `book_at` of that instant is the book after it), inside an epoch: the stored book's best
/// bid and ask are the ticker's.
async fn check_tops(db: &Client, rec: &Recorded, ids: &HashMap<String, i32>) -> (usize, usize) {
    let (mut checked, mut skipped) = (0, 0);
    for (symbol, events) in &rec.depth {
        let iid = ids[symbol];
        let synced_ms: i64 = db
            .query_one(
                "SELECT (extract(epoch FROM min(time)) * 1000)::int8 FROM sync_events WHERE instrument_id = $1 AND kind = 'synced'",
                &[&iid],
            )
            .await
            .expect("synced")
            .get(0);
        let last_of_ms: HashMap<i64, i64> = events.iter().map(|e| (e.0, e.2)).collect();
        let time_of: HashMap<i64, i64> = events.iter().map(|e| (e.2, e.0)).collect();
        for (u, bid, bid_q, ask, ask_q) in rec.tickers.get(symbol).into_iter().flatten() {
            let Some(&e) = time_of.get(u) else { continue };
            if e < synced_ms || last_of_ms.get(&e) != Some(u) {
                skipped += 1;
                continue;
            }
            let rows = db
                .query(
                    "SELECT side, price::text, qty::text FROM book_at($1, to_timestamp($2::float8 / 1000), 1)",
                    &[&iid, &(e as f64)],
                )
                .await
                .unwrap_or_else(|err| panic!("{symbol}: book_at at E={e} (u={u}): {err}"));
            let top: Vec<(String, String, String)> = rows
                .iter()
                .map(|r| (r.get(0), norm(r.get(1)), norm(r.get(2))))
                .collect();
            let want = vec![
                ("bid".to_owned(), bid.clone(), bid_q.clone()),
                ("ask".to_owned(), ask.clone(), ask_q.clone()),
            ];
            assert_eq!(
                top, want,
                "{symbol}: book top at u={u} (E={e}) against the bookTicker"
            );
            checked += 1;
        }
    }
    (checked, skipped)
}

/// The same bookTicker instants, from an exported `incremental_book_L2` file instead of the
/// database: a Tardis reader's book has Binance's best bid and ask.
async fn check_exported_tops(
    db: &Client,
    rec: &Recorded,
    ids: &HashMap<String, i32>,
    venue: Venue,
) -> usize {
    let mut checked = 0;
    for (symbol, events) in &rec.depth {
        let (first, last) = (
            events.iter().map(|e| e.0).min(),
            events.iter().map(|e| e.0).max(),
        );
        let (Some(first), Some(last)) = (first, last) else {
            continue;
        };
        let ms = |t: i64| chrono::DateTime::from_timestamp_millis(t).expect("time");
        let range = export::Range::new(ms(first), ms(last + 1000)).expect("range");
        let inst = export::Instrument {
            id: ids[symbol],
            venue,
            symbol: symbol.clone(),
        };
        let mut csv = Vec::new();
        let summary = export::write_csv(
            db,
            &inst,
            export::DataType::IncrementalBookL2,
            range,
            &mut csv,
        )
        .await
        .expect("export");
        assert!(
            summary.gaps.iter().all(|g| g.kind != "gap"),
            "{symbol}: unknown only before the first sync and after the replay stopped: {:?}",
            summary.gaps
        );
        let rows = tardis::parse_l2(std::str::from_utf8(&csv).expect("utf-8"));
        let (_, parquet) = export::write_file(
            db,
            &inst,
            export::DataType::IncrementalBookL2,
            range,
            export::Format::Parquet,
            Vec::new(),
        )
        .await
        .expect("parquet export");
        assert!(
            tardis::parse_l2_parquet(parquet) == rows,
            "{symbol}: the Parquet file holds the CSV's rows, value for value"
        );
        let first_row = rows.first().map(|r| r.timestamp).unwrap_or(i64::MAX);
        let last_of_ms: HashMap<i64, i64> = events.iter().map(|e| (e.0, e.2)).collect();
        let time_of: HashMap<i64, i64> = events.iter().map(|e| (e.2, e.0)).collect();
        let mut wanted: Vec<(i64, [i64; 4])> = Vec::new();
        for (u, bid, bid_q, ask, ask_q) in rec.tickers.get(symbol).into_iter().flatten() {
            let Some(&e) = time_of.get(u) else { continue };
            if e * 1000 < first_row || last_of_ms.get(&e) != Some(u) {
                continue;
            }
            let v = |s: &str| binance::units::parse_e8(s).expect("decimal");
            wanted.push((e * 1000, [v(bid), v(bid_q), v(ask), v(ask_q)]));
        }
        wanted.sort_by_key(|w| w.0);
        let instants: Vec<i64> = wanted.iter().map(|w| w.0).collect();
        for ((t, want), (bids, asks)) in wanted.iter().zip(tardis::rebuild_at(&rows, &instants)) {
            let got = [bids[0].0, bids[0].1, asks[0].0, asks[0].1];
            assert_eq!(
                &got, want,
                "{symbol}: exported book top at {t} us against the bookTicker"
            );
            checked += 1;
        }
    }
    checked
}

async fn replayed_exactly(path: StoragePath, name: &str) {
    let Some((rec, venue, _tdb, db)) = replay(path, name).await else {
        return;
    };
    let gaps = count(&db, "SELECT count(*) FROM sync_events WHERE kind = 'gap'").await;
    assert_eq!(gaps, 0, "the recording has no gap, so none is recorded");
    let ids = instrument_ids(&db, venue).await;
    let events = check_depth(&db, &rec, &ids).await;
    check_tickers_and_trades(&db, &rec, &ids).await;
    check_no_duplicates(&db).await;
    let (tops, skipped) = check_tops(&db, &rec, &ids).await;
    assert!(tops > 0, "some recorded bookTicker matched a stored event");
    let exported = check_exported_tops(&db, &rec, &ids, venue).await;
    assert_eq!(
        exported, tops,
        "the exported file agrees at every instant the database did"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("{name} on {path}: {events} depth events equal, {tops} book tops equal their bookTicker, in the database and in the exported files, CSV and Parquet ({skipped} tickers before the sync or inside a millisecond)\n").as_bytes(),
    );
}

async fn spot_cryptofeed_2021_04_05(path: StoragePath) {
    replayed_exactly(path, "spot-cryptofeed-2021-04-05").await
}
async fn spot_hftbacktest_2024_08_08(path: StoragePath) {
    replayed_exactly(path, "spot-hftbacktest-2024-08-08").await
}
async fn usdm_cryptofeed_2021_04_05(path: StoragePath) {
    replayed_exactly(path, "usdm-cryptofeed-2021-04-05").await
}
async fn usdm_hftbacktest_2024_07_18(path: StoragePath) {
    replayed_exactly(path, "usdm-hftbacktest-2024-07-18").await
}

pgembed::storage_tests!(
    spot_cryptofeed_2021_04_05,
    spot_hftbacktest_2024_08_08,
    usdm_cryptofeed_2021_04_05,
    usdm_hftbacktest_2024_07_18,
);
