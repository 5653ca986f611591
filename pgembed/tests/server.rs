//! The private server starts, serves, and leaves nothing behind.

use pgembed::{Options, PgServer};

#[tokio::test]
async fn starts_serves_and_stops_cleanly() {
    let server = tokio::task::spawn_blocking(|| {
        PgServer::start(Options {
            ephemeral: true,
            ..Options::default()
        })
    })
    .await
    .expect("join")
    .expect("server starts");
    let dir = server.dir().to_path_buf();
    let port = server.port();
    assert!(dir.join("pgdata/PG_VERSION").is_file());

    let (client, conn) = tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(one, 1);
    let preload: String = client
        .query_one("SELECT current_setting('shared_preload_libraries')", &[])
        .await
        .expect("setting")
        .get(0);
    assert_eq!(preload.contains("timescaledb"), server.timescaledb());
    drop(client);
    let _ = conn.await;

    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("join");
    assert!(!dir.exists(), "temp dir removed on stop");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on the port after stop"
    );
}

#[tokio::test]
async fn a_persistent_dir_survives_a_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("pg");
    let opts = Options {
        dir: Some(dir.clone()),
        ephemeral: true,
        ..Options::default()
    };
    let o = opts.clone();
    let server = tokio::task::spawn_blocking(move || PgServer::start(o))
        .await
        .expect("join")
        .expect("start");
    {
        let (client, conn) =
            tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect");
        let conn = tokio::spawn(conn);
        client
            .batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
            .await
            .expect("write");
        drop(client);
        let _ = conn.await;
    }
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("join");
    assert!(
        dir.join("pgdata/PG_VERSION").is_file(),
        "persistent data stays"
    );

    let server = tokio::task::spawn_blocking(move || PgServer::start(opts))
        .await
        .expect("join")
        .expect("restart");
    let (client, conn) = tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    let x: i32 = client
        .query_one("SELECT x FROM kept", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(x, 42);
    drop(client);
    let _ = conn.await;
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("join");
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c
}

/// A replica starts from a base backup of its primary, answers read-only and keeps replaying
/// what the primary commits afterwards.
#[tokio::test]
async fn a_replica_follows_its_primary() {
    let start = |replica_of| {
        tokio::task::spawn_blocking(move || {
            PgServer::start(Options {
                ephemeral: true,
                replica_of,
                ..Options::default()
            })
        })
    };
    let primary = start(None).await.expect("join").expect("primary starts");
    let p = connect(&primary.url("postgres")).await;
    p.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .expect("write");
    let replica = start(Some(primary.port()))
        .await
        .expect("join")
        .expect("replica starts");
    let r = connect(&replica.url("postgres")).await;
    let in_recovery: bool = r
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("recovery")
        .get(0);
    assert!(in_recovery);
    let err = r.batch_execute("INSERT INTO t VALUES (9)").await;
    assert!(err.is_err(), "a standby refuses writes");
    p.batch_execute("INSERT INTO t VALUES (2)")
        .await
        .expect("write");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let sum: i64 = r
            .query_one("SELECT sum(x) FROM t", &[])
            .await
            .expect("read")
            .get(0);
        if sum == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "replayed: sum {sum}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop((p, r));
    tokio::task::spawn_blocking(move || drop((replica, primary)))
        .await
        .expect("join");
}

#[tokio::test]
async fn test_databases_are_separate() {
    let a = pgembed::test_database("sep_a").await.expect("db a");
    let b = pgembed::test_database("sep_b").await.expect("db b");
    assert_ne!(a.name, b.name);
    let (ca, conn) = tokio_postgres::connect(&a.url, tokio_postgres::NoTls)
        .await
        .expect("connect a");
    tokio::spawn(conn);
    ca.batch_execute("CREATE TABLE only_in_a (x int)")
        .await
        .expect("create");
    let (cb, conn) = tokio_postgres::connect(&b.url, tokio_postgres::NoTls)
        .await
        .expect("connect b");
    tokio::spawn(conn);
    let n: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(n, 0);
}

/// Each storage path's server preloads (or not) and licenses TimescaleDB as the path says.
async fn each_path_gets_the_server_it_names(path: pgembed::StoragePath) {
    let db = pgembed::test_database_on(path, "edition")
        .await
        .expect("database")
        .expect("this path is available here");
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT current_setting('shared_preload_libraries'),
                    current_setting('timescaledb.license', true)",
            &[],
        )
        .await
        .expect("settings");
    let (preload, license): (String, Option<String>) = (row.get(0), row.get(1));
    match path {
        pgembed::StoragePath::Postgres => assert!(!preload.contains("timescaledb")),
        pgembed::StoragePath::Timescale => {
            assert!(preload.contains("timescaledb"));
            assert_ne!(license.as_deref(), Some("apache"));
        }
        pgembed::StoragePath::TimescaleApache => {
            assert!(preload.contains("timescaledb"));
            assert_eq!(license.as_deref(), Some("apache"));
        }
    }
    drop(client);
    let _ = conn.await;
}

pgembed::storage_tests!(each_path_gets_the_server_it_names);
