//! Reading an exported Tardis `incremental_book_L2` file back the way a Tardis reader does.

use std::collections::BTreeMap;

use binance::units::parse_e8;
use export::DataType;

/// One `incremental_book_L2` row.
#[derive(Debug, PartialEq, Eq)]
pub struct L2 {
    pub timestamp: i64,
    pub snapshot: bool,
    pub bid: bool,
    pub price: i64,
    pub amount: i64,
}

pub fn parse_l2(csv: &str) -> Vec<L2> {
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(DataType::IncrementalBookL2.header().as_str())
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 8, "{l}");
            L2 {
                timestamp: f[2].parse().expect("timestamp"),
                snapshot: f[4] == "true",
                bid: f[5] == "bid",
                price: parse_e8(f[6]).expect("price"),
                amount: parse_e8(f[7]).expect("amount"),
            }
        })
        .collect()
}

/// The rows of an exported `incremental_book_L2` Parquet file, read by the parquet crate's
/// reader: decimals as their e8 counts (the file's scale is 8), timestamps in microseconds.
pub fn parse_l2_parquet(file: Vec<u8>) -> Vec<L2> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, TimestampMicrosecondType};
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(file),
    )
    .expect("a Parquet file")
    .build()
    .expect("reader");
    let mut rows = Vec::new();
    for batch in reader {
        let b = batch.expect("a row group");
        let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
        let snapshot = b.column(4).as_boolean();
        let side = b.column(5).as_string::<i32>();
        let price = b.column(6).as_primitive::<Decimal128Type>();
        let amount = b.column(7).as_primitive::<Decimal128Type>();
        for i in 0..b.num_rows() {
            let e8 = |v: i128| i64::try_from(v).expect("an e8 count");
            rows.push(L2 {
                timestamp: ts.value(i),
                snapshot: snapshot.value(i),
                bid: side.value(i) == "bid",
                price: e8(price.value(i)),
                amount: e8(amount.value(i)),
            });
        }
    }
    rows
}

pub type Levels = (Vec<(i64, i64)>, Vec<(i64, i64)>);

/// The book a Tardis reader holds after every row stamped at or before each instant: a
/// snapshot row after an update row starts a new book, an amount of 0 removes the level.
pub fn rebuild_at(rows: &[L2], instants: &[i64]) -> Vec<Levels> {
    let mut book: BTreeMap<(bool, i64), i64> = BTreeMap::new();
    let (mut next, mut last_snapshot, mut out) = (0, false, Vec::new());
    for &t in instants {
        while next < rows.len() && rows[next].timestamp <= t {
            let r = &rows[next];
            if r.snapshot && !last_snapshot {
                book.clear();
            }
            last_snapshot = r.snapshot;
            if r.amount == 0 {
                book.remove(&(r.bid, r.price));
            } else {
                book.insert((r.bid, r.price), r.amount);
            }
            next += 1;
        }
        let bids = book
            .iter()
            .rev()
            .filter(|(k, _)| k.0)
            .map(|(k, q)| (k.1, *q));
        let asks = book.iter().filter(|(k, _)| !k.0).map(|(k, q)| (k.1, *q));
        out.push((bids.collect(), asks.collect()));
    }
    out
}

/// `book_at` at an instant in microseconds (the files' timestamps), every level.
pub async fn book_at_us(
    db: &tokio_postgres::Client,
    iid: i32,
    at_us: i64,
) -> Result<Levels, tokio_postgres::Error> {
    let at = chrono::DateTime::from_timestamp_micros(at_us).expect("instant");
    let rows = db
        .query(
            "SELECT side, price::text, qty::text FROM book_at($1, $2, 100000)",
            &[&iid, &at],
        )
        .await?;
    let mut book: Levels = (Vec::new(), Vec::new());
    for r in rows {
        let lvl = (
            binance::units::parse_e8(r.get::<_, &str>(1)).expect("price"),
            binance::units::parse_e8(r.get::<_, &str>(2)).expect("qty"),
        );
        if r.get::<_, &str>(0) == "bid" {
            book.0.push(lvl);
        } else {
            book.1.push(lvl);
        }
    }
    Ok(book)
}
