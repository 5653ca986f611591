//! Numbers read back from the database ingest wrote: committed rows, exact event→commit latency
//! per row, and bytes on disk per row.

use anyhow::{Context, Result};
use tokio_postgres::Client;

/// The tables ingest writes with a timestamp per exchange event.
pub const EVENT_TABLES: [&str; 6] = [
    "depth_updates",
    "book_top",
    "book_ticker",
    "trades",
    "mark_prices",
    "book_checkpoints",
];

/// The database's clock, Unix seconds: window bounds compared with `committed_at`.
pub async fn db_now(db: &Client) -> Result<f64> {
    Ok(db
        .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await?
        .get(0))
}

/// Rows committed per relation in a window of commit times.
pub async fn committed_rows(db: &Client, from: f64, to: f64) -> Result<Vec<(String, i64)>> {
    let rows = db
        .query(
            "SELECT relation, sum(rows)::int8 FROM ingest_batches
             WHERE committed_at >= to_timestamp($1) AND committed_at < to_timestamp($2)
             GROUP BY 1 ORDER BY 1",
            &[&from, &to],
        )
        .await
        .context("committed rows")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Event→commit latency over rows, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub rows: i64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Exact per-row latency of the rows of `relations` committed in the window: every row carries
/// the `xmin` of the transaction that wrote it, and so does its batch's ledger row, whose
/// `committed_at` is taken after the COPY. Spool replays are left out (they measure an outage).
pub async fn latency(db: &Client, relations: &[&str], from: f64, to: f64) -> Result<Latency> {
    latency_since(db, relations, "time", from, to).await
}

/// Like [`latency`], from the moment ingest received each row's message (`received_at`, the
/// collector's clock, on the database's machine here): ingest's and PostgreSQL's share alone.
pub async fn receive_latency(
    db: &Client,
    relations: &[&str],
    from: f64,
    to: f64,
) -> Result<Latency> {
    latency_since(db, relations, "received_at", from, to).await
}

async fn latency_since(
    db: &Client,
    relations: &[&str],
    column: &str,
    from: f64,
    to: f64,
) -> Result<Latency> {
    let parts: Vec<String> = relations
        .iter()
        .map(|r| {
            format!(
                "SELECT extract(epoch FROM b.committed_at - t.{column})::float8 * 1000 AS ms
                 FROM {r} t JOIN b ON t.xmin = b.x AND b.relation = '{r}'
                 WHERE t.time >= to_timestamp($1) - interval '1 minute'"
            )
        })
        .collect();
    let sql = format!(
        "WITH b AS (SELECT xmin AS x, relation, committed_at FROM ingest_batches
                    WHERE NOT spooled
                      AND committed_at >= to_timestamp($1) AND committed_at < to_timestamp($2)),
              l AS ({})
         SELECT count(*)::int8,
                coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY ms), 0),
                coalesce(percentile_disc(0.99) WITHIN GROUP (ORDER BY ms), 0),
                coalesce(max(ms), 0)
         FROM l",
        parts.join(" UNION ALL ")
    );
    let r = db
        .query_one(&sql, &[&from, &to])
        .await
        .with_context(|| format!("latency of {relations:?}"))?;
    Ok(Latency {
        rows: r.get(0),
        p50: r.get(1),
        p99: r.get(2),
        max: r.get(3),
    })
}

/// Bytes on disk per row of a table (heap, TOAST and indexes; every chunk of a hypertable).
#[derive(Debug, Clone, Copy, Default)]
pub struct Storage {
    pub rows: i64,
    pub bytes: i64,
    /// After compressing every chunk (TimescaleDB only).
    pub compressed_bytes: Option<i64>,
}

impl Storage {
    pub fn per_row(&self) -> f64 {
        self.bytes as f64 / self.rows.max(1) as f64
    }
    pub fn compressed_per_row(&self) -> Option<f64> {
        self.compressed_bytes
            .map(|b| b as f64 / self.rows.max(1) as f64)
    }
}

/// The storage path the database was migrated on.
pub async fn flavor(db: &Client) -> Result<schema::Flavor> {
    let name: String = db
        .query_one(
            "SELECT flavor FROM schema_migrations ORDER BY version LIMIT 1",
            &[],
        )
        .await
        .context("reading the storage path (is the database migrated?)")?
        .get(0);
    schema::Flavor::parse(&name).with_context(|| format!("unknown storage path {name:?}"))
}

async fn is_hypertable(db: &Client, flavor: schema::Flavor, table: &str) -> Result<bool> {
    if !flavor.hypertables() {
        return Ok(false);
    }
    Ok(db
        .query_opt(
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = $1",
            &[&table],
        )
        .await?
        .is_some())
}

/// Size of `table` after VACUUM; on TimescaleDB's community edition also after compressing
/// every chunk (`compress_chunk`, as the compression policy would once chunks age).
pub async fn storage(db: &Client, table: &str) -> Result<Storage> {
    db.batch_execute(&format!("VACUUM ANALYZE {table}")).await?;
    let rows: i64 = db
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0);
    let flavor = flavor(db).await?;
    let hyper = is_hypertable(db, flavor, table).await?;
    let size_sql = if hyper {
        "SELECT hypertable_size($1::text::regclass)::int8"
    } else {
        "SELECT pg_total_relation_size($1::text::regclass)::int8"
    };
    let bytes: i64 = db.query_one(size_sql, &[&table]).await?.get(0);
    let compressed_bytes = if hyper && flavor == schema::Flavor::Timescale {
        db.execute(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks($1::text::regclass) c",
            &[&table],
        )
        .await
        .with_context(|| format!("compressing {table}"))?;
        Some(db.query_one(size_sql, &[&table]).await?.get(0))
    } else {
        None
    };
    Ok(Storage {
        rows,
        bytes,
        compressed_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows written in one transaction with their ledger row are matched to that batch's commit
    /// time, and nothing else: not another batch's rows, not a spooled batch.
    #[tokio::test]
    async fn latency_is_per_row_through_the_batch_xmin() {
        let db = pgembed::test_database("bench_latency").await.expect("db");
        let mut c = crate::stack::connect(&db.url).await.expect("connect");
        schema::apply(&mut c, schema::FlavorChoice::Auto)
            .await
            .expect("migrate");
        let t0 = db_now(&c).await.expect("now");
        // (batch, spooled, commit offset s, row ages ms)
        let batches: [(&str, bool, f64, &[f64]); 3] = [
            ("a", false, 1.0, &[10.0, 20.0, 30.0]),
            ("b", false, 2.0, &[100.0]),
            ("c", true, 3.0, &[5000.0]),
        ];
        for (id, spooled, at, ages) in batches {
            let tx = c.transaction().await.expect("tx");
            let commit = t0 + at;
            tx.execute(
                "INSERT INTO ingest_batches (batch_id, relation, rows, spooled, committed_at)
                 VALUES ($1, 'trades', $2, $3, to_timestamp($4))",
                &[&id, &(ages.len() as i32), &spooled, &commit],
            )
            .await
            .expect("ledger");
            for (i, age) in ages.iter().enumerate() {
                tx.execute(
                    "INSERT INTO trades VALUES (to_timestamp($1), 1, $2, 1, 1, 1, 1, true,
                                                to_timestamp($1), to_timestamp($1))",
                    &[&(commit - age / 1000.0), &(i as i64)],
                )
                .await
                .expect("trade");
            }
            tx.commit().await.expect("commit");
        }
        let l = latency(&c, &["trades"], t0, t0 + 10.0)
            .await
            .expect("latency");
        assert_eq!(l.rows, 4, "the spooled batch is left out");
        assert!((l.p50 - 20.0).abs() < 0.01, "{l:?}");
        assert!((l.p99 - 100.0).abs() < 0.01, "{l:?}");
        assert!((l.max - 100.0).abs() < 0.01, "{l:?}");
        let none = latency(&c, &["trades"], t0 + 1.5, t0 + 1.9)
            .await
            .expect("latency");
        assert_eq!(none.rows, 0, "nothing committed in that window");
        let rows = committed_rows(&c, t0, t0 + 10.0).await.expect("rows");
        assert_eq!(rows, vec![("trades".to_owned(), 5)]);
    }
}
