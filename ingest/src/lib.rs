//! `ingest`: collects Binance market data (spot and USD-M) into the schema of `schema`.
//!
//! Data flow: `feed` (WebSocket shards) parses messages; depth events go to one `symbol` task
//! per symbol (the `book` sync machine, snapshots via the venue's tiered `SnapshotQueue` over
//! `rest`), everything else goes straight to the `writer`, which batches rows per table into
//! binary COPY (`copy`) with a ledger and a disk spool. `run` wires it together.

pub mod copy;
pub mod feed;
pub mod metrics;
pub mod notify;
pub mod rest;
pub mod run;
pub mod symbol;
pub mod universe;
pub mod venue;
pub mod writer;

/// What a connection hands to a symbol task.
#[derive(Debug)]
pub enum FeedMsg {
    /// A parsed depth event and its local receive time (Unix ms).
    Depth(book::sync::DepthEvent, u64),
    /// The connection carrying the symbol's depth stream dropped.
    Disconnected(&'static str),
}

/// The collector's clock, Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
