//! TLS in front of the API, for real: Debian's `caddy` runs the project's own `caddy/Caddyfile`
//! in front of a running `graphql` (and a stand-in for Grafana), with `DOMAIN=localhost`, so
//! Caddy issues the certificate from its internal CA. Clients trust only that CA's root, never
//! an insecure flag: a GraphQL query with the token over HTTPS, a graphql-ws subscription over
//! WSS that delivers a live trade, Grafana under `/grafana/`, and plain HTTP redirected.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::DEADLINE;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "s3cret";

struct Caddy {
    child: Child,
    _state: tempfile::TempDir,
    root_pem: PathBuf,
    https: u16,
    http: u16,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn caddy_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("caddy"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install caddy (.ci/run does)"
        );
        pgembed::say_skipped("tls_proxy", "caddy is not installed (apt install caddy)");
    }
    found
}

/// Caddy with the project's Caddyfile in front of `api` and `grafana` (host:port each).
fn start_caddy(caddy: &Path, api: &str, grafana: &str) -> Caddy {
    let state = tempfile::tempdir().expect("caddy's state");
    // The Caddyfile looks the API's name up (every replica it resolves to); an address
    // resolves to itself.
    let (api_host, api_port) = api.rsplit_once(':').expect("host:port");
    let (http, https) = (free_port(), free_port());
    let caddyfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../caddy/Caddyfile");
    let child = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env("DOMAIN", "localhost")
        .env("HTTP_PORT", http.to_string())
        .env("HTTPS_PORT", https.to_string())
        .env("CADDY_ADMIN", format!("127.0.0.1:{}", free_port()))
        .env("API_HOST", api_host)
        .env("API_PORT", api_port)
        .env("GRAFANA_UPSTREAM", grafana)
        .env("XDG_DATA_HOME", state.path().join("data"))
        .env("XDG_CONFIG_HOME", state.path().join("config"))
        .env("HOME", state.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("caddy starts");
    let root_pem = state
        .path()
        .join("data/caddy/pki/authorities/local/root.crt");
    Caddy {
        child,
        _state: state,
        root_pem,
        https,
        http,
    }
}

/// A stand-in for Grafana: answers under `/grafana/`, as Grafana does when it serves itself
/// from that sub-path.
async fn fake_grafana() -> String {
    let app = axum::Router::new().route(
        "/grafana/api/health",
        axum::routing::get(|| async { "{\"database\":\"ok\",\"stand-in\":\"grafana\"}" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

/// Waits for Caddy's root certificate and an HTTPS answer; returns a client trusting that root.
async fn https_client(caddy: &Caddy) -> (reqwest::Client, Vec<u8>) {
    let (pem, health) = (
        &caddy.root_pem,
        format!("https://localhost:{}/health", caddy.https),
    );
    common::wait_until("caddy's internal CA", || async move { pem.is_file() }).await;
    let root = std::fs::read(pem).expect("root certificate");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&root).expect("a PEM certificate"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let (c, url) = (&client, &health);
    common::wait_until("HTTPS through caddy", || async move {
        c.get(url).send().await.is_ok()
    })
    .await;
    (client, root)
}

fn rustls_trusting(root_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(root_pem) {
        roots.add(cert.expect("a certificate")).expect("a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A graphql-ws subscription over WSS, through caddy: a live trade arrives.
async fn a_trade_over_wss(https: u16, root: &[u8]) {
    let url = format!("wss://localhost:{https}/graphql/ws?token={TOKEN}");
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let connector = tokio_tungstenite::Connector::Rustls(rustls_trusting(root));
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector))
            .await
            .expect("WSS through caddy");
    ws.send(Message::Text(r#"{"type":"connection_init"}"#.into()))
        .await
        .expect("init");
    ws.send(Message::Text(r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { trades(symbol: \"BTCUSDT\") { aggTradeId price } }"}}"#.into()))
        .await
        .expect("subscribe");
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a live trade within the deadline")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
            if v["type"] == "next" {
                assert!(
                    v["payload"]["data"]["trades"]["aggTradeId"].is_string()
                        || v["payload"]["data"]["trades"]["aggTradeId"].is_number(),
                    "{t}"
                );
                return;
            }
            assert_ne!(v["type"], "error", "{t}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_serves_the_api_over_https_and_wss_only() {
    let Some(caddy_bin) = caddy_binary() else {
        return;
    };
    let Some(env) = common::setup(pgembed::StoragePath::Postgres).await else {
        return;
    };
    let api = common::start_api(&env.reader_url, Some(TOKEN.into())).await;
    let grafana = fake_grafana().await;
    let caddy = start_caddy(&caddy_bin, api.trim_start_matches("http://"), &grafana);
    let (client, root) = https_client(&caddy).await;
    let base = format!("https://localhost:{}", caddy.https);

    let r = client
        .post(format!("{base}/graphql"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"query": "{ instruments(venue: SPOT) { symbol } }"}))
        .send()
        .await
        .expect("a query over HTTPS");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body.to_string().contains("BTCUSDT"), "{body}");
    let r = client
        .get(format!("{base}/stats"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        401,
        "the token is still required behind the proxy"
    );

    let r = client
        .get(format!("{base}/grafana/api/health"))
        .send()
        .await
        .expect("grafana");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("body").contains("stand-in"));

    let r = client
        .get(format!("http://localhost:{}/health", caddy.http))
        .send()
        .await
        .expect("plain HTTP");
    assert!(r.status().is_redirection(), "{}", r.status());
    let to = r.headers()["location"].to_str().expect("ascii");
    assert!(to.starts_with("https://localhost"), "{to}");

    a_trade_over_wss(caddy.https, &root).await;
    env.stop.cancel();
}
