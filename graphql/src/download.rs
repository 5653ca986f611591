//! `GET /export/{type}/{symbol}?venue=&from=&to=[&format=csv|parquet]`: one range of one symbol
//! as a Tardis-format gzip CSV or as Parquet (the `export` crate), streamed: the body is encoded
//! as PostgreSQL produces it and sent through a small bounded channel, so memory stays bounded
//! (one Parquet row group at most) for a day of a busy book, and a slow client slows the export
//! instead of filling the server. At most `--max-exports` run at once: each holds a database
//! connection for as long as its client reads, and the pool is shared with every query.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use export::to_parquet::Transcoder;
use export::{DataType, Format, Instrument, Range, Summary};
use flate2::write::GzEncoder;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::error::ApiError;
use crate::rest::{error, parse_time, venue_param};
use crate::AppState;

/// Compressed bytes per message to the client.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight: with `CHUNK`, what one export may hold in memory.
const CHUNKS_IN_FLIGHT: usize = 8;

/// A checked request.
struct Job {
    inst: Instrument,
    data_type: DataType,
    range: Range,
    format: Format,
    file_name: String,
    /// Where the book is unknown in the range (book types), sent as headers before the body.
    gaps: Vec<export::Gap>,
    /// The books' depth window (book types), also a header: `Some(None)` is every level.
    depth_levels: Option<Option<i32>>,
}

async fn check(
    s: &AppState,
    data_type: &str,
    symbol: &str,
    q: &HashMap<String, String>,
) -> Result<Job, ApiError> {
    let data_type: DataType = data_type
        .parse()
        .map_err(|e: export::ExportError| ApiError::BadRequest(e.to_string()))?;
    let sym = crate::input::symbol(symbol)?;
    let venue = venue_param(q)?;
    let format = match q.get("format") {
        None => Format::Csv,
        Some(f) => f.parse().map_err(|e: export::ExportError| {
            ApiError::BadRequest(format!("{e} (csv: gzip, Tardis's columns)"))
        })?,
    };
    let venue_b = binance::Venue::from(venue);
    if !data_type.on(venue_b) {
        return Err(ApiError::BadRequest(format!(
            "{data_type} is not collected on {}",
            venue.as_str()
        )));
    }
    let (Some(from), Some(to)) = (parse_time(q, "from")?, parse_time(q, "to")?) else {
        return Err(ApiError::BadRequest(
            "give `from` and `to` (RFC 3339)".into(),
        ));
    };
    let r = crate::paging::range(&s.pool, &s.limits, symbol, venue, from, to, None).await?;
    let range = Range {
        from: r.from,
        to: r.to,
    };
    let conn = s.pool.get().await?;
    export::archive::refuse_cold(&conn, data_type, range).await?;
    let (gaps, depth_levels) = if data_type.is_book() {
        (
            export::segments::plan(&conn, r.iid, range).await?.gaps,
            Some(export::segments::depth_levels(&conn, r.iid, range).await?),
        )
    } else {
        (Vec::new(), None)
    };
    Ok(Job {
        gaps,
        depth_levels,
        file_name: export::tardis::file_name(venue_b, data_type, r.from.date_naive(), &sym, format),
        format,
        inst: Instrument {
            id: r.iid,
            venue: venue_b,
            symbol: sym,
        },
        data_type,
        range,
    })
}

/// An encoder writing into a `Vec` that is drained as it fills: gzip CSV, or Parquet (which
/// writes a row group at a time).
trait Encoding: Write + Send {
    fn output(&mut self) -> &mut Vec<u8>;
    /// Writes what the encoder still holds, and the file's end.
    fn end(&mut self, job: &Job, summary: &Summary) -> Result<(), export::ExportError>;
}

impl Encoding for GzEncoder<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }

    fn end(&mut self, _: &Job, _: &Summary) -> Result<(), export::ExportError> {
        Ok(self.try_finish()?)
    }
}

impl Encoding for Transcoder<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        Transcoder::output(self)
    }

    fn end(&mut self, job: &Job, summary: &Summary) -> Result<(), export::ExportError> {
        self.finish(job.range, summary)
    }
}

/// Encoded bytes, sent to the response body in `CHUNK`s; waits while the client is behind.
struct Channel<E> {
    enc: E,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
}

impl<E: Encoding> Channel<E> {
    async fn send(&mut self) -> std::io::Result<()> {
        let mut out = Bytes::from(std::mem::take(self.enc.output()));
        while !out.is_empty() {
            let chunk = out.split_to(out.len().min(CHUNK));
            self.tx
                .send(Ok(chunk))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        }
        Ok(())
    }
}

impl<E: Encoding> export::Out for Channel<E> {
    async fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.enc.write_all(bytes)?;
        if self.enc.output().len() >= CHUNK {
            self.send().await?;
        }
        Ok(())
    }
}

async fn produce<E: Encoding>(s: &AppState, job: &Job, enc: E, tx: Sender) -> Result<(), String> {
    let conn = s.pool.get().await.map_err(|e| e.to_string())?;
    let mut out = Channel { enc, tx };
    let summary = export::stream_csv(&conn, &job.inst, job.data_type, job.range, &mut out)
        .await
        .map_err(|e| e.to_string())?;
    out.enc.end(job, &summary).map_err(|e| e.to_string())?;
    out.send().await.map_err(|e| e.to_string())
}

type Sender = mpsc::Sender<std::io::Result<Bytes>>;

async fn encode(s: &AppState, job: &Job, tx: Sender) -> Result<(), String> {
    match job.format {
        Format::Csv => {
            let gz = GzEncoder::new(Vec::with_capacity(CHUNK), export::GZIP);
            produce(s, job, gz, tx).await
        }
        Format::Parquet => {
            let pq = Transcoder::new(Vec::with_capacity(CHUNK), job.data_type)
                .map_err(|e| e.to_string())?;
            produce(s, job, pq, tx).await
        }
    }
}

fn stream(s: AppState, job: Job, slot: OwnedSemaphorePermit) -> Response {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let file_name = job.file_name.clone();
    let gap_count = job.gaps.len().to_string();
    let depth_levels = job.depth_levels;
    let gap_list = serde_json::to_string(&job.gaps)
        .ok()
        .filter(|g| g.len() <= MAX_GAPS_HEADER);
    let content_type = match job.format {
        Format::Csv => "application/gzip",
        Format::Parquet => "application/vnd.apache.parquet",
    };
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(e) = encode(&s, &job, tx.clone()).await {
            // Headers are gone: ending the body with an error aborts the transfer, so the
            // client sees a broken download, never a short file that looks whole.
            tracing::warn!(error = %e, file = %job.file_name, "export aborted");
            let _ = tx.send(Err(std::io::Error::other(e))).await;
        }
    });
    let mut resp = (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
            (GAP_COUNT, gap_count),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response();
    if let Some(v) = gap_list.and_then(|g| header::HeaderValue::from_str(&g).ok()) {
        resp.headers_mut().insert(GAPS, v);
    }
    if let Some(levels) = depth_levels {
        let v = levels.map_or_else(|| "all".to_owned(), |n| n.to_string());
        if let Ok(v) = header::HeaderValue::from_str(&v) {
            resp.headers_mut().insert(DEPTH_LEVELS, v);
        }
    }
    resp
}

/// Gaps in the range, known before the body starts (the CSV's sidecar has no place in a
/// download): their count, and their list (the sidecar's JSON) unless it is too long for a
/// header, where Parquet's metadata or `ingest export` give it.
const GAP_COUNT: header::HeaderName = header::HeaderName::from_static("x-depthbook-gap-count");
const GAPS: header::HeaderName = header::HeaderName::from_static("x-depthbook-gaps");
/// The books' depth window (levels per side, or `all`), as in the sidecar and Parquet metadata.
const DEPTH_LEVELS: header::HeaderName =
    header::HeaderName::from_static("x-depthbook-depth-levels");
/// Longest gap list sent as a header; proxies and clients commonly refuse headers over 8 KiB.
const MAX_GAPS_HEADER: usize = 4096;

/// The 503 for a request that found every export slot taken: says when to come back.
fn busy(s: &AppState) -> Response {
    let mut resp = error(&ApiError::Busy(format!(
        "{} exports are running, the most this server allows (--max-exports); retry shortly",
        s.max_exports
    )));
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    resp
}

/// `GET /export/{type}/{symbol}`
pub async fn export(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let (Path((data_type, symbol)), Query(q)) = match (path, q) {
        (Ok(p), Ok(q)) => (p, q),
        (Err(e), _) => return error(&ApiError::BadRequest(e.body_text())),
        (_, Err(e)) => return error(&ApiError::BadRequest(e.body_text())),
    };
    let resp = match check(&s, &data_type, &symbol, &q).await {
        Ok(job) => match s.exports.clone().try_acquire_owned() {
            Ok(slot) => stream(s.clone(), job, slot),
            Err(_) => busy(&s),
        },
        Err(e) => error(&e),
    };
    s.metrics
        .observe("rest:export", resp.status().as_u16(), started);
    resp
}
