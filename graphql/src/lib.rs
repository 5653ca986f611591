//! `graphql`: depthbook's API server. GraphQL queries and subscriptions (graphql-ws) at
//! `/graphql`, GraphiQL at `/`, REST compatibility routes `/data/{symbol}`, `/stats`,
//! `/health`, `/metrics`. Reads through a read-only role; live data from ingest's
//! LISTEN/NOTIFY (`live`).

pub mod api;
pub mod codes;
pub mod db;
pub mod depth;
pub mod download;
pub mod error;
pub mod input;
pub mod limits;
pub mod live;
pub mod paging;
pub mod playground;
pub mod query;
pub mod rest;
pub mod subscription;
pub mod types;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::{Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::api::ApiSchema;
use crate::db::Pool;
use crate::limits::Limits;

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
    /// Export downloads running at once, at most `max_exports`.
    pub exports: Arc<tokio::sync::Semaphore>,
    pub max_exports: usize,
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

async fn graphiql(State(s): State<AppState>) -> Response {
    playground::page(s.token.is_some())
}

/// The request carries the token: `Authorization: Bearer <token>`, or `?token=<token>` (a
/// WebSocket client that cannot set headers).
fn bearer_ok(token: &str, headers: &HeaderMap, uri: &Uri) -> bool {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token);
    header
        || uri.query().is_some_and(|q| {
            q.split('&')
                .any(|kv| kv.strip_prefix("token=") == Some(token))
        })
}

/// graphql-ws `connection_init` payload carries the token, as `{"Authorization": "Bearer
/// <token>"}` (GraphiQL sends its headers so; any case) or `{"token": "<token>"}`.
fn init_token_ok(token: &str, payload: &serde_json::Value) -> bool {
    let Some(fields) = payload.as_object() else {
        return false;
    };
    fields.iter().any(|(k, v)| {
        let v = v.as_str().unwrap_or_default();
        (k.eq_ignore_ascii_case("authorization") && v.strip_prefix("Bearer ") == Some(token))
            || (k == "token" && v == token)
    })
}

/// Subscriptions. With a token configured, a client proves it on the upgrade request or, as
/// browsers must, in `connection_init`; otherwise async-graphql closes the connection (code
/// 1002, the reason "missing or wrong bearer token").
async fn graphql_ws(
    State(s): State<AppState>,
    protocol: GraphQLProtocol,
    headers: HeaderMap,
    uri: Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = s.token.clone();
    let upgraded_with_token = token
        .as_deref()
        .is_none_or(|t| bearer_ok(t, &headers, &uri));
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, s.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let ok = upgraded_with_token
                        || token.as_deref().is_some_and(|t| init_token_ok(t, &payload));
                    if ok {
                        Ok(async_graphql::Data::default())
                    } else {
                        Err(async_graphql::Error::new("missing or wrong bearer token"))
                    }
                })
                .serve()
        })
}

async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        if !bearer_ok(token, req.headers(), req.uri()) {
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
    let auth = axum::middleware::from_fn_with_state(state.clone(), auth);
    let mut app = Router::new()
        .route("/", get(graphiql))
        .route("/playground/{file}", get(playground::asset))
        .route(
            "/graphql",
            get(graphiql).merge(post(graphql).route_layer(auth.clone())),
        )
        .route("/graphql/ws", get(graphql_ws))
        .route("/data/{symbol}", get(rest::data).route_layer(auth.clone()))
        .route(
            "/export/{type}/{symbol}",
            get(download::export).route_layer(auth.clone()),
        )
        .route("/stats", get(rest::stats).route_layer(auth))
        .route("/health", get(rest::health))
        .route("/metrics", get(rest::metrics))
        .fallback(rest::no_route)
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
