//! The order book model: exact decimal prices, the snapshot + diff state machine's book,
//! top-N features and reconstruction (DESIGN §2, §4, §5).
//!
//! Not built yet: this crate is filled by the ingest issue. Until then it exports nothing, so
//! nothing can depend on it by mistake.
