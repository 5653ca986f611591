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
    /// Set by the writers' health probe.
    pub db_ok: AtomicBool,
    pub expected_books: AtomicUsize,
    /// Where `/metrics` and `/health` listen (known once bound).
    pub http_addr: std::sync::OnceLock<std::net::SocketAddr>,
}

macro_rules! reg {
    ($r:expr, $m:expr) => {{
        let m = $m.expect("metric definitions are valid");
        $r.register(Box::new(m.clone()))
            .expect("metric names are unique");
        m
    }};
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new_custom(Some("depthbook_ingest".into()), None).expect("valid prefix");
        let c = |n: &str, h: &str, l: &[&str]| IntCounterVec::new(Opts::new(n, h), l);
        let g = |n: &str, h: &str, l: &[&str]| IntGaugeVec::new(Opts::new(n, h), l);
        Arc::new(Metrics {
            messages: reg!(
                r,
                c(
                    "messages_total",
                    "WebSocket messages received",
                    &["venue", "stream"]
                )
            ),
            bytes: reg!(
                r,
                c(
                    "bytes_total",
                    "WebSocket bytes received",
                    &["venue", "stream"]
                )
            ),
            parse_errors: reg!(
                r,
                c(
                    "parse_errors_total",
                    "Messages that could not be parsed",
                    &["venue"]
                )
            ),
            gaps: reg!(r, c("gaps_total", "Depth gaps detected", &["venue"])),
            resyncs: reg!(
                r,
                c(
                    "resyncs_total",
                    "Book resynchronisations started",
                    &["venue"]
                )
            ),
            reconnects: reg!(
                r,
                c(
                    "reconnects_total",
                    "WebSocket reconnects",
                    &["venue", "reason"]
                )
            ),
            stale_streams: reg!(
                r,
                c(
                    "stale_streams_total",
                    "Connections silent past the watchdog",
                    &["venue"]
                )
            ),
            books_synced: reg!(r, g("books_synced", "Books currently synced", &["venue"])),
            book_synced: reg!(
                r,
                g(
                    "book_synced",
                    "1 while a symbol's book is synced",
                    &["venue", "symbol"]
                )
            ),
            symbols: reg!(r, g("symbols", "Symbols collected", &["venue"])),
            rest_weight_used: reg!(
                r,
                g(
                    "rest_weight_used",
                    "X-MBX-USED-WEIGHT-1M last seen",
                    &["venue"]
                )
            ),
            rest_responses: reg!(
                r,
                c(
                    "rest_responses_total",
                    "REST responses by status",
                    &["venue", "status"]
                )
            ),
            queue_depth: reg!(
                r,
                g("queue_depth", "Rows waiting per table writer", &["table"])
            ),
            batch_rows: reg!(
                r,
                HistogramVec::new(
                    HistogramOpts::new("batch_rows", "Rows per committed batch")
                        .buckets(exponential_buckets(1.0, 4.0, 9).expect("buckets")),
                    &["table"]
                )
            ),
            copy_seconds: reg!(
                r,
                HistogramVec::new(
                    HistogramOpts::new("copy_seconds", "COPY + commit latency")
                        .buckets(exponential_buckets(0.0005, 2.0, 14).expect("buckets")),
                    &["table"]
                )
            ),
            rows_written: reg!(r, c("rows_written_total", "Rows committed", &["table"])),
            spool_bytes: reg!(
                r,
                g("spool_bytes", "Bytes waiting in the disk spool", &["table"])
            ),
            spooled_batches: reg!(
                r,
                c(
                    "spooled_batches_total",
                    "Batches written to the spool",
                    &["table"]
                )
            ),
            event_to_commit: reg!(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("event_to_commit_seconds", "Exchange event time to commit")
                        .buckets(exponential_buckets(0.005, 2.0, 14).expect("buckets"))
                )
            ),
            connections: reg!(
                r,
                IntGauge::new("connections", "Open WebSocket connections")
            ),
            dropped_rows: reg!(
                r,
                IntCounter::new(
                    "dropped_rows_total",
                    "Rows dropped at shutdown after the deadline"
                )
            ),
            registry: r,
            db_ok: AtomicBool::new(false),
            expected_books: AtomicUsize::new(0),
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
    let body = format!(
        "{{\"ready\":{ready},\"database\":{db},\"books_synced\":{synced},\"books\":{expected}}}"
    );
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

pub fn router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(m)
}
