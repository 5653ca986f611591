//! The API through real HTTP and WebSocket clients, against a database filled by ingest from
//! the simulator, read through the read-only role. One fixture per storage path (the simulator,
//! ingest and the API, started once on a runtime the tests share); one test per feature, so a
//! failure names what broke. The last test of a path to finish stops ingest and checks that it
//! stops cleanly.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};

use common::{errors, gql, start_api, start_api_with, DEADLINE, WINDOW};
use futures_util::{SinkExt, StreamExt};
use pgembed::StoragePath;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use tokio::sync::OnceCell;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The shared fixture outlives each test's own runtime, so it lives on this one.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

static FIXTURES: [OnceCell<Option<Fixture>>; 3] = [
    OnceCell::const_new(),
    OnceCell::const_new(),
    OnceCell::const_new(),
];

struct Fixture {
    _sim: sim::Sim,
    _db: pgembed::TestDatabase,
    admin: tokio_postgres::Client,
    base: String,
    reader_url: String,
    stop: tokio_util::sync::CancellationToken,
    run: Mutex<Option<tokio::task::JoinHandle<anyhow::Result<()>>>>,
    /// Tests of this path still to finish.
    remaining: AtomicUsize,
}

type Check = for<'a> fn(&'a Fixture) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

fn index(path: StoragePath) -> usize {
    match path {
        StoragePath::Postgres => 0,
        StoragePath::Timescale => 1,
        StoragePath::TimescaleApache => 2,
    }
}

/// Runs `check` on the path's fixture (started by the first test that needs it).
fn on(path: StoragePath, test: &str, checks: usize, check: Check) {
    if !pgembed::skip_unless_available(path, test) {
        return;
    }
    RUNTIME.block_on(async {
        let fixture = FIXTURES[index(path)]
            .get_or_init(|| async {
                let env = common::setup(path).await?;
                Some(Fixture {
                    _sim: env._sim,
                    _db: env._db,
                    admin: env.admin,
                    base: env.base,
                    reader_url: env.reader_url,
                    stop: env.stop,
                    run: Mutex::new(Some(env.run)),
                    remaining: AtomicUsize::new(checks),
                })
            })
            .await;
        let Some(f) = fixture else {
            return;
        };
        check(f).await;
        if f.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            stops_cleanly(f).await;
        }
    });
}

async fn stops_cleanly(f: &Fixture) {
    f.stop.cancel();
    let run = f
        .run
        .lock()
        .expect("not poisoned")
        .take()
        .expect("stopped once");
    tokio::time::timeout(DEADLINE, run)
        .await
        .expect("in time")
        .expect("join")
        .expect("clean stop");
}

/// One test per storage path for each check; `timescale_only` checks run on TimescaleDB's
/// community path alone.
macro_rules! api_tests {
    (all: [$($name:ident),+ $(,)?], timescale_only: [$($ts:ident),* $(,)?]) => {
        const ALL_PATHS: usize = [$(stringify!($name)),+].len();
        const TIMESCALE_ONLY: usize = [$(stringify!($ts)),*].len();
        fn checks(path: StoragePath) -> usize {
            ALL_PATHS + if path == StoragePath::Timescale { TIMESCALE_ONLY } else { 0 }
        }
        $(mod $name {
            use super::*;
            fn check(path: StoragePath) {
                let test = concat!(module_path!(), "::", stringify!($name));
                on(path, test, checks(path), |f| Box::pin(super::$name(f)));
            }
            #[test]
            fn postgres() { check(StoragePath::Postgres) }
            #[test]
            fn timescaledb() { check(StoragePath::Timescale) }
            #[test]
            fn timescaledb_apache() { check(StoragePath::TimescaleApache) }
        })+
        $(mod $ts {
            use super::*;
            #[test]
            fn timescaledb() {
                let test = concat!(module_path!(), "::", stringify!($ts));
                let path = StoragePath::Timescale;
                on(path, test, checks(path), |f| Box::pin(super::$ts(f)));
            }
        })*
    };
}

api_tests!(
    all: [
        instruments_of_a_venue,
        a_windowed_book_says_so,
        book_now_and_at_an_instant_equals_book_at,
        trades_page_through_without_duplicates_or_holes,
        range_queries_quality_and_stats,
        bad_queries_get_clear_errors,
        rest_routes,
        export_route_streams_what_the_exporter_writes,
        export_route_streams_parquet,
        export_route_refuses_bad_requests,
        subscriptions_deliver_live_updates,
        a_bearer_token_guards_http_and_websocket,
    ],
    timescale_only: [compressed_chunks_answer_the_same]
);

fn rfc(s: &str) -> String {
    s.replacen(' ', "T", 1).replace("+00", "Z")
}

/// A range of spot BTCUSDT trades: up to the newest committed one (exclusive), so trades still
/// arriving stay outside it while a test pages.
async fn trade_range(f: &Fixture) -> (String, String) {
    let r = f
        .admin
        .query_one(
            "SELECT (min(time) - interval '1 second')::text, max(time)::text FROM trades t JOIN instruments i ON i.id = t.instrument_id WHERE i.venue = 'spot' AND i.symbol = 'BTCUSDT'",
            &[],
        )
        .await
        .expect("range");
    (r.get(0), r.get(1))
}

/// An instant inside USD-M ETHUSDT's stored book (as PostgreSQL prints it).
async fn eth_instant(f: &Fixture) -> String {
    f.admin.query_one("SELECT (max(time) - interval '200 milliseconds')::text FROM depth_updates d JOIN instruments i ON i.id = d.instrument_id WHERE i.venue = 'usdm' AND i.symbol = 'ETHUSDT'", &[]).await.expect("t").get(0)
}

async fn instruments_of_a_venue(f: &Fixture) {
    let v = gql(
        &f.base,
        "{ instruments(venue: SPOT) { symbol venue tickSize tier active depthLevels } }",
    )
    .await;
    assert!(errors(&v).is_empty(), "{:?}", errors(&v));
    let list = v
        .get("data")
        .and_then(|d| d.get("instruments"))
        .and_then(|i| i.as_array())
        .expect("list");
    assert_eq!(list.len(), 3);
    for i in list.iter() {
        let levels = i.get("depthLevels").and_then(|l| l.as_i64());
        assert_eq!(levels, Some(i64::from(WINDOW)), "{i:?}");
    }
}

/// A windowed symbol's book has no more levels than its window, and says which window.
async fn a_windowed_book_says_so(f: &Fixture) {
    let (from, to) = trade_range(f).await;
    let v = gql(
        &f.base,
        &format!(
            r#"{{ book(symbol: "BTCUSDT", depth: 1000) {{ depthLevels bids {{ price }} asks {{ price }} }}
                 dataQuality(symbol: "BTCUSDT", from: "{}", to: "{}") {{ depthLevels }} }}"#,
            rfc(&from),
            rfc(&to)
        ),
    )
    .await;
    assert!(errors(&v).is_empty(), "{:?}", errors(&v));
    let data = v.get("data").expect("data");
    let book = data.get("book").expect("book");
    let window = Some(i64::from(WINDOW));
    assert_eq!(book.get("depthLevels").and_then(|l| l.as_i64()), window);
    for side in ["bids", "asks"] {
        let n = book.get(side).and_then(|b| b.as_array()).expect(side).len();
        assert_eq!(n, WINDOW as usize, "{side}: the window is full");
    }
    let quality = data.get("dataQuality").expect("dataQuality");
    assert_eq!(quality.get("depthLevels").and_then(|l| l.as_i64()), window);
}

async fn book_now_and_at_an_instant_equals_book_at(f: &Fixture) {
    let (base, env) = (&f.base, f);
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
    let t = eth_instant(env).await;
    let t_rfc = rfc(&t);
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
}

async fn trades_page_through_without_duplicates_or_holes(f: &Fixture) {
    let (base, env) = (&f.base, f);
    let (from, to) = trade_range(f).await;
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
}

async fn range_queries_quality_and_stats(f: &Fixture) {
    let base = &f.base;
    let (from, to) = trade_range(f).await;
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
}

async fn bad_queries_get_clear_errors(f: &Fixture) {
    let base = &f.base;
    let (from, to) = trade_range(f).await;
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
    let deep = "{ a { b { c { d { e { f { g { h { i } } } } } } } } }";
    assert!(
        errors(&gql(base, deep).await)
            .iter()
            .any(|e| e.contains("nested too deep")),
        "data-field depth is limited before validation"
    );
}

async fn rest_routes(f: &Fixture) {
    let base = &f.base;
    let (from, to) = trade_range(f).await;
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
}

fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(body), &mut text)
        .expect("a whole gzip body");
    text
}

/// What the exporter writes for the same request, straight from the database.
/// `[from, to)` from the RFC 3339 times a test sends.
fn export_range(from: &str, to: &str) -> export::Range {
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("time")
            .to_utc()
    };
    export::Range::new(at(from), at(to)).expect("range")
}

async fn exported(
    f: &Fixture,
    venue: binance::Venue,
    symbol: &str,
    t: &str,
    from: &str,
    to: &str,
) -> String {
    let inst = export::instrument(&f.admin, venue, symbol)
        .await
        .expect("instrument");
    let range = export_range(from, to);
    let mut out = Vec::new();
    export::write_csv(&f.admin, &inst, t.parse().expect("type"), range, &mut out)
        .await
        .expect("export");
    String::from_utf8(out).expect("utf-8")
}

async fn export_route_streams_what_the_exporter_writes(f: &Fixture) {
    let (base, http) = (&f.base, reqwest::Client::new());
    let (from, to) = trade_range(f).await;
    let (from, to) = (rfc(&from), rfc(&to));
    let r = http
        .get(format!("{base}/export/trades/BTCUSDT?from={from}&to={to}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    let disposition = r.headers()["content-disposition"].to_str().expect("ascii");
    assert!(
        disposition.contains("binance_trades_") && disposition.ends_with("_BTCUSDT.csv.gz\""),
        "{disposition}"
    );
    let body = gunzip(&r.bytes().await.expect("body"));
    assert!(body.lines().count() > 10, "{body}");
    assert_eq!(
        body,
        exported(f, binance::Venue::Spot, "BTCUSDT", "trades", &from, &to).await
    );

    // Depth: the book first, then its changes; rows of one event may come in any order.
    let eth = rfc(&eth_instant(f).await);
    let r = http
        .get(format!(
            "{base}/export/incremental_book_L2/ethusdt?venue=usdm&from={from}&to={eth}"
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let gaps: Vec<export::Gap> =
        serde_json::from_slice(r.headers()["x-depthbook-gaps"].as_bytes()).expect("gap JSON");
    assert_eq!(
        r.headers()["x-depthbook-gap-count"].to_str().ok(),
        Some(gaps.len().to_string().as_str())
    );
    assert_eq!(gaps, direct_gaps(f, "ETHUSDT", &from, &eth).await);
    let window = WINDOW.to_string();
    assert_eq!(
        r.headers()["x-depthbook-depth-levels"].to_str().ok(),
        Some(window.as_str()),
        "a download says its books' window"
    );
    let body = gunzip(&r.bytes().await.expect("body"));
    let second = body.lines().nth(1).expect("a first row");
    assert!(
        second.starts_with("binance-futures,ETHUSDT,") && second.contains(",true,"),
        "{second}"
    );
    let sorted = |s: &str| {
        let mut l: Vec<String> = s.lines().map(str::to_owned).collect();
        l.sort();
        l
    };
    let direct = exported(
        f,
        binance::Venue::Usdm,
        "ETHUSDT",
        "incremental_book_L2",
        &from,
        &eth,
    )
    .await;
    assert_eq!(sorted(&body), sorted(&direct));
}

/// Parquet: the same bytes as the exporter's file, with the CSV's rows.
async fn export_route_streams_parquet(f: &Fixture) {
    let (base, http) = (&f.base, reqwest::Client::new());
    let (from, to) = trade_range(f).await;
    let (from, to) = (rfc(&from), rfc(&to));
    let r = http
        .get(format!(
            "{base}/export/trades/BTCUSDT?from={from}&to={to}&format=parquet"
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    let disposition = r.headers()["content-disposition"].to_str().expect("ascii");
    assert!(disposition.ends_with("_BTCUSDT.parquet\""), "{disposition}");
    let body = r.bytes().await.expect("body");
    let file = exported_parquet(f, "BTCUSDT", "trades", &from, &to).await;
    assert!(
        body.as_ref() == file.as_slice(),
        "the route streams the exporter's file"
    );
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body)
        .expect("a Parquet file");
    let csv = exported(f, binance::Venue::Spot, "BTCUSDT", "trades", &from, &to).await;
    assert_eq!(
        reader.metadata().file_metadata().num_rows() as usize,
        csv.lines().count() - 1,
        "as many rows as the CSV"
    );
}

/// The gaps the exporter lists for USD-M `symbol`'s book in `[from, to)`.
async fn direct_gaps(f: &Fixture, symbol: &str, from: &str, to: &str) -> Vec<export::Gap> {
    let inst = export::instrument(&f.admin, binance::Venue::Usdm, symbol)
        .await
        .expect("instrument");
    let range = export_range(from, to);
    export::segments::plan(&f.admin, inst.id, range)
        .await
        .expect("plan")
        .gaps
}

async fn exported_parquet(f: &Fixture, symbol: &str, t: &str, from: &str, to: &str) -> Vec<u8> {
    let inst = export::instrument(&f.admin, binance::Venue::Spot, symbol)
        .await
        .expect("instrument");
    let range = export_range(from, to);
    let t = t.parse().expect("type");
    let (_, out) = export::write_file(
        &f.admin,
        &inst,
        t,
        range,
        export::Format::Parquet,
        Vec::new(),
    )
    .await
    .expect("export");
    out
}

async fn export_route_refuses_bad_requests(f: &Fixture) {
    let (base, http) = (&f.base, reqwest::Client::new());
    let (from, to) = trade_range(f).await;
    let (from, to) = (rfc(&from), rfc(&to));
    let secured = start_api(&f.reader_url, Some("s3cret".into())).await;
    let r = http
        .get(format!("{secured}/export/trades/BTCUSDT"))
        .send()
        .await;
    assert_eq!(
        r.expect("get").status(),
        401,
        "exports are data: behind the token"
    );

    let full = start_api_with(&f.reader_url, None, 0).await;
    let r = http
        .get(format!("{full}/export/trades/BTCUSDT?from={from}&to={to}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 503, "no export slot free");
    assert_eq!(r.headers()["retry-after"], "5");
    let body = r.text().await.expect("body");
    assert!(body.contains("\"code\":\"BUSY\""), "{body}");

    for (path, status) in [
        (format!("/export/depth/BTCUSDT?from={from}&to={to}"), 400),
        (format!("/export/trades/NOPEUSDT?from={from}&to={to}"), 404),
        (
            format!("/export/derivative_ticker/BTCUSDT?from={from}&to={to}"),
            400,
        ),
        (
            format!("/export/trades/BTCUSDT?from={from}&to={to}&format=xlsx"),
            400,
        ),
        (format!("/export/trades/BTCUSDT?from={from}"), 400),
        (format!("/export/trades/BTCUSDT?from={to}&to={from}"), 400),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body = r.text().await.expect("body");
        assert!(body.starts_with("{\"error\":"), "{path}: {body}");
    }
}

async fn subscriptions_deliver_live_updates(f: &Fixture) {
    let base = &f.base;
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
}

async fn a_bearer_token_guards_http_and_websocket(f: &Fixture) {
    let (env, http) = (f, reqwest::Client::new());
    // Optional bearer auth.
    let secured = start_api(&env.reader_url, Some("s3cret".into())).await;
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
    // Subscriptions behind the token: browsers cannot set headers on the upgrade, so the
    // token may come in connection_init; without it the server closes the connection.
    let secured_ws = secured.replacen("http://", "ws://", 1) + "/graphql/ws";
    for (init, accepted) in [
        (r#"{"type":"connection_init"}"#, false),
        (
            r#"{"type":"connection_init","payload":{"Authorization":"Bearer wrong"}}"#,
            false,
        ),
        (
            r#"{"type":"connection_init","payload":{"Authorization":"Bearer s3cret"}}"#,
            true,
        ),
        (
            r#"{"type":"connection_init","payload":{"token":"s3cret"}}"#,
            true,
        ),
    ] {
        let mut req = secured_ws.as_str().into_client_request().expect("request");
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("upgrade");
        ws.send(Message::Text(init.into())).await.expect("init");
        let answer = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("an answer")
            .expect("a frame")
            .expect("readable");
        match answer {
            Message::Text(t) if accepted => assert!(t.contains("connection_ack"), "{init}: {t}"),
            Message::Close(Some(f)) if !accepted => {
                assert_eq!(f.reason.as_str(), "missing or wrong bearer token", "{init}")
            }
            other => panic!("{init}: {other:?}"),
        }
    }
}

async fn compressed_chunks_answer_the_same(f: &Fixture) {
    let (base, env) = (&f.base, f);
    let (from, to) = trade_range(f).await;
    let t_rfc = rfc(&eth_instant(f).await);
    // The same answers once every chunk is compressed (history, so stable while ingest runs).
    // Candles without open/close: first/last between trades of one millisecond is ambiguous
    // and compression reorders ties (a known limitation of the aggregates).
    let stable = format!(
        r#"{{ book(symbol: "ETHUSDT", venue: USDM, at: "{t_rfc}", depth: 50) {{ updateId bids {{ price qty }} asks {{ price qty }} }}
                 candles(symbol: "BTCUSDT", interval: S1, from: "{f}", to: "{whole}", first: 5) {{ edges {{ node {{ bucket high low volume tradeCount }} }} }}
                 trades(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 50) {{ edges {{ node {{ aggTradeId price qty }} }} }}
                 bookTicker(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 5) {{ edges {{ node {{ bidPrice askPrice updateId }} }} }}
                 depthUpdates(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 50) {{ edges {{ node {{ side price qty updateId }} }} }}
                 bookTop(symbol: "BTCUSDT", from: "{f}", to: "{t}", first: 5) {{ edges {{ node {{ mid spread bids {{ price }} }} }} }} }}"#,
        // Whole seconds only: the bucket holding `to` still grows while ingest runs.
        whole = rfc(&to)
            .split('.')
            .next()
            .unwrap_or_default()
            .trim_end_matches('Z')
            .to_owned()
            + "Z",
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

#[test]
fn the_committed_sdl_matches_the_code() {
    let sdl = graphql::api::sdl();
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
