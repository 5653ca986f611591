//! Answers from the cold tier: the book at an instant, rebuilt from a day's
//! `incremental_book_L2` file (gzip CSV or Parquet) the way a Tardis reader rebuilds it, with
//! `book_at`'s refusals where the file lists its book as unknown.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, TimestampMicrosecondType};
use binance::units::parse_e8;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::files::gaps_name;
use crate::{ExportError, Gap};

/// One `incremental_book_L2` row: microseconds, exact e8 price and amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    t: i64,
    snapshot: bool,
    bid: bool,
    price: i64,
    amount: i64,
}

/// The book at an instant: each side best first, e8 prices and quantities.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColdBook {
    pub bids: Vec<(i64, i64)>,
    pub asks: Vec<(i64, i64)>,
    /// The newest row applied (microseconds).
    pub as_of_us: i64,
}

/// Replays rows stamped at or before `at_us`: a snapshot row after an update row starts a new
/// book, an amount of 0 removes the level.
#[derive(Default)]
struct Replay {
    book: BTreeMap<(bool, i64), i64>,
    last_snapshot: bool,
    as_of_us: Option<i64>,
}

impl Replay {
    fn apply(&mut self, r: Row) {
        if r.snapshot && !self.last_snapshot {
            self.book.clear();
        }
        self.last_snapshot = r.snapshot;
        if r.amount == 0 {
            self.book.remove(&(r.bid, r.price));
        } else {
            self.book.insert((r.bid, r.price), r.amount);
        }
        self.as_of_us = Some(r.t);
    }

    fn top(self, depth: usize) -> Option<ColdBook> {
        let side = |bid: bool| self.book.iter().filter(move |(k, _)| k.0 == bid);
        Some(ColdBook {
            bids: side(true)
                .rev()
                .take(depth)
                .map(|(k, q)| (k.1, *q))
                .collect(),
            asks: side(false).take(depth).map(|(k, q)| (k.1, *q)).collect(),
            as_of_us: self.as_of_us?,
        })
    }
}

/// The gap of `gaps` that makes the book unknown at `at_us`, if any. A `gap` or `stopped`
/// stretch starts at the last update applied, which is still known (`book_at` answers there).
fn unknown_at(gaps: &[Gap], at_us: i64) -> Option<&Gap> {
    gaps.iter().find(|g| {
        let after_start = match g.kind.as_str() {
            "gap" | "stopped" => g.from_us < at_us,
            _ => g.from_us <= at_us,
        };
        after_start && at_us < g.to_us
    })
}

/// The book at `at_us` (microseconds since the epoch) from the L2 file at `path`, `depth` levels
/// per side. Refuses an instant the file lists as unknown, or before its first row.
pub fn book_at(path: &Path, at_us: i64, depth: usize) -> Result<ColdBook, ExportError> {
    let parquet = path.extension().is_some_and(|e| e == "parquet");
    let gaps = if parquet {
        parquet_gaps(path)?
    } else {
        csv_gaps(path)?
    };
    if let Some(g) = unknown_at(&gaps, at_us) {
        return Err(ExportError::NoBook(format!(
            "{} lists the book as unknown from {} to {} ({})",
            path.display(),
            g.from,
            g.to,
            g.kind
        )));
    }
    let mut replay = Replay::default();
    if parquet {
        replay_parquet(path, at_us, &mut replay)?;
    } else {
        replay_csv(path, at_us, &mut replay)?;
    }
    replay.top(depth).ok_or_else(|| {
        ExportError::NoBook(format!(
            "{} holds no book at or before that time",
            path.display()
        ))
    })
}

fn bad(path: &Path, why: &dyn std::fmt::Display) -> ExportError {
    ExportError::NoBook(format!("{}: {why}", path.display()))
}

fn csv_gaps(path: &Path) -> Result<Vec<Gap>, ExportError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sidecar = path.with_file_name(gaps_name(&name));
    #[derive(serde::Deserialize)]
    struct Sidecar {
        gaps: Vec<Gap>,
    }
    let text = std::fs::read(&sidecar).map_err(|e| bad(&sidecar, &e))?;
    let s: Sidecar = serde_json::from_slice(&text).map_err(|e| bad(&sidecar, &e))?;
    Ok(s.gaps)
}

fn replay_csv(path: &Path, at_us: i64, replay: &mut Replay) -> Result<(), ExportError> {
    for line in crate::files::csv_lines(path)? {
        let line = line?;
        let f: Vec<&str> = line.split(',').collect();
        let [_, _, t, _, snapshot, side, price, amount] = f[..] else {
            return Err(bad(path, &format!("not an L2 row: {line:?}")));
        };
        let t: i64 = t.parse().map_err(|e| bad(path, &e))?;
        if t > at_us {
            break;
        }
        replay.apply(Row {
            t,
            snapshot: snapshot == "true",
            bid: side == "bid",
            price: parse_e8(price).map_err(|e| bad(path, &e))?,
            amount: parse_e8(amount).map_err(|e| bad(path, &e))?,
        });
    }
    Ok(())
}

fn parquet_gaps(path: &Path) -> Result<Vec<Gap>, ExportError> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(File::open(path)?).map_err(|e| bad(path, &e))?;
    let meta = builder.metadata().file_metadata().key_value_metadata();
    let text = meta
        .and_then(|kv| kv.iter().find(|k| k.key == crate::to_parquet::GAPS_KEY))
        .and_then(|k| k.value.clone())
        .unwrap_or_else(|| "[]".into());
    serde_json::from_str(&text).map_err(|e| bad(path, &e))
}

/// Parquet's decimals are (20, 8): the stored integer is the e8 count itself.
fn replay_parquet(path: &Path, at_us: i64, replay: &mut Replay) -> Result<(), ExportError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)
        .and_then(|b| b.build())
        .map_err(|e| bad(path, &e))?;
    let e8 = |v: i128| i64::try_from(v).map_err(|e| bad(path, &e));
    for batch in reader {
        let b = batch.map_err(|e| bad(path, &e))?;
        let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
        let (snapshot, side) = (b.column(4).as_boolean(), b.column(5).as_string::<i32>());
        let price = b.column(6).as_primitive::<Decimal128Type>();
        let amount = b.column(7).as_primitive::<Decimal128Type>();
        for i in 0..b.num_rows() {
            if ts.value(i) > at_us {
                return Ok(());
            }
            replay.apply(Row {
                t: ts.value(i),
                snapshot: snapshot.value(i),
                bid: side.value(i) == "bid",
                price: e8(price.value(i))?,
                amount: e8(amount.value(i))?,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(kind: &str, from_us: i64, to_us: i64) -> Gap {
        Gap {
            from_us,
            to_us,
            from: from_us.to_string(),
            to: to_us.to_string(),
            kind: kind.into(),
            first_update_id: None,
            last_update_id: None,
        }
    }

    #[test]
    fn a_gap_starts_after_its_last_known_update_and_no_book_at_once() {
        let gaps = [gap("stopped", 10, 20), gap("no_book", 0, 5)];
        assert!(unknown_at(&gaps, 10).is_none(), "the last update is known");
        assert!(unknown_at(&gaps, 11).is_some());
        assert!(
            unknown_at(&gaps, 20).is_none(),
            "the sync at the end is known"
        );
        assert!(unknown_at(&gaps, 0).is_some());
        assert!(unknown_at(&gaps, 5).is_none());
    }

    #[test]
    fn a_snapshot_after_updates_starts_a_new_book() {
        let mut r = Replay::default();
        let row = |t, snapshot, bid, price, amount| Row {
            t,
            snapshot,
            bid,
            price,
            amount,
        };
        for x in [
            row(1, true, true, 100, 1),
            row(1, true, false, 101, 1),
            row(2, false, true, 99, 5),
            row(3, false, false, 101, 0),
            row(4, true, true, 50, 2),
        ] {
            r.apply(x);
        }
        let b = r.top(10).expect("a book");
        assert_eq!(b.bids, [(50, 2)]);
        assert!(b.asks.is_empty());
        assert_eq!(b.as_of_us, 4);
    }
}
