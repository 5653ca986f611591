//! The API on a read replica, for real: a streaming hot standby (`pg_basebackup -R`) of the
//! server ingest writes to, the API's queries on the standby and its live hub on the primary,
//! as `graphql --database-url PRIMARY --read-database-url REPLICA` runs it. Every storage path.

mod common;

use common::{count, errors, gql, start_api_on, wait_until, DEADLINE};
use futures_util::{SinkExt, StreamExt};
use pgembed::StoragePath;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use tokio_postgres::{Client, NoTls};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

async fn connect(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    c
}

async fn health(base: &str) -> (u16, sonic_rs::Value) {
    let r = reqwest::get(format!("{base}/health")).await.expect("get");
    let status = r.status().as_u16();
    (
        status,
        sonic_rs::from_str(&r.text().await.expect("body")).expect("json"),
    )
}

/// A book at `at` with its levels, as JSON text (to compare two servers' answers).
async fn book_at(base: &str, at: &str) -> String {
    let v = gql(base, &format!(r#"{{ book(symbol: "BTCUSDT", at: "{at}", depth: 20) {{ updateId time bids {{ price qty }} asks {{ price qty }} }} }}"#)).await;
    assert!(errors(&v).is_empty(), "{:?}", errors(&v));
    let book = v.get("data").and_then(|d| d.get("book")).expect("book");
    let bids = book.get("bids").and_then(|b| b.as_array()).expect("bids");
    assert_eq!(bids.len(), 20, "a full book at {at}");
    sonic_rs::to_string(book).expect("json")
}

/// One live update of a bookTicker subscription through the API at `base`.
async fn a_live_ticker(base: &str) {
    let url = base.replacen("http://", "ws://", 1) + "/graphql/ws";
    let mut req = url.into_client_request().expect("request");
    let proto = "graphql-transport-ws".parse().expect("header");
    req.headers_mut().insert("Sec-WebSocket-Protocol", proto);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
    let init = r#"{"type":"connection_init"}"#;
    ws.send(Message::Text(init.into())).await.expect("init");
    let sub = r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { bookTicker(symbol: \"BTCUSDT\") { updateId } }"}}"#;
    ws.send(Message::Text(sub.into())).await.expect("subscribe");
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a live update within the deadline")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let v: sonic_rs::Value = sonic_rs::from_str(t.as_str()).expect("json");
            assert_ne!(v.get("type").and_then(|t| t.as_str()), Some("error"), "{t}");
            if v.get("type").and_then(|t| t.as_str()) == Some("next") {
                return;
            }
        }
    }
}

/// Sessions of `login` on a server.
async fn sessions(db: &Client, login: &str) -> Vec<String> {
    db.query(
        "SELECT query FROM pg_stat_activity WHERE usename = $1",
        &[&login],
    )
    .await
    .expect("pg_stat_activity")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[allow(clippy::too_many_lines)] // one scenario, step by step
async fn queries_read_the_replica_and_subscriptions_the_primary(path: StoragePath) {
    let Some(env) = common::setup(path).await else {
        return;
    };
    let primary = pgembed::shared_on(path).expect("the test's server");
    // A login of its own, so this API's sessions can be told apart on either server; roles are
    // cluster-wide, so the standby has it too.
    let login = format!("replica_{}", env._db.name);
    env.admin
        .batch_execute(&format!(
            "CREATE ROLE \"{login}\" LOGIN IN ROLE depthbook_reader"
        ))
        .await
        .expect("login");
    let (port, preload) = (primary.port(), path.preload());
    let replica = tokio::task::spawn_blocking(move || {
        pgembed::PgServer::start(pgembed::Options {
            ephemeral: true,
            timescaledb: preload,
            replica_of: Some(port),
            ..pgembed::Options::default()
        })
    })
    .await
    .expect("join")
    .expect("a standby of the test's server");
    let on = |port: u16| format!("postgres://{login}@127.0.0.1:{port}/{}", env._db.name);
    let standby = connect(&replica.url(&env._db.name)).await;
    let in_recovery: bool = standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("recovery")
        .get(0);
    assert!(in_recovery, "the replica is a hot standby");
    let base = start_api_on(&on(primary.port()), &on(replica.port()), None, 2).await;

    // /health reads the standby: fresh, and says how far behind it is.
    let b = base.clone();
    wait_until("the replica API healthy", || {
        let b = b.clone();
        async move { health(&b).await.0 == 200 }
    })
    .await;
    let (_, h) = health(&base).await;
    assert_eq!(
        h.get("replica").and_then(|r| r.as_bool()),
        Some(true),
        "{h:?}"
    );
    let lag = h.get("replica_lag_seconds").and_then(|l| l.as_f64());
    assert!(lag.is_some_and(|l| l < 60.0), "{h:?}");
    let (_, h) = health(&env.base).await;
    assert_eq!(
        h.get("replica").and_then(|r| r.as_bool()),
        Some(false),
        "{h:?}"
    );

    // A book two seconds before the primary's newest batch, once the standby has replayed that
    // batch (every row of the instant is committed well within two seconds): the same answer
    // the primary gives.
    let r = env
        .admin
        .query_one(
            "SELECT max(committed_at)::text, to_char((max(committed_at) - interval '2 seconds') \
                 AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM ingest_batches",
            &[],
        )
        .await
        .expect("an instant");
    let (newest, at): (String, String) = (r.get(0), r.get(1));
    let s = &standby;
    let sql = format!("SELECT count(*) FROM ingest_batches WHERE committed_at >= '{newest}'");
    wait_until("the standby replays the newest batch", || {
        let sql = sql.clone();
        async move { count(s, &sql).await > 0 }
    })
    .await;
    assert_eq!(book_at(&base, &at).await, book_at(&env.base, &at).await);

    // Live updates come through the primary's NOTIFY.
    a_live_ticker(&base).await;

    // Where the sessions are: queries on the standby, only the LISTEN on the primary.
    assert!(
        !sessions(&standby, &login).await.is_empty(),
        "queries on the standby"
    );
    let on_primary = sessions(&env.admin, &login).await;
    assert_eq!(on_primary.len(), 1, "{on_primary:?}");
    assert!(on_primary[0].starts_with("LISTEN"), "{on_primary:?}");

    // The standby gone: a clear error and an unhealthy /health, not a hang or a panic.
    drop(standby);
    tokio::task::spawn_blocking(move || replica.stop())
        .await
        .expect("stopped");
    let (status, h) = health(&base).await;
    assert_eq!(status, 503, "{h:?}");
    assert_eq!(h.get("database").and_then(|d| d.as_bool()), Some(false));
    let v = gql(
        &base,
        r#"{ book(symbol: "BTCUSDT", depth: 1) { updateId } }"#,
    )
    .await;
    assert!(!errors(&v).is_empty(), "{v:?}");

    env.stop.cancel();
    tokio::time::timeout(DEADLINE, env.run)
        .await
        .expect("in time")
        .expect("join")
        .expect("clean stop");
}

fn check(path: StoragePath, test: &str) {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        pgembed::say_skipped(test, "DATABASE_URL is set: no private server to replicate");
        return;
    }
    if !pgembed::skip_unless_available(path, test) {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(queries_read_the_replica_and_subscriptions_the_primary(path));
}

#[test]
fn postgres() {
    check(StoragePath::Postgres, "replica::postgres");
}

#[test]
fn timescaledb() {
    check(StoragePath::Timescale, "replica::timescaledb");
}

#[test]
fn timescaledb_apache() {
    check(StoragePath::TimescaleApache, "replica::timescaledb_apache");
}
