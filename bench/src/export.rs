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
    /// One busy symbol's long range (synthetic rows, `seed_busy`), as CSV and as Parquet.
    pub busy_csv: Option<Box<Export>>,
    pub busy_parquet: Option<Box<Export>>,
}

/// The synthetic busy symbol.
pub const BUSY: &str = "BUSYUSDT";

/// A busy book's rows for `BUSY`: a 1 000-level snapshot, then `rows` level changes, ten per
/// 1 ms event (Binance's busiest books change ≈ 1 300 levels a second, in bursts), a day before
/// now so retention keeps them. Returns the range they span.
async fn seed_busy(db: &Client, rows: i64) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let t0: DateTime<Utc> = db
        .query_one("SELECT date_trunc('hour', now()) - interval '1 day'", &[])
        .await?
        .get(0);
    let levels = |from: &str, step: &str| {
        format!("(SELECT array_agg(({from} + g * {step})::numeric ORDER BY g) FROM generate_series(1, 1000) g)")
    };
    let sql = format!(
        "INSERT INTO instruments (venue, symbol, base, quote, status, tick_size, step_size)
         VALUES ('spot', '{BUSY}', 'BUSY', 'USDT', 'TRADING', 0.01, 0.00001);
         INSERT INTO book_checkpoints (time, instrument_id, epoch, update_id, kind, bid_prices,
                                       bid_qtys, ask_prices, ask_qtys, received_at)
         SELECT $t0$, id, nextval('sync_epochs'), 0, 'snapshot', {}, {}, {}, {}, $t0$
         FROM instruments WHERE symbol = '{BUSY}';
         INSERT INTO depth_updates (time, instrument_id, first_update_id, update_id, side, price,
                                    qty, received_at)
         SELECT $t0$ + (g / 10 + 1) * interval '1 ms', i.id, g / 10 + 1, g / 10 + 1,
                CASE WHEN g % 2 = 0 THEN 'bid' ELSE 'ask' END,
                CASE WHEN g % 2 = 0 THEN 90000 - (g % 1000) / 100.0 ELSE 90000.01 + (g % 1000) / 100.0 END,
                (g * 7) % 10000 / 10000.0, $t0$ + (g / 10 + 4) * interval '1 ms'
         FROM instruments i, generate_series(0, {} - 1) g WHERE i.symbol = '{BUSY}';
         ANALYZE depth_updates;",
        levels("90000", "-0.01"),
        levels("0", "0.001"),
        levels("90000.01", "0.01"),
        levels("0", "0.001"),
        rows,
    )
    .replace("$t0$", &format!("'{}'::timestamptz", rfc(t0)));
    db.batch_execute(&sql).await?;
    let end = t0 + chrono::TimeDelta::milliseconds(rows / 10 + 1000);
    Ok((t0, end))
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

/// Exports every spot symbol (`busiest` is the symbol whose file is counted apart), then one
/// busy symbol of `busy_rows` synthetic level changes.
pub async fn run(
    db: &Client,
    url: &str,
    (bin_dir, work): (&Path, &Path),
    busiest: &str,
    busy_rows: i64,
) -> Result<Export> {
    let row = db
        .query_one("SELECT min(time), max(time) FROM depth_updates", &[])
        .await?;
    let (from, to): (DateTime<Utc>, DateTime<Utc>) = (row.get(0), row.get(1));
    let to = to + chrono::TimeDelta::milliseconds(1);
    let middle = from + (to - from) / 2;
    let all = Symbols::All(busiest);
    let run = |dir: &str, to, format| once(url, bin_dir, work.join(dir), (from, to), format, all);
    let half = run("export-half", middle, "csv").await?;
    let mut whole = run("export", to, "csv").await?;
    whole.half_rows = half.rows;
    whole.half_peak_rss = half.peak_rss;
    whole.parquet = Some(Box::new(run("export-parquet", to, "parquet").await?));
    let busy = seed_busy(db, busy_rows).await?;
    let one = |dir: &str, format| {
        once(
            url,
            bin_dir,
            work.join(dir),
            busy,
            format,
            Symbols::One(BUSY),
        )
    };
    whole.busy_csv = Some(Box::new(one("export-busy", "csv").await?));
    whole.busy_parquet = Some(Box::new(one("export-busy-parquet", "parquet").await?));
    Ok(whole)
}

/// What one export takes: every active spot symbol (one of them counted apart), or one symbol.
#[derive(Debug, Clone, Copy)]
enum Symbols<'a> {
    All(&'a str),
    One(&'a str),
}

/// One `ingest export` over `[from, to)` in `format` into `out`.
async fn once(
    url: &str,
    bin_dir: &Path,
    out: std::path::PathBuf,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    format: &str,
    symbols: Symbols<'_>,
) -> Result<Export> {
    let busiest = match symbols {
        Symbols::All(s) | Symbols::One(s) => s,
    };
    std::fs::create_dir_all(&out)?;
    let ext = if format == "parquet" {
        ".parquet"
    } else {
        ".csv.gz"
    };
    let listing = out.join("files.txt");
    let started = Instant::now();
    let mut cmd = std::process::Command::new(bin_dir.join("ingest"));
    cmd.args(["export", "--venue", "spot", "--type", "incremental_book_L2"]);
    if let Symbols::One(s) = symbols {
        cmd.args(["--symbols", s]);
    }
    let child = cmd
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
