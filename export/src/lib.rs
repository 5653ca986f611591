//! Datasets out: the stored market data as the files research tools already read. Tardis.dev's
//! CSV formats (`tardis`), one query per data type formatted by PostgreSQL itself (`sql`), the
//! book's known stretches and its gaps (`segments`), and a day of one symbol as a gzip file with
//! its gap sidecar (`files`), the daily research set with its manifest (`daily`) and
//! its copy in an S3-compatible bucket (`bucket`). `write_csv` streams one range of one symbol
//! to any writer; `to_parquet` transcodes that CSV stream into Parquet.

pub mod archive;
pub mod bucket;
pub mod cold;
pub mod daily;
mod error;
pub mod files;
pub mod segments;
mod sql;
pub mod tardis;
pub mod to_parquet;

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use binance::Venue;
use chrono::{DateTime, Utc};
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::Client;

pub use error::ExportError;
pub use segments::Gap;
pub use tardis::DataType;

/// Gzip level of every file and download: the fastest. Level 6 makes files ≈ 15 % smaller but
/// compresses 3× slower (500 k against 1.6 M rows/s on one core, zlib), and then it, not
/// PostgreSQL, bounds the export on the small box that also runs the collector.
pub const GZIP: flate2::Compression = flate2::Compression::fast();

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Tardis's CSV, gzip-compressed, with a `.gaps.json` sidecar for book types.
    Csv,
    /// Parquet (zstd), typed columns, gaps in the file's metadata.
    Parquet,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Csv, Format::Parquet];

    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// The file name's ending.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv.gz",
            Format::Parquet => "parquet",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = ExportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ExportError::UnknownFormat(s.to_owned()))
    }
}

/// A half-open time range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Range {
    /// `[from, to)`, refused when empty.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Self, ExportError> {
        if from >= to {
            return Err(ExportError::EmptyRange {
                from: from.to_rfc3339(),
                to: to.to_rfc3339(),
            });
        }
        Ok(Range { from, to })
    }
}

/// A collected instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    pub id: i32,
    pub venue: Venue,
    pub symbol: String,
}

/// The instrument `symbol` on `venue` (any case), if it was ever collected.
pub async fn instrument(
    client: &Client,
    venue: Venue,
    symbol: &str,
) -> Result<Instrument, ExportError> {
    let symbol = symbol.to_ascii_uppercase();
    let row = client
        .query_opt(
            "SELECT id FROM instruments WHERE venue = $1 AND symbol = $2",
            &[&venue.as_str(), &symbol],
        )
        .await?;
    match row {
        Some(r) => Ok(Instrument {
            id: r.get(0),
            venue,
            symbol,
        }),
        None => Err(ExportError::UnknownInstrument {
            venue: venue.as_str().to_owned(),
            symbol,
        }),
    }
}

/// The instruments of `venue` collected now, or with a book checkpoint inside `during` (written
/// at least every `--checkpoint-secs` while a symbol is collected), by symbol.
pub async fn collected_instruments(
    client: &Client,
    venue: Venue,
    during: Range,
) -> Result<Vec<Instrument>, ExportError> {
    let rows = client
        .query(
            "SELECT i.id, i.symbol FROM instruments i
             WHERE i.venue = $1
               AND (i.active OR EXISTS (SELECT 1 FROM book_checkpoints c
                                        WHERE c.instrument_id = i.id AND c.time >= $2 AND c.time < $3))
             ORDER BY i.symbol",
            &[&venue.as_str(), &during.from, &during.to],
        )
        .await?;
    Ok(instruments_of(&rows, venue))
}

/// The instruments of `venue` collected now, by symbol.
pub async fn active_instruments(
    client: &Client,
    venue: Venue,
) -> Result<Vec<Instrument>, ExportError> {
    let rows = client
        .query(
            "SELECT id, symbol FROM instruments WHERE venue = $1 AND active ORDER BY symbol",
            &[&venue.as_str()],
        )
        .await?;
    Ok(instruments_of(&rows, venue))
}

/// Rows of `(id, symbol)` as instruments of `venue`.
fn instruments_of(rows: &[tokio_postgres::Row], venue: Venue) -> Vec<Instrument> {
    rows.iter()
        .map(|r| Instrument {
            id: r.get(0),
            venue,
            symbol: r.get(1),
        })
        .collect()
}

/// What one export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// CSV rows, header excluded.
    pub rows: u64,
    /// Where the book is unknown inside the range (book data types only).
    pub gaps: Vec<Gap>,
    /// The books hold only their best N levels per side (the narrowest depth window of the
    /// range; book data types only); `None`: every level.
    pub depth_levels: Option<i32>,
}

/// Where CSV bytes go: a file or stdout (`Blocking`), or an HTTP response's bounded channel,
/// which waits for the client instead of buffering the export.
#[allow(
    async_fn_in_trait,
    reason = "used generically, never as a trait object"
)]
pub trait Out {
    async fn put(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

/// Any `Write`, written in place (files and stdout, where a short block is harmless).
#[derive(Debug)]
pub struct Blocking<W>(pub W);

impl<W: Write> Out for Blocking<W> {
    async fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)
    }
}

/// Writes `data_type` of `inst` over `range` as Tardis CSV (header first) to `out`.
pub async fn write_csv<W: Write>(
    client: &Client,
    inst: &Instrument,
    data_type: DataType,
    range: Range,
    out: &mut W,
) -> Result<Summary, ExportError> {
    stream_csv(client, inst, data_type, range, &mut Blocking(out)).await
}

/// Writes `data_type` of `inst` over `range` into `out` as a whole file of `format`: gzip CSV
/// or Parquet. Returns what was written and the writer, flushed by the encoder.
pub async fn write_file<W: Write + Send>(
    client: &Client,
    inst: &Instrument,
    data_type: DataType,
    range: Range,
    format: Format,
    out: W,
) -> Result<(Summary, W), ExportError> {
    match format {
        Format::Csv => {
            let mut gz = flate2::write::GzEncoder::new(out, GZIP);
            let summary = write_csv(client, inst, data_type, range, &mut gz).await?;
            Ok((summary, gz.finish()?))
        }
        Format::Parquet => {
            let mut pq = to_parquet::Transcoder::new(out, data_type)?;
            let summary = write_csv(client, inst, data_type, range, &mut pq).await?;
            let out = pq.close(range, &summary)?;
            Ok((summary, out))
        }
    }
}

/// `write_csv` into any `Out`.
pub async fn stream_csv<O: Out>(
    client: &Client,
    inst: &Instrument,
    data_type: DataType,
    range: Range,
    out: &mut O,
) -> Result<Summary, ExportError> {
    if !data_type.on(inst.venue) {
        return Err(ExportError::NotOnVenue {
            data_type: data_type.name(),
            venue: inst.venue.as_str(),
        });
    }
    archive::refuse_cold(client, data_type, range).await?;
    out.put(format!("{}\n", data_type.header()).as_bytes())
        .await?;
    let mut summary = Summary::default();
    if !data_type.is_book() {
        summary.rows = copy(client, &sql::table(inst, data_type, range), out).await?;
        return Ok(summary);
    }
    let plan = segments::plan(client, inst.id, range).await?;
    if data_type == DataType::IncrementalBookL2 {
        for seg in &plan.segments {
            summary.rows += copy(client, &sql::snapshot(inst, seg), out).await?;
            summary.rows += copy(client, &sql::updates(inst, seg, range), out).await?;
        }
    } else {
        summary.rows = copy(client, &sql::table(inst, data_type, range), out).await?;
    }
    summary.gaps = plan.gaps;
    summary.depth_levels = segments::depth_levels(client, inst.id, range).await?;
    Ok(summary)
}

/// Streams one query's rows as CSV into `out`; returns how many.
async fn copy<O: Out>(client: &Client, query: &str, out: &mut O) -> Result<u64, ExportError> {
    let stream = client
        .copy_out(&format!("COPY ({query}) TO STDOUT (FORMAT csv)"))
        .await?;
    pin_mut!(stream);
    let mut rows = 0;
    while let Some(chunk) = stream.try_next().await? {
        rows += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        out.put(&chunk).await?;
    }
    Ok(rows)
}
