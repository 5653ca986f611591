//! The API through real HTTP and WebSocket clients, against a database filled by ingest from
//! the simulator, read through the read-only role.

use std::collections::HashSet;
use std::time::Duration;

use binance::Venue as BVenue;
use futures_util::{SinkExt, StreamExt};
use graphql::schema::Limits;
use graphql::{live::Hub, AppState, Metrics};
use sim::{Sim, SimConfig, VenueConfig};
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use tokio_postgres::{Client, NoTls};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);

async fn wait_until<F, Fut>(what: &str, mut f: F)
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

async fn count(db: &Client, sql: &str) -> i64 {
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

struct Env {
    _sim: Sim,
    _db: pgembed::TestDatabase,
    admin: Client,
    base: String,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_api(reader_url: &str, token: Option<String>) -> String {
    let manager = pgconn::manager(reader_url).expect("url");
    let pool = bb8::Pool::builder().max_size(8).build_unchecked(manager);
    let hub = Hub::default();
    tokio::spawn(hub.clone().run(reader_url.to_owned()));
    let limits = Limits {
        max_page: 1000,
        max_range: Duration::from_secs(86_400),
        max_depth: 5000,
    };
    let state = AppState {
        schema: graphql::schema::build(pool.clone(), hub, limits.clone()),
        pool,
        limits,
        metrics: Metrics::new(),
        token,
        fresh_within: Duration::from_secs(60),
    };
    let app = graphql::router(state, &["*".to_owned()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn setup(path: pgembed::StoragePath) -> Option<Env> {
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
    let spool = tempfile::tempdir().expect("spool").keep();
    let cfg = ingest::run::RunConfig {
        database_url: db.url.clone(),
        venues: vec![BVenue::Spot, BVenue::Usdm],
        spot_rest: s.rest_url(),
        spot_ws: s.ws_url(),
        usdm_rest: u.rest_url(),
        usdm_ws: u.ws_url(),
        selection: ingest::universe::Selection {
            symbols: None,
            top: 3,
            quote: Some("USDT".into()),
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
    };
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
        stop,
        run,
    })
}

async fn gql(base: &str, query: &str) -> sonic_rs::Value {
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

fn errors(v: &sonic_rs::Value) -> Vec<String> {
    v.get("errors")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn queries_routes_subscriptions_and_errors(path: pgembed::StoragePath) {
    let Some(env) = setup(path).await else {
        return;
    };
    let base = &env.base;

    // instruments
    let v = gql(
        base,
        "{ instruments(venue: SPOT) { symbol venue tickSize tier active } }",
    )
    .await;
    assert!(errors(&v).is_empty(), "{:?}", errors(&v));
    let list = v
        .get("data")
        .and_then(|d| d.get("instruments"))
        .and_then(|i| i.as_array())
        .expect("list")
        .len();
    assert_eq!(list, 3);

    // book: latest, and at a time, equal to book_at over the same time
    let v = gql(base, r#"{ book(symbol: "BTCUSDT", depth: 5) { updateId time bids { price qty } asks { price qty } } }"#).await;
    assert!(errors(&v).is_empty(), "{:?}", errors(&v));
    let book = v.get("data").and_then(|d| d.get("book")).expect("book");
    assert_eq!(
        book.get("bids")
            .and_then(|b| b.as_array())
            .expect("bids")
            .len(),
        5
    );
    let t: String = env.admin.query_one("SELECT (max(time) - interval '200 milliseconds')::text FROM depth_updates d JOIN instruments i ON i.id = d.instrument_id WHERE i.venue = 'usdm' AND i.symbol = 'ETHUSDT'", &[]).await.expect("t").get(0);
    let t_rfc = t.replacen(' ', "T", 1).replace("+00", "Z");
    let v = gql(base, &format!(r#"{{ book(symbol: "ETHUSDT", venue: USDM, at: "{t_rfc}", depth: 3) {{ updateId bids {{ price }} }} }}"#)).await;
    assert!(errors(&v).is_empty(), "{:?}", errors(&v));
    let want: Vec<String> = env
        .admin
        .query("SELECT price::text FROM book_at('usdm', 'ETHUSDT', $1::text::timestamptz, 3) WHERE side = 'bid' ORDER BY level", &[&t])
        .await
        .expect("book_at")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let got: Vec<String> = v
        .get("data")
        .and_then(|d| d.get("book"))
        .and_then(|b| b.get("bids"))
        .and_then(|b| b.as_array())
        .expect("bids")
        .iter()
        .filter_map(|l| l.get("price").and_then(|p| p.as_str()).map(str::to_owned))
        .collect();
    assert_eq!(got, want);

    // trades: page through with no duplicates or holes, against the table
    let (from, to): (String, String) = {
        // Up to the newest committed BTCUSDT trade (exclusive), so trades still arriving stay
        // outside the range while we page.
        let r = env
            .admin
            .query_one(
                "SELECT (min(time) - interval '1 second')::text, max(time)::text FROM trades t JOIN instruments i ON i.id = t.instrument_id WHERE i.venue = 'spot' AND i.symbol = 'BTCUSDT'",
                &[],
            )
            .await
            .expect("range");
        (r.get(0), r.get(1))
    };
    let rfc = |s: &str| s.replacen(' ', "T", 1).replace("+00", "Z");
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let after_arg = after
            .as_ref()
            .map(|a| format!(r#", after: "{a}""#))
            .unwrap_or_default();
        let v = gql(base, &format!(r#"{{ trades(symbol: "BTCUSDT", from: "{}", to: "{}", first: 100{after_arg}) {{ edges {{ cursor node {{ aggTradeId }} }} pageInfo {{ hasNextPage endCursor }} }} }}"#, rfc(&from), rfc(&to))).await;
        assert!(errors(&v).is_empty(), "{:?}", errors(&v));
        let page = v.get("data").and_then(|d| d.get("trades")).expect("page");
        for e in page
            .get("edges")
            .and_then(|e| e.as_array())
            .expect("edges")
            .iter()
        {
            seen.push(
                e.get("node")
                    .and_then(|n| n.get("aggTradeId"))
                    .and_then(|i| i.as_str())
                    .expect("id")
                    .to_owned(),
            );
        }
        let info = page.get("pageInfo").expect("pageInfo");
        if !info
            .get("hasNextPage")
            .and_then(|h| h.as_bool())
            .unwrap_or(false)
        {
            break;
        }
        after = info
            .get("endCursor")
            .and_then(|c| c.as_str())
            .map(str::to_owned);
    }
    let want: Vec<String> = env
        .admin
        .query(
            "SELECT agg_trade_id::text FROM trades t JOIN instruments i ON i.id = t.instrument_id
             WHERE i.venue = 'spot' AND i.symbol = 'BTCUSDT' AND time >= $1::text::timestamptz AND time < $2::text::timestamptz ORDER BY time, agg_trade_id",
            &[&from, &to],
        )
        .await
        .expect("trades")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(want.len() > 200, "several pages");
    assert_eq!(seen, want, "every trade once, in order, across pages");

    // candles, bookTicker, depthUpdates, bookTop, dataQuality, stats
    let q = format!(
        r#"{{ candles(symbol: "BTCUSDT", interval: S1, from: "{f}", to: "{t}", first: 5) {{ edges {{ node {{ bucket open close volume tradeCount }} }} }}
             bookTicker(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 5) {{ edges {{ node {{ bidPrice askPrice updateId }} }} }}
             depthUpdates(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 5) {{ edges {{ node {{ side price qty updateId }} }} }}
             bookTop(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 5) {{ edges {{ node {{ mid spread bids {{ price }} }} }} }}
             dataQuality(symbol: "BTCUSDT", from: "{f}", to: "{t}") {{ coveragePercent gaps {{ firstMissingUpdateId }} resyncs }}
             stats {{ symbol venue depthRowsLastHour lagSeconds }} }}"#,
        f = rfc(&from),
        t = rfc(&to)
    );
    let v = gql(base, &q).await;
    assert!(errors(&v).is_empty(), "{:?}", errors(&v));
    let d = v.get("data").expect("data");
    for k in ["candles", "bookTicker", "depthUpdates", "bookTop"] {
        assert_eq!(
            d.get(k)
                .and_then(|c| c.get("edges"))
                .and_then(|e| e.as_array())
                .map(|a| a.len()),
            Some(5),
            "{k}"
        );
    }
    let coverage = d
        .get("dataQuality")
        .and_then(|q| q.get("coveragePercent"))
        .and_then(|c| c.as_f64())
        .expect("coverage");
    assert!(coverage > 50.0 && coverage <= 100.0, "{coverage}");
    assert_eq!(
        d.get("stats").and_then(|s| s.as_array()).map(|a| a.len()),
        Some(6)
    );

    // errors: clear messages, never a 500
    for (query, needle) in [
        (r#"{ book(symbol: "NOPEUSDT") { updateId } }"#.to_owned(), "unknown symbol NOPEUSDT"),
        (format!(r#"{{ trades(symbol: "BTCUSDT", from: "{}", to: "{}") {{ edges {{ cursor }} }} }}"#, rfc(&to), rfc(&from)), "must be before"),
        (r#"{ trades(symbol: "BTCUSDT", from: "2026-01-01T00:00:00Z", to: "2026-03-01T00:00:00Z") { edges { cursor } } }"#.to_owned(), "wider than the maximum"),
        (r#"{ candles(symbol: "BTCUSDT", interval: M5, from: "2026-01-01T00:00:00Z", to: "2026-01-01T01:00:00Z") { edges { cursor } } }"#.to_owned(), "M5"),
        (r#"{ trades(symbol: "BTCUSDT", from: "yesterday", to: "2026-01-01T01:00:00Z") { edges { cursor } } }"#.to_owned(), "Failed to parse \"DateTime\""),
        (format!(r#"{{ trades(symbol: "BTCUSDT", from: "{}", to: "{}", first: 5000) {{ edges {{ cursor }} }} }}"#, rfc(&from), rfc(&to)), "between 1 and 1000"),
        (r#"{ book(symbol: "BTCUSDT", at: "2020-01-01T00:00:00Z") { updateId } }"#.to_owned(), "no book recorded"),
        (format!(r#"{{ trades(symbol: "BTCUSDT", from: "{}", to: "{}", after: "zz") {{ edges {{ cursor }} }} }}"#, rfc(&from), rfc(&to)), "invalid cursor"),
    ] {
        let v = gql(base, &query).await;
        let errs = errors(&v);
        assert!(errs.iter().any(|e| e.contains(needle)), "{query}: {errs:?}");
    }
    let deep = "{ instruments { symbol } ".to_owned() + "__schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } }" + " }";
    assert!(
        !errors(&gql(base, &deep).await).is_empty(),
        "query depth is limited"
    );

    // REST
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{base}/data/BTCUSDT"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let latest: sonic_rs::Value = sonic_rs::from_str(&r.text().await.expect("body")).expect("json");
    assert!(
        latest.get("mid").and_then(|m| m.as_str()).is_some()
            && latest
                .get("bids")
                .and_then(|b| b.as_array())
                .is_some_and(|b| !b.is_empty())
    );
    let r = http
        .get(format!(
            "{base}/data/BTCUSDT?from={}&to={}&limit=10",
            rfc(&from),
            rfc(&to)
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let hist: sonic_rs::Value = sonic_rs::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(
        hist.get("rows").and_then(|r| r.as_array()).map(|a| a.len()),
        Some(10)
    );
    assert_eq!(hist.get("truncated").and_then(|t| t.as_bool()), Some(true));
    for (path, status) in [
        ("/data/NOPEUSDT".to_owned(), 404),
        ("/data/BTCUSDT?from=yesterday&to=today".to_owned(), 400),
        (
            format!("/data/BTCUSDT?from={}&to={}", rfc(&to), rfc(&from)),
            400,
        ),
        (format!("/data/BTCUSDT?from={}", rfc(&from)), 400),
        ("/data/BTCUSDT?venue=moon".to_owned(), 400),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body = r.text().await.expect("body");
        assert!(body.starts_with("{\"error\":"), "{path}: {body}");
    }
    let r = http.get(format!("{base}/stats")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "database reachable, data fresh");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("depthbook_api_requests_total") && metrics.contains("rest:data"),
        "{metrics}"
    );
    assert_eq!(
        http.get(format!("{base}/"))
            .send()
            .await
            .expect("get")
            .status(),
        200,
        "GraphiQL"
    );

    // Subscriptions over graphql-ws (graphql-transport-ws)
    let ws_url = base.replacen("http://", "ws://", 1) + "/graphql/ws";
    let mut req = ws_url.into_client_request().expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
    ws.send(Message::Text(r#"{"type":"connection_init"}"#.into()))
        .await
        .expect("init");
    ws.send(Message::Text(r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { bookTicker(symbol: \"BTCUSDT\") { bidPrice askPrice updateId } }"}}"#.into())).await.expect("sub");
    ws.send(Message::Text(r#"{"id":"2","type":"subscribe","payload":{"query":"subscription { book(symbol: \"ETHUSDT\", venue: USDM, depth: 3) { updateId bids { price } } }"}}"#.into())).await.expect("sub");
    ws.send(Message::Text(r#"{"id":"3","type":"subscribe","payload":{"query":"subscription { trades(symbol: \"BTCUSDT\") { aggTradeId price firstTradeId } }"}}"#.into())).await.expect("sub");
    let mut got: HashSet<String> = HashSet::new();
    while got.len() < 3 {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a live update within the deadline")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let v: sonic_rs::Value = sonic_rs::from_str(t.as_str()).expect("json");
            if v.get("type").and_then(|t| t.as_str()) == Some("next") {
                assert!(
                    v.get("payload").and_then(|p| p.get("errors")).is_none(),
                    "{t}"
                );
                got.insert(v.get("id").and_then(|i| i.as_str()).expect("id").to_owned());
            }
        }
    }

    // Optional bearer auth.
    let manager_url = {
        let login = env.admin.query_one("SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'api_%' ORDER BY oid DESC LIMIT 1", &[]).await.expect("role").get::<_, String>(0);
        env._db
            .url
            .replacen("postgres://postgres@", &format!("postgres://{login}@"), 1)
    };
    let secured = start_api(&manager_url, Some("s3cret".into())).await;
    assert_eq!(
        http.get(format!("{secured}/stats"))
            .send()
            .await
            .expect("get")
            .status(),
        401
    );
    assert_eq!(
        http.get(format!("{secured}/stats"))
            .bearer_auth("wrong")
            .send()
            .await
            .expect("get")
            .status(),
        401
    );
    assert_eq!(
        http.get(format!("{secured}/stats"))
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{secured}/health"))
            .send()
            .await
            .expect("get")
            .status(),
        200,
        "health stays open"
    );

    if path == pgembed::StoragePath::Timescale {
        // The same answers once every chunk is compressed (history, so stable while ingest runs).
        // Candles without open/close: first/last between trades of one millisecond is ambiguous
        // and compression reorders ties (a known limitation of the aggregates).
        let stable = format!(
            r#"{{ book(symbol: "ETHUSDT", venue: USDM, at: "{t_rfc}", depth: 50) {{ updateId bids {{ price qty }} asks {{ price qty }} }}
                 candles(symbol: "BTCUSDT", interval: S1, from: "{f}", to: "{t}", first: 5) {{ edges {{ node {{ bucket high low volume tradeCount }} }} }}
                 trades(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 50) {{ edges {{ node {{ aggTradeId price qty }} }} }}
                 bookTicker(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 5) {{ edges {{ node {{ bidPrice askPrice updateId }} }} }}
                 depthUpdates(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 50) {{ edges {{ node {{ side price qty updateId }} }} }}
                 bookTop(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 5) {{ edges {{ node {{ mid spread bids {{ price }} }} }} }} }}"#,
            f = rfc(&from),
            t = rfc(&to)
        );
        let before = gql(base, &stable).await;
        assert!(errors(&before).is_empty(), "{:?}", errors(&before));
        let compressed: i64 = env
            .admin
            .query_one(schema::COMPRESS_EVERY_CHUNK, &[])
            .await
            .expect("compress")
            .get(0);
        assert!(compressed > 0);
        let after = gql(base, &stable).await;
        for k in [
            "book",
            "candles",
            "trades",
            "bookTicker",
            "depthUpdates",
            "bookTop",
        ] {
            let json = |v: &sonic_rs::Value| {
                sonic_rs::to_string(&v.get("data").and_then(|d| d.get(k))).expect("json")
            };
            assert_eq!(
                json(&before),
                json(&after),
                "{k}: the same from compressed chunks"
            );
        }
    }

    env.stop.cancel();
    tokio::time::timeout(DEADLINE, env.run)
        .await
        .expect("in time")
        .expect("join")
        .expect("clean stop");
}

#[test]
fn the_committed_sdl_matches_the_code() {
    let sdl = graphql::schema::sdl();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &sdl).expect("write schema.graphql");
    }
    let committed = std::fs::read_to_string(&path)
        .expect("graphql/schema.graphql is committed (UPDATE_SCHEMA=1 writes it)");
    assert_eq!(
        committed, sdl,
        "graphql/schema.graphql is out of date: run with UPDATE_SCHEMA=1 and commit it"
    );
}

pgembed::storage_tests!(queries_routes_subscriptions_and_errors);
