//! Day files: one file per venue, symbol, UTC day, data type and format, named as Tardis names
//! them. A gzip CSV of a book type has a `.gaps.json` sidecar; a Parquet file has its gaps in
//! its own metadata. A file appears only complete: it is written under a `.part` name and
//! renamed once flushed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate, NaiveTime};
use serde::Serialize;
use tokio_postgres::Client;

use crate::{tardis, write_file, DataType, ExportError, Format, Gap, Instrument, Range};

/// One file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub gaps: Vec<Gap>,
}

/// The UTC day `day` as a range.
pub fn day_range(day: NaiveDate) -> Range {
    let start = day.and_time(NaiveTime::MIN).and_utc();
    let end = day
        .checked_add_days(Days::new(1))
        .unwrap_or(day)
        .and_time(NaiveTime::MIN)
        .and_utc();
    Range {
        from: start,
        to: end,
    }
}

/// The UTC days `range` touches, each with the part of `range` inside it.
pub fn days(range: Range) -> Vec<(NaiveDate, Range)> {
    let mut out = Vec::new();
    let mut day = range.from.date_naive();
    loop {
        let whole = day_range(day);
        if whole.from >= range.to {
            break;
        }
        out.push((
            day,
            Range {
                from: whole.from.max(range.from),
                to: whole.to.min(range.to),
            },
        ));
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }
    out
}

#[derive(Serialize)]
struct Sidecar<'a> {
    file: &'a str,
    from: String,
    to: String,
    rows: u64,
    gaps: &'a [Gap],
    /// Levels per side the books hold (a depth window); null: every level.
    depth_levels: Option<i32>,
}

/// Writes `range` (inside `day`) of `inst` as `data_type` in `format` into `dir`.
pub async fn write_day(
    client: &Client,
    inst: &Instrument,
    data_type: DataType,
    (day, range): (NaiveDate, Range),
    format: Format,
    dir: &Path,
) -> Result<Written, ExportError> {
    let name = tardis::file_name(inst.venue, data_type, day, &inst.symbol, format);
    let path = dir.join(&name);
    let part = dir.join(format!("{name}.part"));
    let out = BufWriter::new(File::create(&part)?);
    let (summary, out) = write_file(client, inst, data_type, range, format, out).await?;
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.flush()?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    std::fs::rename(&part, &path)?;
    if data_type.is_book() && format == Format::Csv {
        let sidecar = Sidecar {
            file: &name,
            from: range.from.to_rfc3339(),
            to: range.to.to_rfc3339(),
            rows: summary.rows,
            gaps: &summary.gaps,
            depth_levels: summary.depth_levels,
        };
        let text = serde_json::to_vec_pretty(&sidecar).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(gaps_name(&name)), text)?;
    }
    Ok(Written {
        path,
        rows: summary.rows,
        bytes,
        gaps: summary.gaps,
    })
}

/// The data lines of a gzip CSV file written here, header skipped, as they are read.
pub(crate) fn csv_lines(
    path: &Path,
) -> Result<impl Iterator<Item = std::io::Result<String>>, ExportError> {
    use std::io::BufRead;
    let gz = flate2::read::MultiGzDecoder::new(File::open(path)?);
    let mut lines = std::io::BufReader::with_capacity(1 << 16, gz).lines();
    lines.next().transpose()?;
    Ok(lines)
}

/// The sidecar of a data file: `….csv.gz` → `….gaps.json`.
pub fn gaps_name(file: &str) -> String {
    format!("{}.gaps.json", file.trim_end_matches(".csv.gz"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_range_splits_at_utc_midnight() {
        let from = Utc
            .with_ymd_and_hms(2026, 11, 24, 22, 0, 0)
            .single()
            .expect("t");
        let to = Utc
            .with_ymd_and_hms(2026, 11, 26, 0, 0, 0)
            .single()
            .expect("t");
        let d = days(Range { from, to });
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].1.from, from);
        assert_eq!(
            d[0].1.to,
            Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0)
                .single()
                .expect("t")
        );
        assert_eq!(d[1].0, NaiveDate::from_ymd_opt(2026, 11, 25).expect("d"));
        assert_eq!(d[1].1.to, to);
    }

    #[test]
    fn the_sidecar_sits_beside_its_file() {
        assert_eq!(
            gaps_name("binance_incremental_book_L2_2026-11-25_BTCUSDT.csv.gz"),
            "binance_incremental_book_L2_2026-11-25_BTCUSDT.gaps.json"
        );
    }
}
