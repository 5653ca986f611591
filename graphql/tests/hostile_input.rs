//! No input reaches an internal error. First the inputs an independent check found answered
//! with `INTERNAL`, a 503 or a panic; then property tests (proptest) that send arbitrary
//! strings (unicode, NUL, 10 kB), integers, dates and cursors into every GraphQL argument and
//! REST parameter, against a database filled by ingest: never a panic, never
//! `INTERNAL_SERVER_ERROR`, never a 5xx while the database is up; every GraphQL error carries an
//! `extensions.code`.

mod common;

use std::time::Duration;

use common::{error_codes, post_graphql};
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sonic_rs::{json, JsonContainerTrait, JsonValueTrait, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The standard introspection query, as graphql-js 16.15 `getIntrospectionQuery()` writes it
/// with every option on (what GraphiQL, gql and schemathesis send, at its deepest).
const INTROSPECTION: &str = include_str!("fixtures/introspection.graphql");

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

async fn the_reported_inputs_are_client_errors(path: pgembed::StoragePath) {
    let Some(env) = common::setup(path).await else {
        return;
    };
    let http = reqwest::Client::new();
    let range = r#"from: "2026-01-01T00:00:00Z", to: "2026-01-01T01:00:00Z""#;
    for query in [
        format!(r#"{{ trades(symbol: "BTCUSDT", {range}, after: "aéa") {{ edges {{ cursor }} }} }}"#),
        format!(r#"{{ trades(symbol: "BTCUSDT", {range}, after: "{}") {{ edges {{ cursor }} }} }}"#, hex("a|b")),
        format!(r#"{{ depthUpdates(symbol: "BTCUSDT", {range}, after: "{}") {{ edges {{ cursor }} }} }}"#, hex("1|x|y")),
        r#"{ book(symbol: "BTC\u0000USDT") { updateId } }"#.to_owned(),
        r#"{ trades(symbol: "BTCUSDT", from: "-5000-01-01T00:00:00Z", to: "2026-01-01T00:00:00Z") { edges { cursor } } }"#.to_owned(),
        r#"{ book(symbol: "BTCUSDT", at: "-5000-01-01T00:00:00Z") { updateId } }"#.to_owned(),
    ] {
        let (status, v) = post_graphql(&http, &env.base, &query, &json!({}), None).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(error_codes(&v), ["BAD_USER_INPUT"], "{query}: {v:?}");
        let reason = v["errors"][0]["extensions"]["reason"].as_str();
        assert_eq!(reason, Some("BAD_REQUEST"), "{query}: {v:?}");
    }
    for path in [
        "/data/%00",
        "/data/BTC%00USDT",
        "/data/%FF%FE",
        "/data/BTCUSDT?from=-5000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    ] {
        let r = http
            .get(format!("{}{path}", env.base))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = sonic_rs::from_str(&r.text().await.expect("body")).expect("json");
        assert_eq!(
            body.get("code").and_then(|c| c.as_str()),
            Some("BAD_REQUEST"),
            "{path}"
        );
    }

    // The stock introspection query, through the auth layer.
    let secured = common::start_api(&env.reader_url, Some("s3cret".into())).await;
    let (status, _) = post_graphql(&http, &secured, INTROSPECTION, &json!({}), None).await;
    assert_eq!(status, 401, "introspection needs the token like any query");
    let (status, v) =
        post_graphql(&http, &secured, INTROSPECTION, &json!({}), Some("s3cret")).await;
    assert_eq!(status, 200);
    assert!(v.get("errors").is_none(), "{v:?}");
    let types: Vec<&str> = v
        .pointer(["data", "__schema", "types"])
        .and_then(|t| t.as_array())
        .expect("types")
        .iter()
        .filter_map(|t| t.get("name").and_then(|n| n.as_str()))
        .collect();
    for name in [
        "Query",
        "SubscriptionRoot",
        "Book",
        "Trade",
        "DepthUpdate",
        "Level",
    ] {
        assert!(types.contains(&name), "{name} in {types:?}");
    }
    env.stop.cancel();
}

/// Strings no valid argument is: any unicode, control characters and NUL, 10 kB.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[\\x00-\\x1f\\u{80}-\\u{10ffff}A-Z|%]{0,40}",
        1 => (any::<char>(), 9_000..11_000usize).prop_map(|(c, n)| c.to_string().repeat(n / c.len_utf8())),
    ]
}

/// Symbols that exist (in any case and spacing), that do not, and hostile strings; each
/// argument is mostly valid, so the others' checks are reached too.
fn any_symbol() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["BTCUSDT", "ETHUSDT", "btcusdt", " ETHUSDT ", "NOPEUSDT", "币安人生USDT"])
            .prop_map(str::to_owned),
        4 => hostile_string(),
    ]
}

fn secs(years: i64) -> i64 {
    years * 31_556_952
}

/// RFC 3339 text: recent times where the data is; any time chrono can name (PostgreSQL holds
/// fewer: before 4713 BC is out), the edges of years 0001 and 9999; strings that are not times.
fn any_time() -> impl Strategy<Value = String> {
    let at = |lo: i64, hi: i64| {
        (lo..hi, 0u32..1_000_000_000)
            .prop_filter_map("chrono's range", |(s, ns)| {
                chrono::DateTime::from_timestamp(s, ns)
            })
            .prop_map(|t| t.to_rfc3339())
    };
    prop_oneof![
        6 => (-7_200i64..600).prop_map(|s| (chrono::Utc::now() + chrono::Duration::seconds(s)).to_rfc3339()),
        2 => at(secs(-262_000), secs(262_000)),
        2 => at(secs(-7_000), secs(-1_969)),
        1 => at(secs(8_000), secs(8_100)),
        1 => hostile_string(),
    ]
}

/// `from` and `to`: mostly a narrow range (so the width check passes and SQL runs), anywhere.
fn any_range() -> impl Strategy<Value = (String, String)> {
    let narrow = (any_time(), 0i64..7_200).prop_map(|(from, w)| {
        let to = chrono::DateTime::parse_from_rfc3339(&from)
            .ok()
            .and_then(|t| t.checked_add_signed(chrono::Duration::seconds(w)))
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| from.clone());
        (from, to)
    });
    prop_oneof![6 => narrow, 3 => (any_time(), any_time())]
}

/// Cursors: ours (from a real page), ours altered, forged hex of typed-looking text, junk.
fn any_cursor(real: Vec<String>) -> impl Strategy<Value = String> {
    let altered = (
        prop::sample::select(real.clone()),
        any::<prop::sample::Index>(),
        any::<u8>(),
    )
        .prop_map(|(c, i, b)| {
            let mut bytes = c.into_bytes();
            let at = i
                .index(bytes.len().max(1))
                .min(bytes.len().saturating_sub(1));
            if let Some(x) = bytes.get_mut(at) {
                *x = b"0123456789abcdef\xE9|"[b as usize % 18];
            }
            String::from_utf8_lossy(&bytes).into_owned()
        });
    prop_oneof![
        2 => prop::sample::select(real),
        3 => altered,
        4 => prop::collection::vec("-?[0-9]{1,20}|[0-9]{16}|bid|ask|x|NaN|1e99|-?[0-9]{1,30}\\.[0-9]{0,30}|", 1..5)
            .prop_map(|parts| hex(&parts.join("|"))),
        2 => hostile_string(),
    ]
}

/// `first`, `depth`, `limit`: mostly valid, else any integer, too big for 32 bits, not one.
fn any_int() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (1i32..=100).prop_map(|i| json!(i)),
        2 => any::<i32>().prop_map(|i| json!(i)),
        1 => any::<i64>().prop_map(|i| json!(i)),
        1 => hostile_string().prop_map(|s| json!(s)),
        1 => Just(Value::new()),
    ]
}

fn any_venue() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::sample::select(vec!["SPOT", "USDM"]).prop_map(|v| json!(v)),
        2 => hostile_string().prop_map(|s| json!(s)),
    ]
}

const RANGE_FIELDS: [&str; 5] = ["trades", "bookTicker", "depthUpdates", "bookTop", "candles"];

/// One GraphQL request: a field, its arguments as variables.
fn any_graphql(cursors: Vec<String>) -> impl Strategy<Value = (String, Value)> {
    let book = (any_symbol(), any_venue(), prop::option::of(any_time()), any_int()).prop_map(
        |(s, v, at, d)| {
            (
                "query($s: String!, $v: Venue, $at: DateTime, $d: Int) { book(symbol: $s, venue: $v, at: $at, depth: $d) { updateId time bids { price qty } } }".to_owned(),
                json!({ "s": s, "v": v, "at": at, "d": d }),
            )
        },
    );
    let ranged = (
        prop::sample::select(RANGE_FIELDS.to_vec()),
        (any_symbol(), any_venue(), any_range()),
        (any_int(), prop::option::of(any_cursor(cursors)), prop::sample::select(vec!["S1", "M1", "H1", "D7"])),
    )
        .prop_map(|(field, (s, v, (from, to)), (first, after, interval))| {
            let (extra_decl, extra_arg) = if field == "candles" {
                (", $i: Interval!", ", interval: $i")
            } else {
                ("", "")
            };
            (
                format!("query($s: String!, $v: Venue, $f: DateTime!, $t: DateTime!, $n: Int, $a: String{extra_decl}) {{ {field}(symbol: $s, venue: $v, from: $f, to: $t, first: $n, after: $a{extra_arg}) {{ edges {{ cursor }} pageInfo {{ hasNextPage endCursor }} }} }}"),
                json!({ "s": s, "v": v, "f": from, "t": to, "n": first, "a": after, "i": interval }),
            )
        });
    let quality = (any_symbol(), any_venue(), any_range()).prop_map(|(s, v, (f, t))| {
        (
            "query($s: String!, $v: Venue, $f: DateTime!, $t: DateTime!) { dataQuality(symbol: $s, venue: $v, from: $f, to: $t) { coveragePercent gaps { time } } }".to_owned(),
            json!({ "s": s, "v": v, "f": f, "t": t }),
        )
    });
    let instruments = (any_venue(), hostile_string(), any_int()).prop_map(|(v, t, a)| {
        (
            "query($v: Venue, $t: Tier, $a: Boolean) { instruments(venue: $v, tier: $t, active: $a) { symbol } stats { symbol } }".to_owned(),
            json!({ "v": v, "t": t, "a": a }),
        )
    });
    // Arguments written into the document: async-graphql reads these where the resolver runs.
    let literal = (any_symbol(), any::<i64>(), any_range()).prop_map(|(s, n, (f, t))| {
        let lit = |x: &str| sonic_rs::to_string(x).unwrap_or_default();
        (
            format!(
                "{{ trades(symbol: {s}, from: {f}, to: {t}, first: {n}) {{ edges {{ cursor }} }} book(symbol: {s}, depth: {n}) {{ updateId }} }}",
                s = lit(&s),
                f = lit(&f),
                t = lit(&t)
            ),
            json!({}),
        )
    });
    prop_oneof![2 => book, 5 => ranged, 1 => quality, 1 => instruments, 2 => literal]
}

/// Percent-encoded: every byte but the unreserved ones.
fn enc(s: String) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One REST request path: `/data/{symbol}` with any query parameters.
fn any_rest() -> impl Strategy<Value = String> {
    let raw_bytes = prop::collection::vec(any::<u8>(), 0..20)
        .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect::<String>());
    let symbol = prop_oneof![8 => any_symbol().prop_map(enc), 2 => raw_bytes.clone()];
    let int = any_int().prop_map(|v| {
        enc(v
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string()))
    });
    let venue = prop_oneof![8 => prop::sample::select(vec!["spot", "usdm", "USDM"]).prop_map(str::to_owned), 2 => hostile_string().prop_map(enc)];
    let extra = prop::collection::vec(
        (
            prop::sample::select(vec!["x", "", "from", "limit"]),
            raw_bytes,
        ),
        0..2,
    );
    let params = (
        prop::option::of(any_range()),
        prop::option::of(int),
        prop::option::of(venue),
        extra,
    );
    (symbol, params)
        .prop_map(|(s, (range, limit, venue, extra))| {
            let mut q: Vec<String> = Vec::new();
            if let Some((f, t)) = range {
                q.push(format!("from={}&to={}", enc(f), enc(t)));
            }
            q.extend(limit.map(|l| format!("limit={l}")));
            q.extend(venue.map(|v| format!("venue={v}")));
            q.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
            format!(
                "/data/{}?{}",
                if s.is_empty() { "%20".into() } else { s },
                q.join("&")
            )
        })
        // The `http` crate carries URIs up to 64 kB; a client cannot send longer.
        .prop_filter("a URI http can carry", |p| p.len() < 60_000)
}

/// Runs `strategy` through proptest (shrinking a failure) on a thread of its own, so this
/// test's runtime keeps serving the API meanwhile.
async fn check<S, F, Fut>(cases: u32, strategy: S, f: F)
where
    S: Strategy + Send + 'static,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), TestCaseError>>,
{
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strategy, |case| rt.block_on(f(case)))
            .map_err(|e| e.to_string())
    })
    .await
    .expect("proptest thread")
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Cursors of real pages, to alter.
async fn real_cursors(http: &reqwest::Client, base: &str) -> Vec<String> {
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    let mut cursors = Vec::new();
    for field in ["trades", "depthUpdates", "bookTop", "bookTicker"] {
        let q = format!("query($f: DateTime!, $t: DateTime!) {{ {field}(symbol: \"BTCUSDT\", from: $f, to: $t, first: 3) {{ edges {{ cursor }} }} }}");
        let (_, v) = post_graphql(http, base, &q, &json!({ "f": from, "t": to }), None).await;
        let edges = v
            .pointer(["data", field, "edges"])
            .and_then(|e| e.as_array());
        cursors.extend(
            edges
                .into_iter()
                .flat_map(|e| e.iter())
                .filter_map(|e| e.get("cursor").and_then(|c| c.as_str()).map(str::to_owned)),
        );
    }
    assert!(cursors.len() >= 8, "pages with data: {cursors:?}");
    cursors
}

async fn no_input_reaches_an_internal_error(path: pgembed::StoragePath) {
    let Some(env) = common::setup(path).await else {
        return;
    };
    let http = reqwest::Client::new();
    let cursors = real_cursors(&http, &env.base).await;

    let base = env.base.clone();
    check(1500, any_graphql(cursors), move |(query, vars)| {
        let (base, http) = (base.clone(), reqwest::Client::new());
        async move {
            let (status, v) = post_graphql(&http, &base, &query, &vars, None).await;
            prop_assert!(status < 500, "{status}: {v:?}");
            let codes = error_codes(&v);
            prop_assert!(
                codes
                    .iter()
                    .all(|c| !c.is_empty() && c != "INTERNAL_SERVER_ERROR"),
                "{v:?}"
            );
            Ok(())
        }
    })
    .await;

    let base = env.base.clone();
    check(400, any_rest(), move |path| {
        let (base, http) = (base.clone(), reqwest::Client::new());
        async move {
            let r = http.get(format!("{base}{path}")).send().await;
            let r = r.map_err(|e| TestCaseError::fail(format!("no answer: {e:.200}")))?;
            let status = r.status().as_u16();
            let body = r.text().await.expect("body");
            prop_assert!(status < 500, "{status}: {body}");
            if status != 200 {
                prop_assert!(body.starts_with("{\"error\":"), "{status}: {body}");
            }
            Ok(())
        }
    })
    .await;

    let ws = env.base.replacen("http://", "ws://", 1) + "/graphql/ws";
    check(
        150,
        (any_symbol(), any_venue(), any_int()),
        move |(s, v, d)| {
            let ws = ws.clone();
            async move { subscribe_once(&ws, &s, &v, &d).await }
        },
    )
    .await;
    env.stop.cancel();
}

/// A subscription with arguments that name no collected book: the server answers with a
/// client error (never `INTERNAL_SERVER_ERROR`) and keeps the connection usable.
async fn subscribe_once(ws: &str, s: &str, v: &Value, d: &Value) -> Result<(), TestCaseError> {
    if ["BTCUSDT", "ETHUSDT"].contains(&s.trim().to_uppercase().as_str()) {
        return Ok(()); // a real book: data, not an error (tests/api.rs)
    }
    let mut req = ws.into_client_request().expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut c, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
    let sub = json!({ "id": "1", "type": "subscribe", "payload": {
        "query": "subscription($s: String!, $v: Venue, $d: Int) { book(symbol: $s, venue: $v, depth: $d) { updateId } }",
        "variables": { "s": s, "v": v, "d": d } } });
    c.send(Message::Text(r#"{"type":"connection_init"}"#.into()))
        .await
        .expect("init");
    c.send(Message::Text(
        sonic_rs::to_string(&sub).expect("json").into(),
    ))
    .await
    .expect("subscribe");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .expect("an answer within the deadline")
            .expect("the connection stays open")
            .expect("a frame");
        let Message::Text(t) = msg else { continue };
        let v: Value = sonic_rs::from_str(t.as_str()).expect("json");
        match v.get("type").and_then(|t| t.as_str()) {
            Some("connection_ack") => continue,
            Some("error") | Some("next") => {
                let errors = json!({ "errors": v.get("payload").map(|p| {
                    if p.is_array() { p.clone() } else { p.get("errors").cloned().unwrap_or_default() }
                }) });
                let codes = error_codes(&errors);
                prop_assert!(!codes.is_empty(), "an error, not data: {t}");
                prop_assert!(
                    codes
                        .iter()
                        .all(|c| !c.is_empty() && c != "INTERNAL_SERVER_ERROR"),
                    "{t}"
                );
                return Ok(());
            }
            _ => prop_assert!(false, "unexpected {t}"),
        }
    }
}

pgembed::storage_tests!(
    the_reported_inputs_are_client_errors,
    no_input_reaches_an_internal_error
);
