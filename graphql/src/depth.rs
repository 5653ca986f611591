//! A query-depth limit that counts data fields only. async-graphql's own `limit_depth` counts
//! introspection too, and the standard introspection query (graphql-js, GraphiQL, gql,
//! schemathesis) nests `ofType` deeper than any data query here, so stock clients could not
//! load the schema. Introspection is answered from memory and its size is bounded by the
//! complexity limit, which still counts every field.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, Variables};

/// Refuses documents whose data fields nest deeper than `max`.
#[derive(Debug, Clone, Copy)]
pub struct DataDepth {
    pub max: usize,
}

impl ExtensionFactory for DataDepth {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for DataDepth {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let deepest = doc
            .operations
            .iter()
            .map(|(_, op)| depth(&doc, &op.node.selection_set.node, &mut HashSet::new()))
            .max()
            .unwrap_or(0);
        if deepest > self.max {
            return Err(ServerError::new(
                format!(
                    "Query is nested too deep: {deepest} levels of data fields, at most {}",
                    self.max
                ),
                None,
            ));
        }
        Ok(doc)
    }
}

/// Depth of `set` in data fields. Introspection fields (`__schema`, `__type`, `__typename`)
/// and what is under them do not count; `open` holds the fragments being expanded, so a
/// fragment cycle ends here (validation then reports it).
fn depth<'d>(
    doc: &'d ExecutableDocument,
    set: &'d SelectionSet,
    open: &mut HashSet<&'d str>,
) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(f) if f.node.name.node.starts_with("__") => 0,
            Selection::Field(f) => 1 + depth(doc, &f.node.selection_set.node, open),
            Selection::InlineFragment(i) => depth(doc, &i.node.selection_set.node, open),
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.as_str();
                let Some(fragment) = doc.fragments.get(name) else {
                    return 0;
                };
                if !open.insert(name) {
                    return 0;
                }
                let d = depth(doc, &fragment.node.selection_set.node, open);
                open.remove(name);
                d
            }
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deepest(q: &str) -> usize {
        let doc = async_graphql::parser::parse_query(q).expect("parses");
        doc.operations
            .iter()
            .map(|(_, op)| depth(&doc, &op.node.selection_set.node, &mut HashSet::new()))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn data_fields_count_through_fragments() {
        assert_eq!(deepest("{ a { b { c } } }"), 3);
        assert_eq!(
            deepest("query { a { ...F } } fragment F on T { b { ... on U { c { d } } } }"),
            4
        );
    }

    #[test]
    fn introspection_does_not_count() {
        let q = "{ a { __typename } __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }";
        assert_eq!(deepest(q), 1);
    }

    #[test]
    fn a_fragment_cycle_ends() {
        assert_eq!(
            deepest("{ a { ...F } } fragment F on T { b { ...G } } fragment G on T { c { ...F } }"),
            3
        );
    }
}
