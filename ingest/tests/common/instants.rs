//! The invariant at every instant: for every stored event time `t` inside an epoch (and
//! `t - 1 ms`, `t + 1 ms`, every checkpoint time), `book_at(t)` is the simulator's true book
//! after the last event with `E <= t` (its best N levels per side where the book `book_at`
//! starts from was kept in a window of N: `book_checkpoints.levels`); every such instant
//! outside an epoch is refused.

use std::collections::{BTreeMap, BTreeSet};

use binance::units::parse_e8;
use sim::Sim;
use tokio_postgres::Client;

use super::{truth_book, Book};

/// What one check covered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Instants {
    /// Instants inside an epoch whose book equalled the truth.
    pub equal: usize,
    /// Instants outside every epoch that `book_at` refused.
    pub refused: usize,
    /// Instants whose truth had left the simulator's window.
    pub beyond_truth: usize,
}

async fn ms_list(db: &Client, sql: &str, iid: i32) -> Vec<i64> {
    db.query(sql, &[&iid])
        .await
        .expect(sql)
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Epochs of an instrument as `[start, end]` in ms (`end` = the gap or stop; none while open).
async fn epochs(db: &Client, iid: i32) -> Vec<(i64, Option<i64>)> {
    db.query(
        "SELECT (extract(epoch FROM s.time) * 1000)::int8,
                (SELECT (extract(epoch FROM min(e.time)) * 1000)::int8 FROM sync_events e
                 WHERE e.epoch = s.epoch AND e.kind IN ('gap', 'stopped'))
         FROM sync_events s WHERE s.instrument_id = $1 AND s.kind = 'synced'",
        &[&iid],
    )
    .await
    .expect("epochs")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The stored books at many instants at once (all inside epochs, so none is refused).
async fn books_at(db: &Client, iid: i32, instants: &[i64]) -> BTreeMap<i64, (Book, i64)> {
    let secs: Vec<f64> = instants.iter().map(|t| *t as f64 / 1000.0).collect();
    let rows = db
        .query(
            "SELECT (t * 1000)::int8, b.side, b.price::text, b.qty::text, b.book_update_id
             FROM unnest($2::float8[]) t, LATERAL book_at($1, to_timestamp(t), 100000) b",
            &[&iid, &secs],
        )
        .await
        .expect("book_at at every instant");
    let mut out: BTreeMap<i64, (Book, i64)> = BTreeMap::new();
    for r in rows {
        let entry = out.entry(r.get(0)).or_default();
        let level = (
            parse_e8(r.get::<_, &str>(2)).expect("price"),
            parse_e8(r.get::<_, &str>(3)).expect("qty"),
        );
        if r.get::<_, &str>(1) == "bid" {
            entry.0 .0.push(level);
        } else {
            entry.0 .1.push(level);
        }
        entry.1 = r.get(4);
    }
    out
}

/// The window of each checkpoint (`None`: every level), as `book_at` orders them.
async fn windows(db: &Client, iid: i32) -> Vec<(i64, Option<i32>)> {
    db.query(
        "SELECT (extract(epoch FROM time) * 1000)::int8, levels FROM book_checkpoints
         WHERE instrument_id = $1 ORDER BY time, update_id",
        &[&iid],
    )
    .await
    .expect("checkpoints")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Checks every instrument of `sim`'s venues; panics at the first wrong or unrefused instant.
pub async fn check_every_instant(db: &Client, sim: &Sim) -> Instants {
    let mut seen = Instants::default();
    let instruments = db
        .query(
            "SELECT id, venue, symbol FROM instruments WHERE active",
            &[],
        )
        .await
        .expect("instruments");
    for inst in &instruments {
        let (iid, venue, symbol): (i32, String, String) = (inst.get(0), inst.get(1), inst.get(2));
        let windows = windows(db, iid).await;
        let handle = match venue.as_str() {
            "spot" => sim.spot.as_ref(),
            _ => sim.usdm.as_ref(),
        }
        .expect("the venue runs");
        let events: Vec<(i64, i64)> = db
            // A checkpoint is where the book stands too: with a depth window, the events that
            // bridged a sync may have changed nothing inside it and left no row.
            .query("SELECT (extract(epoch FROM time) * 1000)::int8, update_id FROM depth_updates WHERE instrument_id = $1
                    UNION SELECT (extract(epoch FROM time) * 1000)::int8, update_id FROM book_checkpoints WHERE instrument_id = $1
                    ORDER BY 1, 2", &[&iid])
            .await
            .expect("events")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut instants: BTreeSet<i64> = events
            .iter()
            .flat_map(|(t, _)| [t - 1, *t, t + 1])
            .collect();
        instants.extend(ms_list(db, "SELECT (extract(epoch FROM time) * 1000)::int8 FROM book_checkpoints WHERE instrument_id = $1", iid).await);
        let spans = epochs(db, iid).await;
        let inside = |t: i64| {
            spans
                .iter()
                .any(|(s, e)| *s <= t && e.is_none_or(|e| t <= e))
        };
        let (ins, outs): (Vec<i64>, Vec<i64>) = instants.into_iter().partition(|t| inside(*t));
        for t in outs {
            let res = db
                .query(
                    "SELECT * FROM book_at($1, to_timestamp($2::float8 / 1000), 10)",
                    &[&iid, &(t as f64)],
                )
                .await;
            assert!(
                res.is_err(),
                "{venue} {symbol}: book_at at {t} ms, outside every epoch, answered"
            );
            seen.refused += 1;
        }
        let books = books_at(db, iid, &ins).await;
        for t in ins {
            let last = events.partition_point(|(e, _)| *e <= t);
            let Some(&(_, uid)) = last.checked_sub(1).and_then(|i| events.get(i)) else {
                panic!("{venue} {symbol}: {t} ms is inside an epoch but no event precedes it");
            };
            let window = windows.iter().rev().find(|(at, _)| *at <= t).map(|w| w.1);
            let window = super::window(window.flatten());
            let Ok(truth) = handle.truth(&symbol, Some(uid as u64), window) else {
                seen.beyond_truth += 1;
                continue;
            };
            let (book, book_id) = books.get(&t).cloned().unwrap_or_default();
            assert_eq!(
                book_id, uid,
                "{venue} {symbol} at {t} ms: book_at stands at the last event"
            );
            assert_eq!(
                book,
                truth_book(&truth),
                "{venue} {symbol} at {t} ms (u={uid}): the true book"
            );
            seen.equal += 1;
        }
    }
    seen
}
