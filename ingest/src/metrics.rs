//! Prometheus metrics and the `/metrics` + `/health` server.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric ingest exports (names prefixed `depthbook_ingest_`).
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub messages: IntCounterVec,
    pub bytes: IntCounterVec,
    pub parse_errors: IntCounterVec,
    pub gaps: IntCounterVec,
    pub resyncs: IntCounterVec,
    pub reconnects: IntCounterVec,
    pub stale_streams: IntCounterVec,
    pub books_synced: IntGaugeVec,
    pub book_synced: IntGaugeVec,
    pub symbols: IntGaugeVec,
    pub rest_weight_used: IntGaugeVec,
    pub rest_responses: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    pub batch_rows: HistogramVec,
    pub copy_seconds: HistogramVec,
    pub rows_written: IntCounterVec,
    pub spool_bytes: IntGaugeVec,
    pub spooled_batches: IntCounterVec,
    pub event_to_commit: Histogram,
    pub connections: IntGauge,
    pub dropped_rows: IntCounter,
    pub leases: LeaseMetrics,
    /// Bytes per market-data table (`storage_sizes()`), and before compression.
    pub storage_bytes: IntGaugeVec,
    pub storage_uncompressed_bytes: IntGaugeVec,
    pub retention: RetentionMetrics,
    /// The whole database, and the disk it may fill (0: not told).
    pub database_bytes: IntGauge,
    pub database_disk_bytes: IntGauge,
    /// Set by the writers' health probe.
    pub db_ok: AtomicBool,
    pub expected_books: AtomicUsize,
    /// What `/health` warns about (storage): set by the maintenance task.
    pub warnings: std::sync::Mutex<Vec<String>>,
    /// Where `/metrics` and `/health` listen (known once bound).
    pub http_addr: std::sync::OnceLock<std::net::SocketAddr>,
}

/// Registers each metric as it is made; the definitions are constants, so a failure is a bug.
struct Reg(Registry);

const VENUE: &[&str] = &["venue"];
const TABLE: &[&str] = &["table"];

impl Reg {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: prometheus::Result<M>) -> M {
        let m = m.expect("metric definitions are valid");
        self.0
            .register(Box::new(m.clone()))
            .expect("metric names are unique");
        m
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn event_to_commit(&self) -> Histogram {
        let buckets = exponential_buckets(0.005, 2.0, 14).expect("buckets");
        let opts = HistogramOpts::new("event_to_commit_seconds", "Exchange event time to commit");
        self.add(Histogram::with_opts(opts.buckets(buckets)))
    }

    /// Buckets `start · 2^k`, `n` of them.
    fn histogram(&self, name: &str, help: &str, start: f64, factor: f64, n: usize) -> HistogramVec {
        let buckets = exponential_buckets(start, factor, n).expect("buckets");
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.add(HistogramVec::new(opts, TABLE))
    }
}

/// Leases (`--shards`): shards held, takeovers, and what the fencing kept out.
#[derive(Debug)]
pub struct LeaseMetrics {
    pub held: IntGauge,
    pub takeovers: IntCounter,
    pub handovers: IntCounter,
    pub fenced_batches: IntCounterVec,
    pub fenced_rows: IntCounterVec,
    /// `--standby`: books synced for shards held elsewhere, and takeovers of them.
    pub standby_books: IntGaugeVec,
    pub promotions: IntCounterVec,
}

impl LeaseMetrics {
    fn new(r: &Reg) -> Self {
        LeaseMetrics {
            held: r.add(IntGauge::new(
                "leases_held",
                "Shard leases this collector holds",
            )),
            takeovers: r.add(IntCounter::new(
                "lease_takeovers_total",
                "Shard leases taken (each raises the shard's generation)",
            )),
            handovers: r.add(IntCounter::new(
                "lease_handovers_total",
                "Shard leases let go to a collector below its share",
            )),
            fenced_batches: r.counter(
                "fenced_batches_total",
                "Batches the database refused: a shard's lease had moved on",
                TABLE,
            ),
            fenced_rows: r.counter(
                "fenced_rows_total",
                "Rows not written because their shard's lease was lost",
                TABLE,
            ),
            standby_books: r.gauge(
                "standby_books",
                "Books synced for shards another collector holds (--standby)",
                VENUE,
            ),
            promotions: r.counter(
                "standby_promotions_total",
                "Standby books of shards taken over: their epoch continued, or restarted",
                &["how"],
            ),
        }
    }
}

/// Per table, from `retention_status()`: the hot tier and the verified cold one.
#[derive(Debug)]
pub struct RetentionMetrics {
    /// 1 while rows past their hot window wait for verified daily files.
    pub blocked: IntGaugeVec,
    /// Where the table's rows start after retention (Unix seconds; 0: nothing dropped).
    pub hot_from_seconds: IntGaugeVec,
    /// Everything older is in verified daily files (Unix seconds; 0: none).
    pub archived_before_seconds: IntGaugeVec,
}

impl RetentionMetrics {
    fn new(r: &Reg) -> Self {
        const RELATION: &[&str] = &["relation"];
        RetentionMetrics {
            blocked: r.gauge(
                "retention_blocked",
                "1 while rows past their retention wait for verified daily files",
                RELATION,
            ),
            hot_from_seconds: r.gauge(
                "hot_from_seconds",
                "Where the table's rows start after retention (Unix seconds; 0: nothing dropped)",
                RELATION,
            ),
            archived_before_seconds: r.gauge(
                "archived_before_seconds",
                "Everything older is in verified daily files (Unix seconds; 0: none)",
                RELATION,
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r =
            Reg(Registry::new_custom(Some("depthbook_ingest".into()), None).expect("valid prefix"));
        Arc::new(Metrics {
            messages: r.counter(
                "messages_total",
                "WebSocket messages received",
                &["venue", "stream"],
            ),
            bytes: r.counter(
                "bytes_total",
                "WebSocket bytes received",
                &["venue", "stream"],
            ),
            parse_errors: r.counter(
                "parse_errors_total",
                "Messages that could not be parsed",
                VENUE,
            ),
            gaps: r.counter("gaps_total", "Depth gaps detected", VENUE),
            resyncs: r.counter("resyncs_total", "Book resynchronisations started", VENUE),
            reconnects: r.counter(
                "reconnects_total",
                "WebSocket reconnects",
                &["venue", "reason"],
            ),
            stale_streams: r.counter(
                "stale_streams_total",
                "Connections silent past the watchdog",
                VENUE,
            ),
            books_synced: r.gauge("books_synced", "Books currently synced", VENUE),
            book_synced: r.gauge(
                "book_synced",
                "1 while a symbol's book is synced",
                &["venue", "symbol"],
            ),
            symbols: r.gauge("symbols", "Symbols collected", VENUE),
            rest_weight_used: r.gauge("rest_weight_used", "X-MBX-USED-WEIGHT-1M last seen", VENUE),
            rest_responses: r.counter(
                "rest_responses_total",
                "REST responses by status",
                &["venue", "status"],
            ),
            queue_depth: r.gauge("queue_depth", "Rows waiting per table writer", TABLE),
            batch_rows: r.histogram("batch_rows", "Rows per committed batch", 1.0, 4.0, 9),
            copy_seconds: r.histogram("copy_seconds", "COPY + commit latency", 0.0005, 2.0, 14),
            rows_written: r.counter("rows_written_total", "Rows committed", TABLE),
            spool_bytes: r.gauge("spool_bytes", "Bytes waiting in the disk spool", TABLE),
            spooled_batches: r.counter(
                "spooled_batches_total",
                "Batches written to the spool",
                TABLE,
            ),
            event_to_commit: r.event_to_commit(),
            connections: r.add(IntGauge::new("connections", "Open WebSocket connections")),
            dropped_rows: r.add(IntCounter::new(
                "dropped_rows_total",
                "Rows dropped at shutdown after the deadline",
            )),
            leases: LeaseMetrics::new(&r),
            storage_bytes: r.gauge("storage_bytes", "Bytes on disk per table", &["relation"]),
            storage_uncompressed_bytes: r.gauge(
                "storage_uncompressed_bytes",
                "Bytes per table before compression",
                &["relation"],
            ),
            retention: RetentionMetrics::new(&r),
            database_bytes: r.add(IntGauge::new("database_bytes", "pg_database_size")),
            database_disk_bytes: r.add(IntGauge::new(
                "database_disk_bytes",
                "The database's disk (--database-disk-gb; 0: unknown)",
            )),
            registry: r.0,
            db_ok: AtomicBool::new(false),
            expected_books: AtomicUsize::new(0),
            warnings: std::sync::Mutex::new(Vec::new()),
            http_addr: std::sync::OnceLock::new(),
        })
    }

    pub fn synced_books(&self) -> i64 {
        ["spot", "usdm"]
            .iter()
            .map(|v| self.books_synced.with_label_values(&[v]).get())
            .sum()
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let mut buf = Vec::new();
    if TextEncoder::new()
        .encode(&m.registry.gather(), &mut buf)
        .is_err()
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
    }
    (StatusCode::OK, String::from_utf8(buf).unwrap_or_default())
}

async fn health(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let db = m.db_ok.load(Ordering::Relaxed);
    let synced = m.synced_books();
    let expected = m.expected_books.load(Ordering::Relaxed) as i64;
    let ready = db && expected > 0 && synced >= expected;
    let warnings = m.warnings.lock().map(|w| w.clone()).unwrap_or_default();
    let body = serde_json::json!({
        "ready": ready,
        "database": db,
        "books_synced": synced,
        "books": expected,
        "warnings": warnings,
    })
    .to_string();
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

/// The storage warnings `/health` carries (they do not make ingest unready): tables whose rows
/// past retention wait for verified daily files, and a database over 90 % of its disk.
pub fn storage_warnings(blocked: &[String], database_bytes: i64, disk_bytes: i64) -> Vec<String> {
    let mut out: Vec<String> = blocked
        .iter()
        .map(|r| format!("{r}: rows past their retention wait for verified daily files (is `ingest daily` running and succeeding?)"))
        .collect();
    if disk_bytes > 0 && database_bytes * 10 > disk_bytes * 9 {
        out.push(format!(
            "the database takes {} % of its disk (DATABASE_DISK_GB)",
            database_bytes * 100 / disk_bytes
        ));
    }
    out
}

pub fn router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(m)
}

#[cfg(test)]
mod warning_tests {
    use super::storage_warnings;

    #[test]
    fn blocked_tables_and_a_nearly_full_disk_are_warned_about() {
        assert!(storage_warnings(&[], 80, 100).is_empty());
        assert!(storage_warnings(&[], 95, 0).is_empty(), "disk unknown");
        let w = storage_warnings(&["depth_updates".into()], 95, 100);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("depth_updates:"), "{w:?}");
        assert!(w[1].contains("95 %"), "{w:?}");
    }
}
