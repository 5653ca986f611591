//! `graphql`: depthbook's API server. GraphQL queries and subscriptions (graphql-ws) at
//! `/graphql`, GraphiQL at `/`, REST compatibility routes `/data/{symbol}`, `/stats`,
//! `/health`, `/metrics`. Reads through a read-only role; live data from ingest's
//! LISTEN/NOTIFY (`live`).

pub mod db;
pub mod live;
pub mod rest;
pub mod schema;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::{Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::db::Pool;
use crate::schema::{ApiSchema, Limits};

/// Request metrics by operation.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry =
            Registry::new_custom(Some("depthbook_api".into()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests by operation and status"),
            &["operation", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("request_seconds", "Request latency by operation")
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("buckets")),
            &["operation"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique");
        registry
            .register(Box::new(latency.clone()))
            .expect("unique");
        Arc::new(Metrics {
            registry,
            requests,
            latency,
        })
    }

    pub fn observe(&self, op: &str, status: u16, started: Instant) {
        self.requests
            .with_label_values(&[op, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub schema: ApiSchema,
    pub pool: Pool,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// `Authorization: Bearer <token>` required on data routes when set.
    pub token: Option<String>,
    /// Data older than this makes `/health` report stale.
    pub fresh_within: Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.limits)
            .field("auth", &self.token.is_some())
            .finish()
    }
}

async fn graphql(State(s): State<AppState>, req: GraphQLRequest) -> GraphQLResponse {
    let started = Instant::now();
    let req = req.into_inner();
    let op = req
        .operation_name
        .clone()
        .unwrap_or_else(|| "graphql".into());
    let resp = s.schema.execute(req).await;
    s.metrics.observe(
        &format!("graphql:{op}"),
        if resp.errors.is_empty() { 200 } else { 400 },
        started,
    );
    resp.into()
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

async fn graphql_ws(
    State(s): State<AppState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| GraphQLWebSocket::new(socket, s.schema.clone(), protocol).serve())
}

async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t == token);
        // Browsers cannot set headers on WebSocket upgrades: accept the token as a query
        // parameter there too.
        let ok = ok
            || req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == format!("token={token}")));
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":"missing or wrong bearer token"}"#,
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// The whole HTTP surface. `cors`: allowed origins (`*` for any); empty: no CORS headers.
pub fn router(state: AppState, cors: &[String]) -> Router {
    let data = Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/data/{symbol}", get(rest::data))
        .route("/stats", get(rest::stats))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    let mut app = Router::new()
        .route("/", get(graphiql))
        .route("/health", get(rest::health))
        .route("/metrics", get(rest::metrics))
        .merge(data)
        .with_state(state);
    if !cors.is_empty() {
        let layer = tower_http::cors::CorsLayer::new()
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]);
        let layer = if cors.iter().any(|o| o == "*") {
            layer.allow_origin(tower_http::cors::Any)
        } else {
            layer.allow_origin(
                cors.iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect::<Vec<_>>(),
            )
        };
        app = app.layer(layer);
    }
    app
}
