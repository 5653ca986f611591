//! The GraphQL schema assembled: queries, subscriptions, the limits every request
//! obeys and how our errors reach clients. The parts live in `types`, `paging`, `query` and
//! `subscription`.

use std::time::Duration;

use async_graphql::ErrorExtensions;

use crate::codes::ErrorCodes;
use crate::db::{ApiError, Pool};
use crate::depth::DataDepth;
use crate::live::Hub;
use crate::query::Query;
use crate::subscription::SubscriptionRoot;

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

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(if self.is_client() {
            self.to_string()
        } else {
            "internal error".to_owned()
        })
        .extend_with(|_, e| {
            e.set("code", self.graphql_code());
            e.set("reason", self.code());
        })
    }
}

pub(crate) fn err(e: ApiError) -> async_graphql::Error {
    e.extend()
}

/// Deepest nesting of data fields; the deepest the schema has is four (a connection's node's
/// levels), so this refuses only documents no client needs.
pub const MAX_DATA_DEPTH: usize = 8;
/// Fields in one document, introspection included (the standard introspection query has
/// about a hundred).
pub const MAX_COMPLEXITY: usize = 2_000;

pub type ApiSchema = async_graphql::Schema<Query, async_graphql::EmptyMutation, SubscriptionRoot>;

/// The schema with its limits: depth and complexity of queries, page size and range.
pub fn build(pool: Pool, hub: Hub, limits: Limits) -> ApiSchema {
    async_graphql::Schema::build(Query, async_graphql::EmptyMutation, SubscriptionRoot)
        .data(pool)
        .data(hub)
        .data(limits)
        .extension(ErrorCodes)
        .extension(DataDepth {
            max: MAX_DATA_DEPTH,
        })
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The SDL without data (for the committed `schema.graphql`).
pub fn sdl() -> String {
    async_graphql::Schema::build(Query, async_graphql::EmptyMutation, SubscriptionRoot)
        .finish()
        .sdl()
}
