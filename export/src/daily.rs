//! The daily research set: a day's files (gzip CSV, Parquet or both) for every symbol collected that day, in a directory of
//! its own (`DIR/YYYY-MM-DD/`) with a `manifest.json` (file, rows, bytes, sha256, gaps), and
//! optionally copied to an S3-compatible bucket (DigitalOcean Spaces, AWS S3, MinIO). Running a
//! day again is safe: the manifest, saved after every file, says what is already done, and a
//! finished day (`complete`) is left alone while it stays listed as archived. Every file is read
//! back and checked against the database (and its bucket copy against the local sha256) before
//! the day is listed in `archive_days`, which is what lets retention drop it (`archive`).

use std::io::Read;
use std::path::{Path, PathBuf};

use binance::Venue;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::archive::{self, Listing};
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
    /// With a bucket, keep the data files here too after the day is listed (otherwise only the
    /// manifest stays: the bucket holds the verified copy, and the disk holds the hot tier).
    pub keep_local: bool,
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
    /// Read back: its rows agree with the database's, and the bucket's copy with its sha256.
    #[serde(default)]
    pub verified: bool,
}

/// A day's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub day: NaiveDate,
    /// Every file of the day is written (and uploaded, with a bucket).
    pub complete: bool,
    /// The database's clock when the day's first file was started: rows committed later may
    /// be missing (`archive_days.exported_at`).
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    pub files: Vec<Entry>,
}

impl Manifest {
    fn new(day: NaiveDate) -> Self {
        Manifest {
            day,
            complete: false,
            started_at: None,
            files: Vec::new(),
        }
    }
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

/// Writes (what is missing of) `day`, verifies it and lists it as archived; returns its
/// manifest. A complete day that is no longer listed (rows reached it after its files were
/// started, or it predates verification) is written again from the start.
pub async fn run_day(
    client: &Client,
    daily: &Daily,
    day: NaiveDate,
) -> Result<Manifest, ExportError> {
    let dir = daily.dir.join(day.format("%Y-%m-%d").to_string());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(MANIFEST);
    let mut m = load(&path)?.unwrap_or_else(|| Manifest::new(day));
    let listable = listable(client, daily).await?;
    if m.complete {
        let listed = archive::listed(client, day).await?;
        if listable
            .iter()
            .all(|t| listed.iter().any(|l| l == t.name()))
        {
            return Ok(m);
        }
        // A day that has left the database, even in part, is never rewritten from what is left.
        for &t in &listable {
            archive::refuse_cold(client, t, day_range(day)).await?;
        }
        m = Manifest::new(day);
    }
    if m.started_at.is_none() {
        m.started_at = Some(archive::export_start(client).await?);
        save(&path, &m)?;
    }
    for &venue in &daily.venues {
        for inst in crate::collected_instruments(client, venue, day_range(day)).await? {
            for &t in daily.types.iter().filter(|t| t.on(venue)) {
                for &format in &daily.formats {
                    let name = tardis::file_name(venue, t, day, &inst.symbol, format);
                    if m.files.iter().any(|e| {
                        e.file == name && e.verified && (e.uploaded || daily.bucket.is_none())
                    }) {
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
    for t in listable {
        archive::list(client, &listing(daily, &m, t, &dir)).await?;
    }
    if daily.bucket.is_some() && !daily.keep_local {
        remove_local(&m, &dir)?;
    }
    Ok(m)
}

/// Deletes a listed day's data files and sidecars here; the manifest stays.
fn remove_local(m: &Manifest, dir: &Path) -> Result<(), ExportError> {
    for e in &m.files {
        for name in [e.file.clone(), gaps_name(&e.file)] {
            match std::fs::remove_file(dir.join(name)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The archived types this set can list: those it writes for every venue that has them.
async fn listable(client: &Client, daily: &Daily) -> Result<Vec<DataType>, ExportError> {
    let rows = client
        .query("SELECT DISTINCT venue FROM instruments", &[])
        .await?;
    let venues: Vec<Venue> = rows
        .iter()
        .filter_map(|r| {
            let v: String = r.get(0);
            [Venue::Spot, Venue::Usdm]
                .into_iter()
                .find(|d| d.as_str() == v)
        })
        .collect();
    Ok(archive::ARCHIVED
        .into_iter()
        .filter(|t| daily.types.contains(t))
        .filter(|t| {
            venues
                .iter()
                .filter(|v| t.on(**v))
                .all(|v| daily.venues.contains(v))
        })
        .collect())
}

fn listing(daily: &Daily, m: &Manifest, t: DataType, dir: &Path) -> Listing {
    let entries = m.files.iter().filter(|e| e.data_type == t.name());
    let first_format = daily.formats.first().copied().unwrap_or(Format::Csv);
    let rows: u64 = entries
        .clone()
        .filter(|e| e.file.ends_with(first_format.extension()))
        .map(|e| e.rows)
        .sum();
    let mut location = dir.display().to_string();
    if let Some(b) = &daily.bucket {
        location.push_str(&format!(
            " and {}/{}/",
            b.url().trim_end_matches('/'),
            m.day
        ));
    }
    Listing {
        data_type: t,
        day: m.day,
        files: i32::try_from(entries.count()).unwrap_or(i32::MAX),
        rows: i64::try_from(rows).unwrap_or(i64::MAX),
        location,
        exported_at: m.started_at.unwrap_or_default(),
    }
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
    archive::verify(client, inst, (t, format), day_range(day), &w).await?;
    let sha256 = sha256(&w.path)?;
    let file = w
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(b) = &daily.bucket {
        let key = format!("{day}/{file}");
        b.upload(&w.path, &key).await?;
        let stored = b.sha256(&key).await?;
        if stored != sha256 {
            return Err(ExportError::Verify(format!(
                "{}/{key}: the bucket holds sha256 {stored}, the file {sha256}",
                b.url()
            )));
        }
        if t.is_book() && format == Format::Csv {
            let sidecar = gaps_name(&file);
            b.upload(&dir.join(&sidecar), &format!("{day}/{sidecar}"))
                .await?;
        }
    }
    Ok(Entry {
        sha256,
        file,
        venue: inst.venue.as_str().to_owned(),
        symbol: inst.symbol.clone(),
        data_type: t.name().to_owned(),
        rows: w.rows,
        bytes: w.bytes,
        gaps: w.gaps,
        uploaded: daily.bucket.is_some(),
        verified: true,
    })
}
