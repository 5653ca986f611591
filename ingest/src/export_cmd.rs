//! `ingest export`: stored data out as Tardis-format CSV or as Parquet (the `export` crate), one
//! file per venue, symbol, UTC day and data type into a directory, or one stream to stdout
//! (plain CSV, or a Parquet file).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use binance::Venue;
use chrono::{DateTime, Days, NaiveDate, Utc};
use export::{files, DataType, Format, Instrument, Range};
use tokio_postgres::Client;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// spot or usdm.
    #[arg(long)]
    venue: String,
    /// Symbols, comma-separated; omit for every symbol collected now.
    #[arg(long, value_delimiter = ',')]
    symbols: Vec<String>,
    /// Data types, comma-separated: incremental_book_L2, book_snapshot_25, book_snapshot_5,
    /// quotes, trades, derivative_ticker (USD-M only). Omit for every type of the venue.
    #[arg(long = "type", value_delimiter = ',', value_name = "TYPE")]
    types: Vec<String>,
    /// One UTC day: YYYY-MM-DD, `yesterday` or `today`.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    day: Option<String>,
    /// Range start: YYYY-MM-DD (UTC midnight) or RFC 3339.
    #[arg(long, required_unless_present = "day")]
    from: Option<String>,
    /// Range end, exclusive (default: a day after --from).
    #[arg(long)]
    to: Option<String>,
    /// csv (gzip, Tardis's columns) or parquet (the same columns typed: exact decimals, UTC
    /// microsecond timestamps).
    #[arg(long, default_value = "csv")]
    format: Format,
    /// A directory (files named as Tardis names them, made if missing), or `-` for one stream
    /// on stdout (one symbol and one type; CSV is not compressed there).
    #[arg(long, default_value = ".")]
    out: String,
}

/// Parses YYYY-MM-DD (UTC midnight) or RFC 3339.
fn instant(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(files::day_range(d).from);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("{s:?} is neither YYYY-MM-DD nor an RFC 3339 time"))
}

fn range(a: &ExportArgs, now: DateTime<Utc>) -> Result<Range> {
    if let Some(day) = &a.day {
        let today = now.date_naive();
        let d = match day.as_str() {
            "today" => today,
            "yesterday" => today.pred_opt().context("no day before")?,
            other => NaiveDate::parse_from_str(other, "%Y-%m-%d")
                .with_context(|| format!("--day {other:?}: use YYYY-MM-DD, yesterday or today"))?,
        };
        return Ok(files::day_range(d));
    }
    let from = instant(a.from.as_deref().context("--from or --day is required")?)?;
    let to = match &a.to {
        Some(t) => instant(t)?,
        None => from
            .checked_add_days(Days::new(1))
            .context("--from too late")?,
    };
    Ok(Range::new(from, to)?)
}

/// A venue as the command line names it (`spot`, `usdm`).
pub fn venue(s: &str) -> Result<Venue> {
    match s.trim() {
        "spot" => Ok(Venue::Spot),
        "usdm" => Ok(Venue::Usdm),
        other => bail!("unknown venue {other:?}: use spot or usdm"),
    }
}

fn types(a: &ExportArgs, venue: Venue) -> Result<Vec<DataType>> {
    if a.types.is_empty() {
        return Ok(DataType::ALL.into_iter().filter(|t| t.on(venue)).collect());
    }
    let mut out = Vec::new();
    for t in &a.types {
        let t: DataType = t.trim().parse()?;
        if !t.on(venue) {
            bail!("{t} is not collected on {}", venue.as_str());
        }
        out.push(t);
    }
    Ok(out)
}

async fn instruments(client: &Client, a: &ExportArgs, venue: Venue) -> Result<Vec<Instrument>> {
    if a.symbols.is_empty() {
        return Ok(export::active_instruments(client, venue).await?);
    }
    let mut out = Vec::new();
    for s in a.symbols.iter().filter(|s| !s.trim().is_empty()) {
        out.push(export::instrument(client, venue, s.trim()).await?);
    }
    Ok(out)
}

pub async fn run(client: &Client, a: &ExportArgs) -> Result<()> {
    let venue = venue(&a.venue)?;
    let range = range(a, Utc::now())?;
    let types = types(a, venue)?;
    let instruments = instruments(client, a, venue).await?;
    if a.out == "-" {
        let ([inst], [t]) = (instruments.as_slice(), types.as_slice()) else {
            bail!("--out - writes one stream (CSV or Parquet): give one --symbols and one --type");
        };
        // Not `lock()`: the Parquet writer needs a writer it may send between threads.
        let mut out = std::io::BufWriter::new(std::io::stdout());
        let summary = match a.format {
            Format::Csv => export::write_csv(client, inst, *t, range, &mut out).await?,
            Format::Parquet => {
                let (summary, _) =
                    export::write_file(client, inst, *t, range, a.format, &mut out).await?;
                summary
            }
        };
        out.flush()?;
        for g in &summary.gaps {
            eprintln!("gap {} .. {} ({})", g.from, g.to, g.kind);
        }
        if let Some(n) = summary.depth_levels {
            eprintln!("depth window: the books hold their best {n} levels per side");
        }
        return Ok(());
    }
    let dir = PathBuf::from(&a.out);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for inst in &instruments {
        for &t in &types {
            for day in files::days(range) {
                let w = files::write_day(client, inst, t, day, a.format, &dir).await?;
                println!(
                    "{}\t{} rows\t{} bytes\t{} gaps",
                    w.path.display(),
                    w.rows,
                    w.bytes,
                    w.gaps.len()
                );
            }
        }
    }
    Ok(())
}
