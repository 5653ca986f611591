//! Export speed: `ingest export`, run as a user runs it (a child process), writing the nominal
//! run's depth of every spot symbol as Tardis `incremental_book_L2` gzip files, then as Parquet.
//! Rows and bytes per second, the exporter's CPU time and peak memory (its own only).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use tokio_postgres::Client;

#[derive(Debug, Clone, Default)]
pub struct Export {
    /// The time the exported rows span.
    pub span_secs: f64,
    pub files: usize,
    pub rows: u64,
    pub gz_bytes: u64,
    /// The busiest file's rows (the benchmark symbol).
    pub busiest_rows: u64,
    pub secs: f64,
    pub cpu_secs: f64,
    pub peak_rss: u64,
    /// The same over the first half of the range: memory does not grow with the range.
    pub half_rows: u64,
    pub half_peak_rss: u64,
    /// The whole range again as Parquet (`gz_bytes` is then the Parquet files' size).
    pub parquet: Option<Box<Export>>,
}

/// Waits for `pid` and returns its exit status, CPU seconds and peak RSS in bytes. The peak is
/// sampled from `/proc` (VmHWM of the program after its exec) while it runs: `wait4`'s
/// `ru_maxrss` would also count the harness's own memory, which the child carried until exec.
fn wait_with_rusage(pid: i32) -> Result<(i32, f64, u64)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut peak = 0;
    loop {
        // SAFETY: `pid` is our child, not yet waited for; both pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        if r != 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        peak = peak.max(crate::procstat::peak_rss(pid).unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((status, tv(ru.ru_utime) + tv(ru.ru_stime), peak))
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Exports every spot symbol; `busiest` is the symbol whose file is counted apart.
pub async fn run(
    db: &Client,
    url: &str,
    bin_dir: &Path,
    work: &Path,
    busiest: &str,
) -> Result<Export> {
    let row = db
        .query_one("SELECT min(time), max(time) FROM depth_updates", &[])
        .await?;
    let (from, to): (DateTime<Utc>, DateTime<Utc>) = (row.get(0), row.get(1));
    let to = to + chrono::TimeDelta::milliseconds(1);
    let middle = from + (to - from) / 2;
    let run =
        |dir: &str, to, format| once(url, bin_dir, work.join(dir), (from, to), format, busiest);
    let half = run("export-half", middle, "csv").await?;
    let mut whole = run("export", to, "csv").await?;
    whole.half_rows = half.rows;
    whole.half_peak_rss = half.peak_rss;
    whole.parquet = Some(Box::new(run("export-parquet", to, "parquet").await?));
    Ok(whole)
}

/// One `ingest export` over `[from, to)` in `format` into `out`.
async fn once(
    url: &str,
    bin_dir: &Path,
    out: std::path::PathBuf,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    format: &str,
    busiest: &str,
) -> Result<Export> {
    std::fs::create_dir_all(&out)?;
    let ext = if format == "parquet" {
        ".parquet"
    } else {
        ".csv.gz"
    };
    let listing = out.join("files.txt");
    let started = Instant::now();
    let child = std::process::Command::new(bin_dir.join("ingest"))
        .args(["export", "--venue", "spot", "--type", "incremental_book_L2"])
        .args(["--from", &rfc(from), "--to", &rfc(to), "--format", format])
        .arg("--out")
        .arg(&out)
        .env("DATABASE_URL", url)
        .stdout(std::fs::File::create(&listing)?)
        .spawn()
        .context("ingest export")?;
    let pid = child.id() as i32;
    let (status, cpu_secs, peak_rss) =
        tokio::task::spawn_blocking(move || wait_with_rusage(pid)).await??;
    let secs = started.elapsed().as_secs_f64();
    if status != 0 {
        bail!("ingest export exited with status {status}");
    }
    let mut e = Export {
        span_secs: (to - from).as_seconds_f64(),
        secs,
        cpu_secs,
        peak_rss,
        ..Default::default()
    };
    // One line per file: path, "N rows", "B bytes", "G gaps".
    for line in std::fs::read_to_string(&listing)?
        .lines()
        .filter(|l| l.contains(ext))
    {
        let f: Vec<&str> = line.split('\t').collect();
        let number = |i: usize| -> u64 {
            f.get(i)
                .and_then(|s| s.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        e.files += 1;
        e.rows += number(1);
        e.gz_bytes += number(2);
        if f[0].ends_with(&format!("_{busiest}{ext}")) {
            e.busiest_rows += number(1);
        }
    }
    Ok(e)
}
