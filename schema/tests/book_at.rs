//! book_at returns exactly the right book from hand-built checkpoints and updates,
//! and refuses what it cannot know.

mod common;

use std::collections::BTreeMap;

use common::{instrument, migrated_on};
use pgembed::StoragePath;
use tokio_postgres::Client;

type Book = Vec<(String, i32, String, String)>;

async fn book(
    client: &Client,
    iid: i32,
    at: &str,
    depth: i32,
) -> Result<Book, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT side, level, price::text, qty::text FROM book_at($1, $2::text::timestamptz, $3)",
            &[&iid, &at, &depth],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

fn expect(levels: &[(&str, i32, &str, &str)]) -> Book {
    levels
        .iter()
        .map(|(s, l, p, q)| (s.to_string(), *l, p.to_string(), q.to_string()))
        .collect()
}

fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_default()
}

const T0: &str = "2026-11-24 10:00:00+00";

async fn seed(client: &Client, iid: i32) -> i64 {
    let epoch: i64 = client
        .query_one("SELECT nextval('sync_epochs')", &[])
        .await
        .expect("epoch")
        .get(0);
    client
        .execute(
            "INSERT INTO book_checkpoints (time, instrument_id, epoch, update_id, kind,
                 bid_prices, bid_qtys, ask_prices, ask_qtys, received_at)
             VALUES ($1::text::timestamptz, $2, $3, 100, 'snapshot',
                 '{100.00,99.50,99.00}', '{1,2,3}', '{100.50,101.00,102.00}', '{1,2,5}', now())",
            &[&T0, &iid, &epoch],
        )
        .await
        .expect("checkpoint");
    client
        .execute(
            "INSERT INTO sync_events (time, instrument_id, epoch, kind, first_update_id)
             VALUES ($1::text::timestamptz, $2, $3, 'synced', 100)",
            &[&T0, &iid, &epoch],
        )
        .await
        .expect("synced");
    // (seconds after T0, U, u, side, price, qty)
    let updates = [
        (1, 101, 103, "bid", "99.50", "0"),    // level removed
        (1, 101, 103, "ask", "100.50", "0.5"), // level changed
        (1, 101, 103, "bid", "99.75", "4"),    // level added
        (2, 104, 105, "bid", "99.50", "7"),    // removed level added again
        (2, 104, 105, "ask", "101.00", "0"),
        (2, 104, 105, "ask", "100.75", "1.25000000"),
        (3, 106, 106, "bid", "100.00", "0"), // best bid removed
        (3, 106, 106, "bid", "98.00", "0"),  // removing an absent level is fine
    ];
    for (secs, first, last, side, price, qty) in updates {
        client
            .execute(
                "INSERT INTO depth_updates (time, instrument_id, first_update_id, update_id, side, price, qty, received_at)
                 VALUES ($1::text::timestamptz + make_interval(secs => $2), $3, $4, $5, $6, $7::text::numeric, $8::text::numeric, now())",
                &[&T0, &(secs as f64), &iid, &(first as i64), &(last as i64), &side, &price, &qty],
            )
            .await
            .expect("update");
    }
    epoch
}

fn at(secs: f64) -> String {
    format!("{} seconds", secs)
}

async fn book_after(
    client: &Client,
    iid: i32,
    secs: f64,
    depth: i32,
) -> Result<Book, tokio_postgres::Error> {
    let t: String = client
        .query_one(
            "SELECT ($1::text::timestamptz + $2::text::interval)::text",
            &[&T0, &at(secs)],
        )
        .await
        .expect("time")
        .get(0);
    book(client, iid, &t, depth).await
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn reconstructs_the_book_at_every_instant(path: StoragePath) {
    let Some((_db, client, _)) = migrated_on(path, "book_at").await else {
        return;
    };
    // Policies measure retention from now(); these hand-built rows are in the past.
    client
        .execute("UPDATE storage_policies SET drop_after = NULL", &[])
        .await
        .expect("policy");
    let iid = instrument(&client, "spot", "BTCUSDT").await;
    seed(&client, iid).await;

    let at_checkpoint = expect(&[
        ("bid", 1, "100.00", "1"),
        ("bid", 2, "99.50", "2"),
        ("bid", 3, "99.00", "3"),
        ("ask", 1, "100.50", "1"),
        ("ask", 2, "101.00", "2"),
        ("ask", 3, "102.00", "5"),
    ]);
    assert_eq!(
        book_after(&client, iid, 0.0, 1000).await.expect("t0"),
        at_checkpoint
    );
    assert_eq!(
        book_after(&client, iid, 0.999, 1000)
            .await
            .expect("before first update"),
        at_checkpoint
    );

    let after_a = expect(&[
        ("bid", 1, "100.00", "1"),
        ("bid", 2, "99.75", "4"),
        ("bid", 3, "99.00", "3"),
        ("ask", 1, "100.50", "0.5"),
        ("ask", 2, "101.00", "2"),
        ("ask", 3, "102.00", "5"),
    ]);
    assert_eq!(
        book_after(&client, iid, 1.0, 1000).await.expect("at A"),
        after_a
    );
    assert_eq!(
        book_after(&client, iid, 1.5, 1000)
            .await
            .expect("between A and B"),
        after_a
    );

    let after_b = expect(&[
        ("bid", 1, "100.00", "1"),
        ("bid", 2, "99.75", "4"),
        ("bid", 3, "99.50", "7"),
        ("bid", 4, "99.00", "3"),
        ("ask", 1, "100.50", "0.5"),
        ("ask", 2, "100.75", "1.25000000"),
        ("ask", 3, "102.00", "5"),
    ]);
    assert_eq!(
        book_after(&client, iid, 2.0, 1000).await.expect("at B"),
        after_b
    );

    let after_c = expect(&[
        ("bid", 1, "99.75", "4"),
        ("bid", 2, "99.50", "7"),
        ("bid", 3, "99.00", "3"),
        ("ask", 1, "100.50", "0.5"),
        ("ask", 2, "100.75", "1.25000000"),
        ("ask", 3, "102.00", "5"),
    ]);
    assert_eq!(
        book_after(&client, iid, 60.0, 1000).await.expect("after C"),
        after_c
    );

    let cut = expect(&[
        ("bid", 1, "99.75", "4"),
        ("bid", 2, "99.50", "7"),
        ("ask", 1, "100.50", "0.5"),
        ("ask", 2, "100.75", "1.25000000"),
    ]);
    assert_eq!(
        book_after(&client, iid, 60.0, 2).await.expect("depth 2"),
        cut
    );

    let head = client
        .query_one(
            "SELECT DISTINCT book_update_id FROM book_at($1, $2::text::timestamptz + interval '1.5 seconds', 5)",
            &[&iid, &T0],
        )
        .await
        .expect("head");
    assert_eq!(
        head.get::<_, i64>(0),
        103,
        "the book's update id is the last applied event's u"
    );

    let by_symbol: i64 = client
        .query_one("SELECT count(*) FROM book_at('spot', 'btcusdt', $1::text::timestamptz + interval '1 minute', 1000)", &[&T0])
        .await
        .expect("by symbol")
        .get(0);
    assert_eq!(by_symbol, after_c.len() as i64);
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn refuses_times_it_cannot_know(path: StoragePath) {
    let Some((_db, client, _)) = migrated_on(path, "book_at_refuse").await else {
        return;
    };
    client
        .execute("UPDATE storage_policies SET drop_after = NULL", &[])
        .await
        .expect("policy");
    let iid = instrument(&client, "usdm", "ETHUSDT").await;
    let epoch = seed(&client, iid).await;

    // Nothing before the first checkpoint.
    let e = book_after(&client, iid, -1.0, 10)
        .await
        .expect_err("before any book");
    assert_eq!(code(&e), "DB002", "{e}");

    // A gap after the last good event (t0+3 s): exact up to it, unknown after it.
    client
        .execute(
            "INSERT INTO sync_events (time, instrument_id, epoch, kind, first_update_id, last_update_id)
             VALUES ($1::text::timestamptz + interval '3 seconds', $2, $3, 'gap', 107, 110)",
            &[&T0, &iid, &epoch],
        )
        .await
        .expect("gap");
    book_after(&client, iid, 3.0, 10)
        .await
        .expect("exact up to the last good event");
    let e = book_after(&client, iid, 3.5, 10)
        .await
        .expect_err("inside the gap");
    assert_eq!(code(&e), "DB001", "{e}");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(
        msg.contains("107") && msg.contains("110"),
        "the message names the missing ids: {msg}"
    );

    // A new epoch starts with its own snapshot; times after it are answered from it.
    let epoch2: i64 = client
        .query_one("SELECT nextval('sync_epochs')", &[])
        .await
        .expect("epoch")
        .get(0);
    client
        .execute(
            "INSERT INTO book_checkpoints (time, instrument_id, epoch, update_id, kind,
                 bid_prices, bid_qtys, ask_prices, ask_qtys, received_at)
             VALUES ($1::text::timestamptz + interval '10 seconds', $2, $3, 120, 'snapshot',
                 '{98.00}', '{9}', '{98.50}', '{8}', now())",
            &[&T0, &iid, &epoch2],
        )
        .await
        .expect("checkpoint 2");
    assert_eq!(
        book_after(&client, iid, 11.0, 10)
            .await
            .expect("after resync"),
        expect(&[("bid", 1, "98.00", "9"), ("ask", 1, "98.50", "8")])
    );
    assert_eq!(
        code(
            &book_after(&client, iid, 9.0, 10)
                .await
                .expect_err("still in the gap")
        ),
        "DB001"
    );

    // A stopped collector ends its epoch too.
    client
        .execute(
            "INSERT INTO sync_events (time, instrument_id, epoch, kind)
             VALUES ($1::text::timestamptz + interval '20 seconds', $2, $3, 'stopped')",
            &[&T0, &iid, &epoch2],
        )
        .await
        .expect("stopped");
    book_after(&client, iid, 20.0, 10)
        .await
        .expect("exact up to the stop");
    assert_eq!(
        code(
            &book_after(&client, iid, 21.0, 10)
                .await
                .expect_err("after the stop")
        ),
        "DB001"
    );

    // Bad arguments.
    assert_eq!(
        code(
            &book_after(&client, iid, 11.0, 0)
                .await
                .expect_err("depth 0")
        ),
        "22023"
    );
    let e = client
        .query("SELECT * FROM book_at('usdm', 'NOPE', now(), 10)", &[])
        .await
        .expect_err("unknown symbol");
    assert_eq!(code(&e), "DB004");
}

/// Past its hot window a day stays (and `book_at` answers) until its files are listed as
/// verified; then maintain() drops it and `book_at` calls it cold (DB003) — also after the cut
/// where the book would start from a checkpoint older than it.
async fn a_day_leaves_only_once_archived_and_is_then_cold(path: StoragePath) {
    let Some((_db, client, _)) = migrated_on(path, "book_at_retention").await else {
        return;
    };
    let iid = instrument(&client, "spot", "BTCUSDT").await;
    seed(&client, iid).await; // T0 is fixed; retention is measured from now()
    client
        .execute("UPDATE storage_policies SET drop_after = interval '1 hour' WHERE relation = 'depth_updates'", &[])
        .await
        .expect("policy");
    let maintain = || async {
        client
            .query_one("SELECT maintain()", &[])
            .await
            .expect("maintain");
    };
    maintain().await;
    let hot = book_after(&client, iid, 2.5, 10)
        .await
        .expect("not archived: still hot");
    assert_eq!(hot.len(), 7, "{hot:?}");

    client
        .execute(
            "INSERT INTO archive_days (data_type, day, files, rows, location, exported_at)
             VALUES ('incremental_book_L2', $1::text::timestamptz::date, 1, 8, '/daily', now())",
            &[&T0],
        )
        .await
        .expect("listed");
    maintain().await;
    let left: i64 = client
        .query_one("SELECT count(*) FROM depth_updates", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "the archived day is dropped");
    let e = book_after(&client, iid, 2.5, 10).await.expect_err("cold");
    assert_eq!(code(&e), "DB003");
    let message = e.as_db_error().map(|d| d.message().to_owned());
    assert!(
        message.as_deref().is_some_and(|m| m.contains("cold")),
        "{message:?}"
    );
    // After the cut, the only checkpoint is from before it: its updates are gone.
    let e = book_after(&client, iid, 86_400.0, 10)
        .await
        .expect_err("cold checkpoint");
    assert_eq!(code(&e), "DB003", "{e}");
}

/// Cents as the price text PostgreSQL shows for them.
fn cents(c: &i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// One side's (price, qty) texts, best first.
fn best_first(side: &BTreeMap<i64, String>, bid: bool) -> (Vec<String>, Vec<String>) {
    let levels: Vec<(&i64, &String)> = if bid {
        side.iter().rev().collect()
    } else {
        side.iter().collect()
    };
    levels
        .into_iter()
        .map(|(p, q)| (cents(p), q.clone()))
        .unzip()
}

/// A model's best `depth` levels a side, as `book` returns them.
fn model_book(bids: &BTreeMap<i64, String>, asks: &BTreeMap<i64, String>, depth: usize) -> Book {
    let mut want = Book::new();
    for (name, side, bid) in [("bid", bids, true), ("ask", asks, false)] {
        let (ps, qs) = best_first(side, bid);
        for (i, (p, q)) in ps.into_iter().zip(qs).take(depth).enumerate() {
            want.push((name.to_owned(), i as i32 + 1, p, q));
        }
    }
    want
}

/// A snapshot checkpoint of these levels at T0 (update id 100), best first as ingest stores it.
async fn checkpoint_at_t0(
    client: &Client,
    iid: i32,
    bids: &BTreeMap<i64, String>,
    asks: &BTreeMap<i64, String>,
) {
    let ((bp, bq), (ap, aq)) = (best_first(bids, true), best_first(asks, false));
    client
        .execute(
            "WITH e AS (SELECT nextval('sync_epochs') AS epoch),
             c AS (INSERT INTO book_checkpoints (time, instrument_id, epoch, update_id, kind,
                       bid_prices, bid_qtys, ask_prices, ask_qtys, received_at)
                   SELECT $1::text::timestamptz, $2, e.epoch, 100, 'snapshot', $3::text[]::numeric[],
                       $4::text[]::numeric[], $5::text[]::numeric[], $6::text[]::numeric[], now()
                   FROM e)
             INSERT INTO sync_events (time, instrument_id, epoch, kind, first_update_id)
             SELECT $1::text::timestamptz, $2, e.epoch, 'synced', 100 FROM e",
            &[&T0, &iid, &bp, &bq, &ap, &aq],
        )
        .await
        .expect("checkpoint");
}

/// A checkpoint's side is stored best first, so `book_at` reads only as far into it as an answer
/// can reach: `depth` levels plus one for each level removed since. Removing the best levels
/// pulls deeper ones (and ones written past the checkpoint's last level) into a shallow answer;
/// at every depth and instant the answer must be the best levels of the whole book.
async fn a_shallow_answer_reaches_as_deep_as_removals_require(path: StoragePath) {
    let Some((_db, client, _)) = migrated_on(path, "book_at_cut").await else {
        return;
    };
    client
        .execute("UPDATE storage_policies SET drop_after = NULL", &[])
        .await
        .expect("policy");
    let iid = instrument(&client, "spot", "ETHUSDT").await;
    // Prices in cents; 12 levels a side, quantities 1..=12 from the top.
    let mut bids: BTreeMap<i64, String> =
        (0..12).map(|i| (10_000 - i, (i + 1).to_string())).collect();
    let mut asks: BTreeMap<i64, String> =
        (0..12).map(|i| (10_001 + i, (i + 1).to_string())).collect();
    checkpoint_at_t0(&client, iid, &bids, &asks).await;
    // (second after T0 = the event's update id - 100, bid?, cents, qty)
    let changes: [(i64, bool, i64, &str); 13] = [
        (1, true, 10_000, "0"), // the best bids and ask removed
        (1, true, 9_999, "0"),
        (1, false, 10_001, "0"),
        (2, true, 9_990, "7"), // the checkpoint's 11th bid changed
        (2, true, 9_980, "2"), // behind the checkpoint's last bid
        (3, true, 9_998, "0"),
        (3, true, 9_997, "0"),
        (3, false, 10_002, "0"),
        (3, false, 10_003, "0"),
        (4, false, 10_020, "3"), // behind the checkpoint's last ask
        (4, true, 10_000, "5"),  // the best bid back
        (5, true, 9_989, "0"),   // the checkpoint's last bid removed
        (5, true, 9_996, "0"),
    ];
    for (secs, bid, price, qty) in changes {
        client
            .execute(
                "INSERT INTO depth_updates (time, instrument_id, first_update_id, update_id, side, price, qty, received_at)
                 VALUES ($1::text::timestamptz + make_interval(secs => $2), $3, $4, $4, $5, $6::text::numeric, $7::text::numeric, now())",
                &[&T0, &(secs as f64), &iid, &(100 + secs), &(if bid { "bid" } else { "ask" }), &cents(&price), &qty],
            )
            .await
            .expect("update");
    }
    for second in 0..=5 {
        for &(_, bid, price, qty) in changes.iter().filter(|c| c.0 == second) {
            let side = if bid { &mut bids } else { &mut asks };
            if qty == "0" {
                side.remove(&price);
            } else {
                side.insert(price, qty.to_owned());
            }
        }
        for depth in 1..=16 {
            let got = book_after(&client, iid, second as f64 + 0.5, depth)
                .await
                .expect("book");
            let want = model_book(&bids, &asks, depth as usize);
            assert_eq!(got, want, "{second} s after the checkpoint, depth {depth}");
        }
    }
}

pgembed::storage_tests!(
    reconstructs_the_book_at_every_instant,
    refuses_times_it_cannot_know,
    a_day_leaves_only_once_archived_and_is_then_cold,
    a_shallow_answer_reaches_as_deep_as_removals_require,
);
