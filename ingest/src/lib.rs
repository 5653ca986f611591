//! `ingest`: collects Binance market data (spot and USD-M) into the schema of `schema`.
//!
//! Data flow: `feed` (WebSocket shards) reads frames and `decode` turns them into events;
//! depth events go to one `symbol` task per symbol (the `book` sync machine, snapshots via the
//! venue's tiered queue in `snapshots` over `rest_client`), everything else goes straight to
//! the `writer` as `row`s, which batches them per table into binary COPY (`copy`) with a
//! ledger, NOTIFY (`notify`) and a disk `spool`. `run` wires it together.

pub mod aggregates;
pub mod copy;
pub mod decode;
pub mod epochs;
pub mod feed;
pub mod follow;
pub mod hold;
pub mod lease;
pub mod metrics;
pub mod notify;
pub mod rest_client;
pub mod row;
pub mod run;
pub mod snapshots;
pub mod spool;
pub mod standby;
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
