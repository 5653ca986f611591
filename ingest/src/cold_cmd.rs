//! `ingest cold-book`: the book at an instant from the daily files, for times that have left the
//! database (`book_at` calls them cold). Reads `DIR/YYYY-MM-DD/`'s `incremental_book_L2` file of
//! the symbol (gzip CSV, else Parquet), or fetches it from the bucket.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use binance::units::format_e8;
use binance::Venue;
use chrono::{DateTime, NaiveDate, Utc};
use export::files::gaps_name;
use export::{tardis, DataType, Format};

use crate::daily_cmd::BucketArgs;

#[derive(Debug, clap::Args)]
pub struct ColdBookArgs {
    /// spot or usdm.
    #[arg(long)]
    venue: String,
    #[arg(long)]
    symbol: String,
    /// The instant (RFC 3339, e.g. 2026-11-20T10:00:00Z).
    #[arg(long)]
    at: DateTime<Utc>,
    /// Levels per side.
    #[arg(long, default_value_t = 20)]
    depth: usize,
    /// The daily files' directory (DIR/YYYY-MM-DD/).
    #[arg(long, env = "DAILY_DIR", default_value = "./daily")]
    dir: PathBuf,
    #[command(flatten)]
    bucket: BucketArgs,
}

/// A symbol by Binance's rule (`binance::rules::is_symbol`, which admits no path separator): it
/// becomes part of a file name. A leading '.' is refused too, as no listing has one.
fn symbol(s: &str) -> Result<String> {
    let s = s.trim().to_uppercase();
    if !binance::rules::is_symbol(&s) || s.starts_with('.') {
        bail!(
            "{s:?} is not a symbol (1 to {} letters, digits, '-', '_' or '.')",
            binance::rules::MAX_SYMBOL_CHARS
        );
    }
    Ok(s)
}

/// The day's L2 file of `symbol`: here, or fetched from the bucket into `tmp`.
async fn find(
    a: &ColdBookArgs,
    (venue, day, symbol): (Venue, NaiveDate, &str),
    tmp: &Path,
) -> Result<PathBuf> {
    let names =
        Format::ALL.map(|f| tardis::file_name(venue, DataType::IncrementalBookL2, day, symbol, f));
    let here = a.dir.join(day.format("%Y-%m-%d").to_string());
    if let Some(p) = names.iter().map(|n| here.join(n)).find(|p| p.is_file()) {
        return Ok(p);
    }
    let Some(bucket) = a.bucket.open()? else {
        bail!(
            "no incremental_book_L2 file of {symbol} for {day} in {} (and no bucket given)",
            here.display()
        );
    };
    for (name, format) in names.iter().zip(Format::ALL) {
        let to = tmp.join(name);
        // Only a missing object means "try the other format": any other refusal is the answer.
        if !bucket.download(&format!("{day}/{name}"), &to).await? {
            continue;
        }
        if format == Format::Csv {
            let sidecar = gaps_name(name);
            let found = bucket
                .download(&format!("{day}/{sidecar}"), &tmp.join(&sidecar))
                .await?;
            if !found {
                bail!(
                    "{name} is in {} without its gap sidecar {sidecar}",
                    bucket.url()
                );
            }
        }
        return Ok(to);
    }
    bail!(
        "no incremental_book_L2 file of {symbol} for {day} in {} or {}",
        here.display(),
        bucket.url()
    )
}

pub async fn run(a: &ColdBookArgs) -> Result<()> {
    let venue = crate::export_cmd::venue(&a.venue)?;
    let symbol = symbol(&a.symbol)?;
    let tmp = tempfile::tempdir().context("a temporary directory")?;
    let path = find(a, (venue, a.at.date_naive(), &symbol), tmp.path()).await?;
    let book = export::cold::book_at(&path, a.at.timestamp_micros(), a.depth)?;
    let at = DateTime::from_timestamp_micros(book.as_of_us).unwrap_or_default();
    println!(
        "# {symbol} on {} at {}, from {} (last row {at})",
        venue.as_str(),
        a.at,
        path.display()
    );
    println!("side\tlevel\tprice\tqty");
    for (side, levels) in [("bid", &book.bids), ("ask", &book.asks)] {
        for (i, (p, q)) in levels.iter().enumerate() {
            println!(
                "{side}\t{}\t{}\t{}",
                i + 1,
                format_e8(*p, 0),
                format_e8(*q, 0)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_cannot_leave_the_directory() {
        assert_eq!(symbol(" btcusdt ").expect("a symbol"), "BTCUSDT");
        for bad in ["", "../etc", "A/B", ".HIDDEN", &"X".repeat(33)] {
            assert!(symbol(bad).is_err(), "{bad:?}");
        }
    }
}
