//! The daily research set: a day's files (gzip CSV, Parquet or both) for every symbol collected that day, in a directory of
//! its own (`DIR/YYYY-MM-DD/`) with a `manifest.json` (file, rows, bytes, sha256, gaps), and
//! optionally copied to an S3-compatible bucket (DigitalOcean Spaces, AWS S3, MinIO). Running a
//! day again is safe: the manifest, saved after every file, says what is already done, and a
//! finished day (`complete`) is left alone.

use std::io::Read;
use std::path::{Path, PathBuf};

use binance::Venue;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::bucket::Bucket;
use crate::files::{day_range, gaps_name, write_day};
use crate::{tardis, DataType, ExportError, Format, Gap, Instrument};

/// What to write, and where.
#[derive(Debug)]
pub struct Daily {
    pub dir: PathBuf,
    pub venues: Vec<Venue>,
    /// Each venue gets the ones it has.
    pub types: Vec<DataType>,
    /// Each file in every one of these.
    pub formats: Vec<Format>,
    pub bucket: Option<Bucket>,
}

/// One file of a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub file: String,
    pub venue: String,
    pub symbol: String,
    pub data_type: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub gaps: Vec<Gap>,
    /// Copied to the bucket (with its sidecar).
    pub uploaded: bool,
}

/// A day's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub day: NaiveDate,
    /// Every file of the day is written (and uploaded, with a bucket).
    pub complete: bool,
    pub files: Vec<Entry>,
}

/// The manifest's file name inside a day's directory.
pub const MANIFEST: &str = "manifest.json";

fn load(path: &Path) -> Result<Option<Manifest>, ExportError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ExportError::Manifest(path.display().to_string(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Saved whole or not at all: a crash leaves the previous manifest.
fn save(path: &Path, m: &Manifest) -> Result<(), ExportError> {
    let tmp = path.with_extension("json.part");
    let text = serde_json::to_vec_pretty(m).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn sha256(path: &Path) -> Result<String, ExportError> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hash.finalize()));
        }
        hash.update(&buf[..n]);
    }
}

/// The manifest of `day` under `dir`, if that day was started.
pub fn manifest(dir: &Path, day: NaiveDate) -> Result<Option<Manifest>, ExportError> {
    load(&dir.join(day.format("%Y-%m-%d").to_string()).join(MANIFEST))
}

/// Writes (what is missing of) `day`; returns its manifest.
pub async fn run_day(
    client: &Client,
    daily: &Daily,
    day: NaiveDate,
) -> Result<Manifest, ExportError> {
    let dir = daily.dir.join(day.format("%Y-%m-%d").to_string());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(MANIFEST);
    let mut m = load(&path)?.unwrap_or(Manifest {
        day,
        complete: false,
        files: Vec::new(),
    });
    if m.complete {
        return Ok(m);
    }
    for &venue in &daily.venues {
        for inst in crate::collected_instruments(client, venue, day_range(day)).await? {
            for &t in daily.types.iter().filter(|t| t.on(venue)) {
                for &format in &daily.formats {
                    let name = tardis::file_name(venue, t, day, &inst.symbol, format);
                    if m.files
                        .iter()
                        .any(|e| e.file == name && (e.uploaded || daily.bucket.is_none()))
                    {
                        continue;
                    }
                    let entry = write_entry(client, daily, &inst, (t, format), day, &dir).await?;
                    m.files.retain(|e| e.file != name);
                    m.files.push(entry);
                    save(&path, &m)?;
                }
            }
        }
    }
    m.complete = true;
    save(&path, &m)?;
    if let Some(b) = &daily.bucket {
        b.upload(&path, &format!("{day}/{MANIFEST}")).await?;
    }
    Ok(m)
}

async fn write_entry(
    client: &Client,
    daily: &Daily,
    inst: &Instrument,
    (t, format): (DataType, Format),
    day: NaiveDate,
    dir: &Path,
) -> Result<Entry, ExportError> {
    let w = write_day(client, inst, t, (day, day_range(day)), format, dir).await?;
    let file = w
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(b) = &daily.bucket {
        b.upload(&w.path, &format!("{day}/{file}")).await?;
        if t.is_book() && format == Format::Csv {
            let sidecar = gaps_name(&file);
            b.upload(&dir.join(&sidecar), &format!("{day}/{sidecar}"))
                .await?;
        }
    }
    Ok(Entry {
        sha256: sha256(&w.path)?,
        file,
        venue: inst.venue.as_str().to_owned(),
        symbol: inst.symbol.clone(),
        data_type: t.name().to_owned(),
        rows: w.rows,
        bytes: w.bytes,
        gaps: w.gaps,
        uploaded: daily.bucket.is_some(),
    })
}
