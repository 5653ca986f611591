//! The playground in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver) opens `/` of an API that requires a token, with
//! every host but this one unresolvable, so a page that needed a CDN would stay blank. The
//! token is entered once in the page; a query's result is checked against the database, the
//! docs explorer must list the schema's types, and a graphql-ws subscription from the page
//! must deliver a live trade.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::DEADLINE;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const TOKEN: &str = "s3cret";

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver and Chromium, or `None` after saying what is missing. CI installs both, so
/// there a missing browser fails the test instead of skipping it.
fn browser() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let found = which("chromedriver").zip(which("chromium").or_else(|| which("chromium-browser")));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and chromium-driver (.ci/run does)"
        );
        eprintln!("skipped: chromium or chromedriver is not installed (apt install chromium chromium-driver) (playground)");
    }
    found
}

async fn start_driver(chromedriver: &std::path::Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    common::wait_until("chromedriver ready", || {
        let status = status.clone();
        async move {
            reqwest::get(&status)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    Driver { child, url }
}

async fn open_browser(
    driver: &Driver,
    chromium: &std::path::Path,
    profile: &std::path::Path,
) -> Client {
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
                // Offline but for this server: a CDN URL would not resolve.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("an object literal")
    };
    // chromedriver listens on loopback: plain HTTP, no TLS stack needed.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Polls `script` (which returns a string) until `done` holds for its value.
async fn wait_for_js(c: &Client, what: &str, script: &str, done: impl Fn(&str) -> bool) -> String {
    let start = tokio::time::Instant::now();
    loop {
        let v = c.execute(script, vec![]).await.expect("script runs");
        let text = v.as_str().unwrap_or_default().to_owned();
        if done(&text) {
            return text;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; last: {text:.2000}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const RESULT: &str = "const cm = document.querySelector('.result-window .CodeMirror');
                      return cm && cm.CodeMirror ? cm.CodeMirror.getValue() : '';";

async fn run_query_in_page(c: &Client) {
    c.wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(".graphiql-execute-button"))
        .await
        .expect("GraphiQL rendered")
        .click()
        .await
        .expect("run");
}

fn page_url(base: &str, query: &str) -> String {
    let enc: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{base}/?query={enc}")
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn graphiql_queries_documents_and_subscribes(path: pgembed::StoragePath) {
    let Some((chromedriver, chromium)) = browser() else {
        return;
    };
    let Some(env) = common::setup(path).await else {
        return;
    };
    let api = common::start_api(&env.reader_url, Some(TOKEN.into())).await;
    let (from, to): (String, String) = {
        let r = env.admin.query_one(
            "SELECT to_char(min(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    to_char(max(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
             FROM trades t JOIN instruments i ON i.id = t.instrument_id WHERE i.venue = 'spot' AND i.symbol = 'BTCUSDT'",
            &[],
        ).await.expect("range");
        (r.get(0), r.get(1))
    };
    let want: Vec<String> = env
        .admin
        .query(
            "SELECT agg_trade_id::text FROM trades t JOIN instruments i ON i.id = t.instrument_id
             WHERE i.venue = 'spot' AND i.symbol = 'BTCUSDT' AND time >= $1::text::timestamptz AND time < $2::text::timestamptz
             ORDER BY time, agg_trade_id LIMIT 5",
            &[&from, &to],
        )
        .await
        .expect("trades")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(want.len(), 5);

    let driver = start_driver(&chromedriver).await;
    let profile = tempfile::tempdir().expect("profile");
    let c = open_browser(&driver, &chromium, profile.path()).await;

    // A query, with the token entered once in the page.
    let query = format!(
        "{{ trades(symbol: \"BTCUSDT\", from: \"{from}\", to: \"{to}\", first: 5) {{ edges {{ node {{ aggTradeId }} }} }} }}"
    );
    c.goto(&page_url(&api, &query))
        .await
        .expect("open the page");
    let field = c
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css("#token"))
        .await
        .expect("the token field, shown because this server requires one");
    field.send_keys(TOKEN).await.expect("type the token");
    c.find(Locator::Css("#token-use"))
        .await
        .expect("button")
        .click()
        .await
        .expect("use it");
    run_query_in_page(&c).await;
    let text = wait_for_js(&c, "the query's result", RESULT, |t| {
        t.contains("aggTradeId")
    })
    .await;
    let result: serde_json::Value =
        serde_json::from_str(&text).expect("the result pane holds JSON");
    let got: Vec<&str> = result["data"]["trades"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter_map(|e| e["node"]["aggTradeId"].as_str())
        .collect();
    assert_eq!(got, want, "the page shows what the database holds");

    // The docs explorer lists the schema's types (it reads them by introspection).
    c.find(Locator::Css(
        ".graphiql-sidebar button[aria-label*='Documentation Explorer']",
    ))
    .await
    .expect("docs button")
    .click()
    .await
    .expect("open docs");
    let docs =
        "const d = document.querySelector('.graphiql-doc-explorer'); return d ? d.innerText : '';";
    let text = wait_for_js(&c, "the docs explorer", docs, |t| t.contains("Query")).await;
    assert!(text.contains("SubscriptionRoot"), "{text}");
    c.find(Locator::XPath(
        "//*[contains(@class,'graphiql-doc-explorer')]//a[text()='Query']",
    ))
    .await
    .expect("the Query root type")
    .click()
    .await
    .expect("open Query");
    let fields = wait_for_js(&c, "Query's fields", docs, |t| t.contains("depthUpdates")).await;
    for f in [
        "book",
        "bookTicker",
        "trades",
        "candles",
        "dataQuality",
        "instruments",
    ] {
        assert!(fields.contains(f), "{f} in {fields}");
    }

    // A subscription from the page, in a new load: the token is remembered.
    let sub = "subscription { trades(symbol: \"BTCUSDT\") { aggTradeId price } }";
    c.goto(&page_url(&api, sub)).await.expect("reopen");
    let state = "return document.getElementById('token-state').innerText;";
    wait_for_js(&c, "the remembered token", state, |t| t == "token set").await;
    run_query_in_page(&c).await;
    let text = wait_for_js(&c, "a live trade", RESULT, |t| t.contains("aggTradeId")).await;
    let live: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let id: i64 = live["data"]["trades"]["aggTradeId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a trade id");
    let stored: i64 = env
        .admin
        .query_one(
            "SELECT count(*) FROM trades t JOIN instruments i ON i.id = t.instrument_id
             WHERE i.venue = 'spot' AND i.symbol = 'BTCUSDT' AND agg_trade_id = $1",
            &[&id],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 1, "the page showed committed trade {id}");

    c.close().await.expect("close the browser");
    env.stop.cancel();
}

pgembed::storage_tests!(graphiql_queries_documents_and_subscribes);
