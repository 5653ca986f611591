//! How small a depth row could be: the real rows `sizing` replayed, copied into narrower
//! shapes (integers instead of `numeric`, a boolean side) and measured like the stored table —
//! hypertables compressed with the same settings on TimescaleDB community, plain tables
//! elsewhere. The basis for changing `depth_updates`' columns, measured before doing it.

use std::fmt::Write as _;

use anyhow::Result;
use tokio_postgres::Client;

use crate::measure::{self, Storage};

/// One shape: its name, the query that makes it (from `depth_updates d` joined to
/// `instruments i`), and its compression order.
struct Shape {
    name: &'static str,
    query: &'static str,
    orderby: &'static str,
}

const FROM: &str = "FROM depth_updates d JOIN instruments i ON i.id = d.instrument_id";

const SHAPES: [Shape; 5] = [
    Shape {
        name: "e8 integers (`bigint` price and quantity × 10^8), boolean side",
        query: "SELECT d.time, d.instrument_id, d.first_update_id, d.update_id, d.prev_update_id, d.side = 'bid' AS is_bid,
                       (d.price * 100000000)::int8 AS price, (d.qty * 100000000)::int8 AS qty, d.received_at",
        orderby: "time, update_id",
    },
    Shape {
        name: "ticks and steps (`bigint` price ÷ tick size, quantity ÷ step size), boolean side",
        query: "SELECT d.time, d.instrument_id, d.first_update_id, d.update_id, d.prev_update_id, d.side = 'bid' AS is_bid,
                       (d.price / i.tick_size)::int8 AS price, (d.qty / i.step_size)::int8 AS qty, d.received_at",
        orderby: "time, update_id",
    },
    Shape {
        name: "ticks and steps, compressed in side and price order within an event",
        query: "SELECT d.time, d.instrument_id, d.first_update_id, d.update_id, d.prev_update_id, d.side = 'bid' AS is_bid,
                       (d.price / i.tick_size)::int8 AS price, (d.qty / i.step_size)::int8 AS qty, d.received_at",
        orderby: "time, update_id, is_bid, price",
    },
    Shape {
        name: "ticks and steps, without the local receive time",
        query: "SELECT d.time, d.instrument_id, d.first_update_id, d.update_id, d.prev_update_id, d.side = 'bid' AS is_bid,
                       (d.price / i.tick_size)::int8 AS price, (d.qty / i.step_size)::int8 AS qty",
        orderby: "time, update_id, is_bid, price",
    },
    Shape {
        name: "one row per event: its changes as arrays of ticks and steps",
        query: "SELECT d.time, d.instrument_id, d.first_update_id, d.update_id, d.prev_update_id, min(d.received_at) AS received_at,
                       array_agg(d.side = 'bid' ORDER BY d.side, d.price) AS is_bid,
                       array_agg((d.price / i.tick_size)::int8 ORDER BY d.side, d.price) AS price,
                       array_agg((d.qty / i.step_size)::int8 ORDER BY d.side, d.price) AS qty",
        orderby: "time, update_id",
    },
];

/// Each shape's storage, measured on `db`'s path; the tables are dropped afterwards.
pub async fn measure(db: &Client) -> Result<Vec<(&'static str, Storage)>> {
    let compress = measure::flavor(db).await? == schema::Flavor::Timescale;
    let mut out = Vec::new();
    for (n, shape) in SHAPES.iter().enumerate() {
        let table = format!("narrow_depth_{n}");
        let group = if shape.query.contains("array_agg") {
            " GROUP BY 1, 2, 3, 4, 5"
        } else {
            ""
        };
        db.batch_execute(&format!(
            "CREATE TABLE {table} AS {} {FROM}{group}",
            shape.query
        ))
        .await?;
        if compress {
            db.batch_execute(&format!(
                "SELECT create_hypertable('{table}', 'time', chunk_time_interval => interval '1 hour', migrate_data => true);
                 ALTER TABLE {table} SET (timescaledb.compress,
                     timescaledb.compress_segmentby = 'instrument_id',
                     timescaledb.compress_orderby = '{}');",
                shape.orderby
            ))
            .await?;
        }
        out.push((shape.name, measure::storage(db, &table).await?));
        db.batch_execute(&format!("DROP TABLE {table}")).await?;
    }
    Ok(out)
}

/// The report's table, beside the stored row: bytes per depth level change, whatever rows
/// the shape has.
pub fn render(stored: &Storage, shapes: &[(&'static str, Storage)], o: &mut String) {
    let _ = writeln!(o, "\nHow small a depth row could be: the same replayed rows copied into other shapes and measured the same way, in bytes per depth level change (depth rows alone, without the checkpoints' share; compressed with the stored table's settings unless said; the shapes have no index, the stored table has its own):\n");
    let _ = writeln!(o, "| row shape | bytes | compressed |\n|---|---|---|");
    let changes = stored.rows.max(1) as f64;
    let f = |s: &Storage| {
        s.compressed_bytes.map_or("n/a on this path".into(), |c| {
            format!("{:.1}", c as f64 / changes)
        })
    };
    let as_stored = "as stored: `numeric` price and quantity, text side";
    for (name, s) in std::iter::once((as_stored, stored)).chain(shapes.iter().map(|(n, s)| (*n, s)))
    {
        let _ = writeln!(o, "| {name} | {:.1} | {} |", s.bytes as f64 / changes, f(s));
    }
}
