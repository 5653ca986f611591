//! What the API tests share: a database filled by ingest from the simulator, an API server on
//! it reading through the read-only role, and small GraphQL helpers.
#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use binance::Venue as BVenue;
use graphql::api::Limits;
use graphql::{live::Hub, AppState, Metrics};
use sim::{Sim, SimConfig, VenueConfig};
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

fn venue(v: BVenue) -> VenueConfig {
    let mut c = VenueConfig::for_venue(v);
    c.symbols = 3;
    c.levels = 200;
    c.depth_interval = Duration::from_millis(20);
    c.changes_per_event = 5.0;
    c
}

pub struct Env {
    pub _sim: Sim,
    pub _db: pgembed::TestDatabase,
    pub admin: Client,
    /// The API without a token.
    pub base: String,
    /// The database as the API's read-only role.
    pub reader_url: String,
    pub stop: CancellationToken,
    pub run: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start_api(reader_url: &str, token: Option<String>) -> String {
    start_api_with(reader_url, token, 2).await
}

/// `start_api` with at most `max_exports` export downloads at once.
pub async fn start_api_with(reader_url: &str, token: Option<String>, max_exports: usize) -> String {
    start_api_on(reader_url, reader_url, token, max_exports).await
}

/// The API as `graphql --database-url LISTEN_URL --read-database-url READ_URL` runs it: the
/// live hub LISTENs on `listen_url`, every query reads `read_url`.
pub async fn start_api_on(
    listen_url: &str,
    read_url: &str,
    token: Option<String>,
    max_exports: usize,
) -> String {
    let manager = pgconn::manager(read_url).expect("url");
    let pool = bb8::Pool::builder()
        .max_size(8)
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(manager);
    let hub = Hub::default();
    tokio::spawn(hub.clone().run(listen_url.to_owned()));
    let limits = Limits {
        max_page: 1000,
        max_range: Duration::from_secs(86_400),
        max_depth: 5000,
    };
    let state = AppState {
        schema: graphql::api::build(pool.clone(), hub, limits.clone()),
        pool,
        limits,
        metrics: Metrics::new(),
        token,
        fresh_within: Duration::from_secs(60),
        exports: std::sync::Arc::new(tokio::sync::Semaphore::new(max_exports)),
        max_exports,
    };
    let app = graphql::router(state, &["*".to_owned()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The depth window of the fixture's symbols (all in the critical tier): the API serves
/// windowed books like any other, and says so.
pub const WINDOW: i32 = 40;

/// Ingest on both simulated venues, top 3 USDT symbols each keeping their best `WINDOW`
/// levels, batches flushed every 50 ms.
fn ingest_config(
    database_url: &str,
    s: &sim::VenueHandle,
    u: &sim::VenueHandle,
) -> ingest::run::RunConfig {
    let spool = tempfile::tempdir().expect("spool").keep();
    ingest::run::RunConfig {
        database_url: database_url.to_owned(),
        venues: vec![BVenue::Spot, BVenue::Usdm],
        spot_rest: s.rest_url(),
        spot_ws: s.ws_url(),
        usdm_rest: u.rest_url(),
        usdm_ws: u.ws_url(),
        selection: ingest::universe::Selection {
            symbols: None,
            top: 3,
            quote: Some("USDT".into()),
            depth_levels: ingest::universe::DepthLevels::parse(&[format!("critical={WINDOW}")])
                .expect("a window"),
        },
        streams_per_connection: 300,
        connection_lifetime: Duration::from_secs(3600),
        stale_after: Duration::from_secs(10),
        spot_weight_limit: 6000,
        usdm_weight_limit: 2400,
        checkpoint_every: Duration::from_secs(60),
        checkpoint_rows: 5000,
        top_every: Duration::from_millis(100),
        top_levels: 20,
        batch_rows: 2000,
        batch_delay: Duration::from_millis(50),
        queue_rows: 100_000,
        spool_dir: spool,
        metrics_bind: "127.0.0.1:0".parse().expect("addr"),
        shutdown_grace: Duration::from_secs(30),
        universe_refresh: Duration::from_secs(600),
        maintain_every: Duration::from_millis(500),
        leases: None,
    }
}

pub async fn setup(path: pgembed::StoragePath) -> Option<Env> {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let sim = Sim::start(SimConfig {
        seed: 3,
        spot: Some(venue(BVenue::Spot)),
        usdm: Some(venue(BVenue::Usdm)),
    })
    .await
    .expect("sim");
    let db = pgembed::test_database_on(path, "api").await.expect("db")?;
    let (mut admin, conn) = tokio_postgres::connect(&db.url, NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let flavor = schema::Flavor::parse(path.as_str()).expect("a schema flavor");
    schema::apply(&mut admin, schema::FlavorChoice::Require(flavor))
        .await
        .expect("migrate");
    admin
        .execute("UPDATE storage_policies SET drop_after = NULL", &[])
        .await
        .expect("policy");
    let (s, u) = (
        sim.spot.as_ref().expect("spot"),
        sim.usdm.as_ref().expect("usdm"),
    );
    let cfg = ingest_config(&db.url, s, u);
    let stop = CancellationToken::new();
    let run = tokio::spawn(ingest::run::run(
        cfg,
        ingest::metrics::Metrics::new(),
        stop.clone(),
    ));
    let a = &admin;
    wait_until("6 books synced", || async move {
        count(
            a,
            "SELECT count(DISTINCT instrument_id) FROM sync_events WHERE kind = 'synced'",
        )
        .await
            == 6
    })
    .await;
    wait_until("enough trades", || async move {
        count(a, "SELECT count(*) FROM trades t JOIN instruments i ON i.id = t.instrument_id WHERE i.venue = 'spot' AND i.symbol = 'BTCUSDT'").await >= 250
    })
    .await;
    let login = format!("api_{}", db.name);
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{login}\" LOGIN IN ROLE depthbook_reader"
        ))
        .await
        .expect("reader role");
    let reader_url = db
        .url
        .replacen("postgres://postgres@", &format!("postgres://{login}@"), 1);
    assert_ne!(reader_url, db.url, "the API reads as the read-only role");
    let base = start_api(&reader_url, None).await;
    Some(Env {
        _sim: sim,
        _db: db,
        admin,
        base,
        reader_url,
        stop,
        run,
    })
}

pub async fn gql(base: &str, query: &str) -> sonic_rs::Value {
    let body =
        sonic_rs::to_string(&std::collections::HashMap::from([("query", query)])).expect("json");
    let r = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    sonic_rs::from_str(&r.text().await.expect("body")).expect("json")
}

pub fn errors(v: &sonic_rs::Value) -> Vec<String> {
    v.get("errors")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// POSTs `query` with `variables` (a JSON object) and an optional bearer token; the HTTP status
/// and the body as JSON (`Null` when it is not JSON).
pub async fn post_graphql(
    http: &reqwest::Client,
    base: &str,
    query: &str,
    variables: &sonic_rs::Value,
    token: Option<&str>,
) -> (u16, sonic_rs::Value) {
    let body = sonic_rs::to_string(&sonic_rs::json!({ "query": query, "variables": variables }))
        .expect("json");
    let mut req = http
        .post(format!("{base}/graphql"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("the server answers");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        sonic_rs::from_str(&text).unwrap_or(sonic_rs::Value::new()),
    )
}

/// `extensions.code` of every error in a GraphQL response ("" where there is none).
pub fn error_codes(v: &sonic_rs::Value) -> Vec<String> {
    v.get("errors")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .map(|e| {
                    e.get("extensions")
                        .and_then(|x| x.get("code"))
                        .and_then(|c| c.as_str())
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}
