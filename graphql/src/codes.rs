//! Every GraphQL error carries `extensions.code` in Apollo Server's vocabulary, so a client (and
//! a tool such as schemathesis) can tell its own mistake from server trouble. Ours set it
//! already (`ApiError`); async-graphql's do not: a document that fails validation (no `path`) is
//! `GRAPHQL_VALIDATION_FAILED`, an argument that fails to parse where the resolver reads it
//! (an inline `first: 99999999999`) is `BAD_USER_INPUT`. Anything else uncoded is a bug, and says
//! so: `INTERNAL_SERVER_ERROR`, which the property tests would catch.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe,
};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::futures_util::StreamExt;
use async_graphql::{Response, ServerError};

#[derive(Debug, Clone, Copy)]
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

/// The code async-graphql left out, by the kind of error.
fn code_for(e: &ServerError) -> &'static str {
    if e.path.is_empty() {
        "GRAPHQL_VALIDATION_FAILED"
    } else if e.message.starts_with("Failed to parse") || e.message.starts_with("Invalid value") {
        "BAD_USER_INPUT"
    } else {
        "INTERNAL_SERVER_ERROR"
    }
}

fn with_codes(mut resp: Response) -> Response {
    for e in &mut resp.errors {
        if e.extensions.as_ref().and_then(|x| x.get("code")).is_none() {
            let code = code_for(e);
            e.extensions
                .get_or_insert_with(Default::default)
                .set("code", code);
        }
    }
    resp
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        with_codes(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(with_codes).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    struct Query;

    #[Object]
    impl Query {
        async fn page(&self, first: i32) -> i32 {
            first
        }
    }

    async fn codes(q: &str) -> Vec<String> {
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(ErrorCodes)
            .finish();
        let resp = schema.execute(q).await;
        resp.errors
            .iter()
            .map(|e| {
                let v = e.extensions.as_ref().and_then(|x| x.get("code"));
                v.map(|c| c.to_string()).unwrap_or_default()
            })
            .collect()
    }

    #[tokio::test]
    async fn async_graphql_errors_get_codes() {
        assert_eq!(
            codes("{ page(first: 99999999999) }").await,
            ["\"BAD_USER_INPUT\""]
        );
        assert_eq!(codes("{ nope }").await, ["\"GRAPHQL_VALIDATION_FAILED\""]);
        assert!(codes("{ page(first: 1) }").await.is_empty());
    }
}
