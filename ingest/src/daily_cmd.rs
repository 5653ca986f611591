//! `ingest daily`: the daily research set. After each UTC midnight (plus a delay for late
//! rows), the previous day's Tardis-format files of every symbol collected that day go into
//! `DIR/YYYY-MM-DD/` with a manifest, and into a bucket when one is given; days since `--since`
//! (default: the first day the database still holds) that are not complete and listed as
//! archived are (re)done first. A listed day is what retention may drop. Metrics on
//! `--metrics-bind`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::routing::get;
use chrono::{NaiveDate, NaiveTime, TimeDelta, Utc};
use export::daily::{manifest, run_day, Daily};
use export::DataType;
use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};

#[derive(Debug, clap::Args)]
pub struct DailyArgs {
    /// Where the days go: DIR/YYYY-MM-DD/ with manifest.json.
    #[arg(long, env = "DAILY_DIR", default_value = "./daily")]
    out: PathBuf,
    #[command(flatten)]
    bucket: BucketArgs,
    #[arg(
        long,
        env = "DAILY_VENUES",
        value_delimiter = ',',
        default_value = "spot,usdm"
    )]
    venues: Vec<String>,
    /// Data types (default: every type of each venue).
    #[arg(
        long = "type",
        env = "DAILY_TYPES",
        value_delimiter = ',',
        value_name = "TYPE"
    )]
    types: Vec<String>,
    /// File formats, comma-separated: csv (gzip, Tardis's columns) and/or parquet.
    #[arg(
        long = "format",
        env = "DAILY_FORMATS",
        value_delimiter = ',',
        default_value = "csv"
    )]
    formats: Vec<export::Format>,
    /// First day to make sure of (default: the first day the database still holds in full).
    #[arg(long, env = "DAILY_SINCE")]
    since: Option<NaiveDate>,
    /// Seconds after UTC midnight before a day is written (rows still in flight).
    #[arg(long, env = "DAILY_DELAY_SECS", default_value_t = 600)]
    delay_secs: u64,
    /// With a bucket, also keep the data files in DIR once the day is verified and listed
    /// (default: only its manifest stays, the bucket holds the files).
    #[arg(long, env = "DAILY_KEEP_LOCAL")]
    keep_local: bool,
    /// Do the pending days once and exit (for cron, or by hand).
    #[arg(long)]
    once: bool,
    #[arg(long, env = "DAILY_METRICS_BIND", default_value = "0.0.0.0:9102")]
    metrics_bind: std::net::SocketAddr,
}

/// The daily files' bucket, shared by `daily` and `cold-book`.
#[derive(Debug, Clone, clap::Args)]
pub struct BucketArgs {
    /// The daily files' bucket: s3://bucket[/prefix] (empty: none).
    #[arg(long, env = "DAILY_BUCKET")]
    bucket: Option<String>,
    /// The bucket's S3 endpoint (DigitalOcean Spaces: https://<region>.digitaloceanspaces.com;
    /// empty: AWS, or AWS_ENDPOINT).
    #[arg(long, env = "DAILY_BUCKET_ENDPOINT")]
    bucket_endpoint: Option<String>,
    #[arg(long, env = "DAILY_BUCKET_REGION")]
    bucket_region: Option<String>,
    /// Access key (empty: AWS_ACCESS_KEY_ID).
    #[arg(long, env = "DAILY_BUCKET_KEY", hide_env_values = true)]
    bucket_key: Option<String>,
    /// Secret key (empty: AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "DAILY_BUCKET_SECRET", hide_env_values = true)]
    bucket_secret: Option<String>,
}

impl BucketArgs {
    /// The bucket, if one is set.
    pub fn open(&self) -> Result<Option<export::bucket::Bucket>> {
        let Some(url) = set(&self.bucket) else {
            return Ok(None);
        };
        let options = [
            ("aws_endpoint", set(&self.bucket_endpoint)),
            ("aws_region", set(&self.bucket_region)),
            ("aws_access_key_id", set(&self.bucket_key)),
            ("aws_secret_access_key", set(&self.bucket_secret)),
        ];
        let options = options.into_iter().filter_map(|(k, v)| v.map(|v| (k, v)));
        Ok(Some(export::bucket::Bucket::from_url_with(url, options)?))
    }
}

struct Metrics {
    registry: Registry,
    files: IntCounter,
    rows: IntCounter,
    bytes: IntCounter,
    failures: IntCounter,
    last_complete_day: IntGauge,
    last_run_seconds: IntGauge,
}

impl Metrics {
    fn new() -> Result<Self> {
        let registry = Registry::new_custom(Some("depthbook_daily".into()), None)?;
        let counter = |n: &str, h: &str| -> Result<IntCounter> {
            let c = IntCounter::new(n, h)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |n: &str, h: &str| -> Result<IntGauge> {
            let g = IntGauge::new(n, h)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(Metrics {
            files: counter("files_total", "files written")?,
            rows: counter("rows_total", "rows written")?,
            bytes: counter("bytes_total", "compressed bytes written")?,
            failures: counter(
                "failures_total",
                "days that failed (retried on the next run)",
            )?,
            last_complete_day: gauge(
                "last_complete_day_timestamp_seconds",
                "start (UTC midnight) of the newest complete day",
            )?,
            last_run_seconds: gauge("last_run_seconds", "how long the last day took")?,
            registry,
        })
    }

    fn text(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn daily(a: &DailyArgs) -> Result<Daily> {
    let venues = a
        .venues
        .iter()
        .map(|v| crate::export_cmd::venue(v))
        .collect::<Result<_>>()?;
    let types = if a.types.is_empty() {
        DataType::ALL.to_vec()
    } else {
        a.types
            .iter()
            .map(|t| t.trim().parse())
            .collect::<Result<_, _>>()?
    };
    Ok(Daily {
        dir: a.out.clone(),
        venues,
        types,
        formats: a.formats.clone(),
        bucket: a.bucket.open()?,
        keep_local: a.keep_local,
    })
}

/// A flag or variable that is set and not empty (compose passes unset ones as "").
fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.trim().is_empty())
}

/// The days from `since` (default yesterday) to yesterday.
fn pending(since: Option<NaiveDate>, today: NaiveDate) -> Vec<NaiveDate> {
    let Some(yesterday) = today.pred_opt() else {
        return Vec::new();
    };
    let first = since.unwrap_or(yesterday);
    first.iter_days().take_while(|d| *d <= yesterday).collect()
}

/// Runs the pending days; an error is counted and logged, and the day is retried next time.
async fn run_pending(url: &str, d: &Daily, since: Option<NaiveDate>, m: &Metrics) -> Result<()> {
    let (client, _conn) = pgconn::connect(url).await.context("connecting")?;
    let since = match since {
        Some(day) => Some(day),
        None => export::archive::first_hot_day(&client).await?,
    };
    for day in pending(since, Utc::now().date_naive()) {
        let midnight = day.and_time(NaiveTime::MIN).and_utc().timestamp();
        let before = manifest(&d.dir, day)?;
        if export::archive::is_cold(&client, day).await? {
            // Retention moved (part of) the day out: writing it now would lose what left.
            if before.as_ref().is_none_or(|b| !b.complete) {
                tracing::warn!(%day, "the day has left the database without complete files; not rewritten");
            }
            continue;
        }
        let done: usize = before.map_or(0, |b| b.files.len());
        let started = Instant::now();
        match run_day(&client, d, day).await {
            Ok(manifest) => {
                let fresh = manifest.files.iter().skip(done);
                m.files.inc_by(fresh.clone().count() as u64);
                m.rows.inc_by(fresh.clone().map(|e| e.rows).sum());
                m.bytes.inc_by(fresh.map(|e| e.bytes).sum());
                m.last_complete_day
                    .set(m.last_complete_day.get().max(midnight));
                m.last_run_seconds.set(started.elapsed().as_secs() as i64);
                tracing::info!(%day, files = manifest.files.len(), "daily set complete");
            }
            Err(e) => {
                m.failures.inc();
                tracing::error!(%day, error = %e, "daily set failed; retried on the next run");
                return Err(e.into());
            }
        }
    }
    Ok(())
}

pub async fn run(url: Option<&str>, a: &DailyArgs) -> Result<()> {
    let url = url.context("no database: pass --database-url or set DATABASE_URL")?;
    let d = daily(a)?;
    let m = std::sync::Arc::new(Metrics::new()?);
    if a.once {
        return run_pending(url, &d, a.since, &m).await;
    }
    let listener = tokio::net::TcpListener::bind(a.metrics_bind)
        .await
        .with_context(|| format!("binding {}", a.metrics_bind))?;
    let served = m.clone();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = served.clone();
            async move { m.text() }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    loop {
        let _ = run_pending(url, &d, a.since, &m).await;
        let now = Utc::now();
        let next = (now.date_naive() + TimeDelta::days(1))
            .and_time(NaiveTime::MIN)
            .and_utc()
            + TimeDelta::seconds(a.delay_secs as i64);
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_days_run_from_since_to_yesterday() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        assert_eq!(pending(None, d("2026-11-27")), vec![d("2026-11-26")]);
        assert_eq!(
            pending(Some(d("2026-11-24")), d("2026-11-27")),
            vec![d("2026-11-24"), d("2026-11-25"), d("2026-11-26")]
        );
        assert!(pending(Some(d("2026-11-27")), d("2026-11-27")).is_empty());
    }
}
