//! `GET /export/{type}/{symbol}?venue=&from=&to=[&format=csv]`: one range of one symbol as a
//! Tardis-format gzip CSV (the `export` crate), streamed: the body is compressed as PostgreSQL
//! produces it and sent through a small bounded channel, so memory stays flat for a day of a
//! busy book and a slow client slows the export instead of filling the server.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use export::{DataType, Instrument, Range};
use flate2::write::GzEncoder;
use tokio::sync::mpsc;

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
    file_name: String,
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
    match q.get("format").map(String::as_str) {
        None | Some("csv") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?} is not served: use csv (gzip, Tardis's columns)"
            )))
        }
    }
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
    Ok(Job {
        file_name: export::tardis::file_name(venue_b, data_type, r.from.date_naive(), &sym),
        inst: Instrument {
            id: r.iid,
            venue: venue_b,
            symbol: sym,
        },
        data_type,
        range: Range {
            from: r.from,
            to: r.to,
        },
    })
}

/// Gzip into chunks sent to the response body; waits while the client is behind.
struct GzipChannel {
    gz: GzEncoder<Vec<u8>>,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
}

impl GzipChannel {
    async fn send(&mut self) -> std::io::Result<()> {
        let chunk = std::mem::take(self.gz.get_mut());
        self.tx
            .send(Ok(Bytes::from(chunk)))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }

    async fn finish(mut self) -> std::io::Result<()> {
        self.gz.try_finish()?;
        self.send().await
    }
}

impl export::Out for GzipChannel {
    async fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.gz.write_all(bytes)?;
        if self.gz.get_ref().len() >= CHUNK {
            self.send().await?;
        }
        Ok(())
    }
}

async fn produce(s: &AppState, job: &Job, out: GzipChannel) -> Result<(), String> {
    let conn = s.pool.get().await.map_err(|e| e.to_string())?;
    let mut out = out;
    export::stream_csv(&conn, &job.inst, job.data_type, job.range, &mut out)
        .await
        .map_err(|e| e.to_string())?;
    out.finish().await.map_err(|e| e.to_string())
}

fn stream(s: AppState, job: Job) -> Response {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let file_name = job.file_name.clone();
    tokio::spawn(async move {
        let out = GzipChannel {
            gz: GzEncoder::new(Vec::with_capacity(CHUNK), export::GZIP),
            tx: tx.clone(),
        };
        if let Err(e) = produce(&s, &job, out).await {
            // Headers are gone: ending the body with an error aborts the transfer, so the
            // client sees a broken download, never a short file that looks whole.
            tracing::warn!(error = %e, file = %job.file_name, "export aborted");
            let _ = tx.send(Err(std::io::Error::other(e))).await;
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
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
        Ok(job) => stream(s.clone(), job),
        Err(e) => error(&e),
    };
    s.metrics
        .observe("rest:export", resp.status().as_u16(), started);
    resp
}
