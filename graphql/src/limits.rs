//! The limits every request obeys, set at start (`graphql --max-page` …) or fixed here.

use std::time::Duration;

/// Limits every query obeys.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rows per page at most.
    pub max_page: i32,
    /// Widest `from`..`to` range.
    pub max_range: Duration,
    /// Deepest book.
    pub max_depth: i32,
}

/// Deepest nesting of data fields; the deepest the schema has is four (a connection's node's
/// levels), so this refuses only documents no client needs.
pub const MAX_DATA_DEPTH: usize = 8;
/// Fields in one document, introspection included (the standard introspection query has
/// about a hundred).
pub const MAX_COMPLEXITY: usize = 2_000;
