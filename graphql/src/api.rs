//! The GraphQL schema assembled: queries, subscriptions, and the extensions and limits every
//! request goes through. The parts live in `types`, `paging`, `query` and `subscription`.

use crate::codes::ErrorCodes;
use crate::db::Pool;
use crate::depth::DataDepth;
use crate::live::Hub;
use crate::query::Query;
use crate::subscription::SubscriptionRoot;

pub use crate::limits::{Limits, MAX_COMPLEXITY, MAX_DATA_DEPTH};

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
