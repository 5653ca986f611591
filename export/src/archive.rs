//! The cold tier's bookkeeping. A day of the daily set is listed in `archive_days` only once
//! every file is read back and agrees with the database (rows, and for a bucket the sha256 of
//! the object as stored); only listed days can be dropped by retention (`sql/0010_archive.sql`).

use std::fs::File;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use tokio_postgres::Client;

use crate::files::Written;
use crate::{DataType, ExportError, Format, Instrument, Range};

/// The data types whose files stand for a table in the cold tier (`storage_policies.archive_as`).
pub const ARCHIVED: [DataType; 4] = [
    DataType::IncrementalBookL2,
    DataType::Quotes,
    DataType::Trades,
    DataType::DerivativeTicker,
];

/// Rows read back from a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub rows: u64,
    /// Rows that are the table's own (an L2 file's other rows are the opening books).
    pub table_rows: u64,
}

/// Reads a written file back and counts its rows.
pub fn count_file(path: &Path, format: Format, t: DataType) -> Result<Count, ExportError> {
    match format {
        Format::Csv => count_csv(path, t),
        Format::Parquet => count_parquet(path, t),
    }
}

fn count_csv(path: &Path, t: DataType) -> Result<Count, ExportError> {
    let mut c = Count {
        rows: 0,
        table_rows: 0,
    };
    for line in crate::files::csv_lines(path)? {
        let line = line?;
        c.rows += 1;
        // exchange,symbol,timestamp,local_timestamp,is_snapshot,...: no field holds a comma.
        let snapshot = t == DataType::IncrementalBookL2 && line.split(',').nth(4) == Some("true");
        c.table_rows += u64::from(!snapshot);
    }
    Ok(c)
}

fn count_parquet(path: &Path, t: DataType) -> Result<Count, ExportError> {
    let bad = |e: &dyn std::fmt::Display| ExportError::Verify(format!("{}: {e}", path.display()));
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(File::open(path)?).map_err(|e| bad(&e))?;
    let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    if t != DataType::IncrementalBookL2 {
        return Ok(Count {
            rows,
            table_rows: rows,
        });
    }
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["is_snapshot"]);
    let reader = builder.with_projection(mask).build().map_err(|e| bad(&e))?;
    let mut snapshots = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::BooleanArray>()
            .ok_or_else(|| bad(&"is_snapshot is not boolean"))?;
        snapshots += column.true_count() as u64;
    }
    Ok(Count {
        rows,
        table_rows: rows - snapshots.min(rows),
    })
}

/// The rows of `t`'s table for `inst` over `range` in the database.
async fn db_rows(
    client: &Client,
    inst: &Instrument,
    t: DataType,
    range: Range,
) -> Result<u64, ExportError> {
    // The table name is one of ours, never input.
    let sql = format!(
        "SELECT count(*) FROM {} WHERE instrument_id = $1 AND time >= $2 AND time < $3",
        t.table()
    );
    let n: i64 = client
        .query_one(&sql, &[&inst.id, &range.from, &range.to])
        .await?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Depth rows that a sync's opening book holds rather than the file's updates: the events that
/// bridged its snapshot (ids after the snapshot's, up to the book's; stored, and in the
/// `snapshot` checkpoint). Their sync may come a little after the range ends.
async fn bridged_rows(
    client: &Client,
    inst: &Instrument,
    range: Range,
) -> Result<u64, ExportError> {
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM sync_events s JOIN depth_updates d
                 ON d.instrument_id = s.instrument_id
                AND d.update_id >= s.first_update_id AND d.update_id <= s.last_update_id
                AND d.time <= s.time
             WHERE s.instrument_id = $1 AND s.kind = 'synced'
               AND s.time >= $2 AND s.time < $3::timestamptz + interval '1 hour'
               AND d.time >= $2 AND d.time < $3",
            &[&inst.id, &range.from, &range.to],
        )
        .await?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Checks a written file against what was streamed into it and, for an archived type, against
/// the database: the file holds every row of its table in the range.
pub async fn verify(
    client: &Client,
    inst: &Instrument,
    (t, format): (DataType, Format),
    range: Range,
    w: &Written,
) -> Result<(), ExportError> {
    let name = w.path.display();
    let c = count_file(&w.path, format, t)?;
    if c.rows != w.rows {
        return Err(ExportError::Verify(format!(
            "{name}: {} rows read back, {} written",
            c.rows, w.rows
        )));
    }
    if ARCHIVED.contains(&t) {
        let db = db_rows(client, inst, t, range).await?;
        let bridged = if t == DataType::IncrementalBookL2 {
            bridged_rows(client, inst, range).await?
        } else {
            0
        };
        if db != c.table_rows + bridged {
            return Err(ExportError::Verify(format!(
                "{name}: the database holds {db} rows of {} for {} over [{}, {}), the file {} \
                 and the books it opens with {bridged}",
                t.table(),
                inst.symbol,
                range.from,
                range.to,
                c.table_rows
            )));
        }
    }
    Ok(())
}

/// When a day's export starts, for `archive_days.exported_at`: the database's clock, or the start
/// of the oldest transaction still open in this database if that is earlier. A batch stamps its
/// ledger row inside its transaction, before it commits, so a batch committed after the files
/// read the table always carries a later stamp than this, and takes the day off the list.
pub async fn export_start(client: &Client) -> Result<DateTime<Utc>, ExportError> {
    let row = client
        .query_one(
            "SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity
                                  WHERE datname = current_database() AND pid <> pg_backend_pid()
                                    AND backend_type = 'client backend'))",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// One listed day of one data type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub data_type: DataType,
    pub day: NaiveDate,
    pub files: i32,
    pub rows: i64,
    pub location: String,
    /// When the day's first file was started (the database's clock).
    pub exported_at: DateTime<Utc>,
}

/// Lists (or lists again) a verified day.
pub async fn list(client: &Client, l: &Listing) -> Result<(), ExportError> {
    client
        .execute(
            "INSERT INTO archive_days (data_type, day, files, rows, location, exported_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (data_type, day) DO UPDATE SET files = EXCLUDED.files,
                 rows = EXCLUDED.rows, location = EXCLUDED.location,
                 exported_at = EXCLUDED.exported_at, verified_at = now()",
            &[
                &l.data_type.name(),
                &l.day,
                &l.files,
                &l.rows,
                &l.location,
                &l.exported_at,
            ],
        )
        .await?;
    Ok(())
}

/// The data types listed for `day`.
pub async fn listed(client: &Client, day: NaiveDate) -> Result<Vec<String>, ExportError> {
    let rows = client
        .query(
            "SELECT data_type FROM archive_days WHERE day = $1 ORDER BY 1",
            &[&day],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Where `t`'s rows start in the database, if retention moved older ones out, and where the
/// newest listed day's files are.
pub async fn cold_before(
    client: &Client,
    t: DataType,
) -> Result<Option<(DateTime<Utc>, String)>, ExportError> {
    let row = client
        .query_opt(
            "SELECT sp.dropped_before,
                    coalesce((SELECT a.location FROM archive_days a WHERE a.data_type = sp.archive_as
                              ORDER BY a.day DESC LIMIT 1), 'not archived: dropped at its retention')
             FROM storage_policies sp WHERE sp.relation = $1 AND sp.dropped_before IS NOT NULL",
            &[&t.table()],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Refuses a range that reaches into the cold tier, saying where the files are.
pub async fn refuse_cold(client: &Client, t: DataType, range: Range) -> Result<(), ExportError> {
    match cold_before(client, t).await? {
        Some((before, location)) if range.from < before => Err(ExportError::Cold {
            data_type: t.name(),
            before: before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            location,
        }),
        _ => Ok(()),
    }
}

/// The first UTC day the database still holds in full for every archived table, or, where
/// nothing was dropped yet, the first day anything was collected.
pub async fn first_hot_day(client: &Client) -> Result<Option<NaiveDate>, ExportError> {
    let row = client
        .query_one(
            "SELECT (SELECT min(time) FROM sync_events
                     WHERE time >= coalesce((SELECT max(dropped_before) FROM storage_policies
                                             WHERE archive_as IS NOT NULL), '-infinity'))",
            &[],
        )
        .await?;
    let t: Option<DateTime<Utc>> = row.get(0);
    Ok(t.map(|t| t.date_naive()))
}

/// Whether any part of `day` has left the database for a table that waits for its files.
pub async fn is_cold(client: &Client, day: NaiveDate) -> Result<bool, ExportError> {
    let start = crate::files::day_range(day).from;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM storage_policies
                            WHERE archive_as IS NOT NULL AND dropped_before > $1)",
            &[&start],
        )
        .await?;
    Ok(row.get(0))
}
