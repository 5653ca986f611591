//! `ingest migrate` as an operator runs it, against a private database.

use std::process::Command;

use pgembed::StoragePath;

fn ingest(url: Option<&str>, args: &[&str]) -> (bool, String, String) {
    ingest_with(url, args, &[])
}

fn ingest_with(url: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingest"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DEPTHBOOK_RETENTION")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    if let Some(u) = url {
        cmd.env("DATABASE_URL", u);
    }
    let out = cmd.output().expect("run ingest");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Automatic choice on each server: the plain one (where the package may be installed but is
/// not preloaded), the community and the Apache edition. The migration takes a retention
/// change at once, while TimescaleDB's jobs start (they could deadlock it before).
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn migrate_prints_its_plan_and_creates_every_relation(path: StoragePath) {
    let Some(db) = pgembed::test_database_on(path, "cli_migrate")
        .await
        .expect("database")
    else {
        return;
    };
    let url = db.url.clone();
    let run = move |args: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || ingest(Some(&url), args))
    };

    let (ok, plan, err) = run(&["migrate", "--plan"]).await.expect("join");
    assert!(ok, "{err}");
    assert!(plan.contains(&format!("path: {path} (")), "{plan}");
    let installed = pgembed::Binaries::locate().is_ok_and(|b| b.timescaledb);
    match path {
        StoragePath::Postgres if installed => {
            assert!(plan.contains("shared_preload_libraries"), "{plan}")
        }
        StoragePath::TimescaleApache => {
            assert!(plan.contains("no compression"), "{plan}")
        }
        _ => {}
    }
    assert!(plan.contains("pending  0001 0001_core.sql"), "{plan}");

    let (ok, out, err) = run(&["migrate", "--retention", "trades=120 days"])
        .await
        .expect("join");
    assert!(ok, "{err}");
    assert!(out.contains("applied 0005_book_at.sql"), "{out}");
    assert!(out.contains("storage policies updated"), "{out}");

    let (ok, again, err) = run(&["migrate", "--plan"]).await.expect("join");
    assert!(ok, "{err}");
    assert!(again.contains("up to date"), "{again}");
    assert!(!again.contains("pending"), "{again}");

    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    for rel in [
        "instruments",
        "depth_updates",
        "book_checkpoints",
        "book_top",
        "book_ticker",
        "trades",
        "mark_prices",
        "sync_events",
        "ingest_batches",
        "ticker_1s",
        "ticker_1m",
        "ticker_1h",
        "trades_1s",
        "trades_1m",
        "trades_1h",
    ] {
        let found: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&rel])
            .await
            .expect("query")
            .get(0);
        assert!(found, "{rel}");
    }
    let kept: String = client
        .query_one(
            "SELECT drop_after::text FROM storage_policies WHERE relation = 'trades'",
            &[],
        )
        .await
        .expect("policy")
        .get(0);
    assert_eq!(kept, "120 days");

    let (ok, out, _) = run(&["maintain"]).await.expect("join");
    assert!(ok);
    assert!(out.contains("deleted"), "{out}");

    let login = format!("reader_{}", db.name);
    let arg: &'static str = Box::leak(format!("{login}:pw1,{login}_2:pw2").into_boxed_str());
    let args: &'static [&'static str] =
        Box::leak(vec!["migrate", "--reader-login", arg].into_boxed_slice());
    let (ok, out, err) = run(args).await.expect("join");
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("reader login {login} ready")),
        "{out}"
    );
    let members: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid
             WHERE g.rolname = 'depthbook_reader' AND r.rolname IN ($1, $2) AND r.rolcanlogin",
            &[&login, &format!("{login}_2")],
        )
        .await
        .expect("members")
        .get(0);
    assert_eq!(members, 2);
    // Again: the passwords are updated, nothing fails.
    let (ok, _, err) = run(args).await.expect("join");
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["migrate", "--reader-login", "Bad-Name:pw"])
        .await
        .expect("join");
    assert!(!ok && err.contains("lower-case"), "{err}");
    client
        .batch_execute(&format!("DROP ROLE \"{login}\"; DROP ROLE \"{login}_2\""))
        .await
        .expect("cleanup");

    let (ok, _, err) = run(&["migrate", "--retention", "trades=soon"])
        .await
        .expect("join");
    assert!(!ok);
    assert!(err.contains("soon") && err.contains("interval"), "{err}");
    let (ok, _, err) = run(&["migrate", "--retention", "nosuchtable=1d"])
        .await
        .expect("join");
    assert!(!ok);
    assert!(err.contains("unknown table"), "{err}");
}

#[test]
fn healthcheck_exits_non_zero_when_nothing_answers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let (ok, _, err) = ingest(
        None,
        &["healthcheck", &format!("http://127.0.0.1:{port}/health")],
    );
    assert!(!ok);
    assert!(err.contains("GET"), "{err}");
}

#[test]
fn without_a_database_it_says_how_to_give_one() {
    let (ok, _, err) = ingest(None, &["migrate"]);
    assert!(!ok);
    assert!(err.contains("DATABASE_URL"), "{err}");
}

#[test]
fn an_unreachable_database_is_a_clear_error_not_a_panic() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let (ok, _, err) = ingest(
        Some(&format!("postgres://x@127.0.0.1:{port}/x")),
        &["migrate"],
    );
    assert!(!ok);
    assert!(err.contains("connecting to the database"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A bad depth window is refused as the command line is read, before any connection, from the
/// flag and from the environment alike.
#[test]
fn a_bad_depth_window_is_refused_before_connecting() {
    let url = "postgres://x@127.0.0.1:1/x";
    let (ok, _, err) = ingest(Some(url), &["run", "--depth-levels", "low=100,lowest=5"]);
    assert!(!ok);
    assert!(err.contains("\"lowest=5\": expected TIER=N"), "{err}");
    assert!(!err.contains("connecting"), "{err}");
    let (ok, _, err) = ingest_with(Some(url), &["run"], &[("INGEST_DEPTH_LEVELS", "low=0")]);
    assert!(!ok);
    assert!(err.contains("a window is 1 to 5000 levels"), "{err}");
}

/// `--storage postgres` on a server that preloads TimescaleDB: nothing of it is touched.
#[tokio::test]
async fn forcing_the_plain_path_on_a_timescale_server_creates_no_extension() {
    let test = "forcing_the_plain_path_on_a_timescale_server_creates_no_extension";
    if !pgembed::skip_unless_available(StoragePath::Timescale, test) {
        return;
    }
    let Some(db) = pgembed::test_database_on(StoragePath::Timescale, "cli_force_pg")
        .await
        .expect("database")
    else {
        return;
    };
    let url = db.url.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        ingest(Some(&url), &["migrate", "--storage", "postgres"])
    })
    .await
    .expect("join");
    assert!(ok, "{err}");
    assert!(out.contains("path: postgres"), "{out}");
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let ext: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(ext, 0);
}

pgembed::storage_tests!(migrate_prints_its_plan_and_creates_every_relation);

/// The hot tier as compose and cloud-init give it: `DEPTHBOOK_RETENTION`, comma-separated, and
/// empty when unset; `--archive` turns a table's wait for files off.
#[tokio::test]
async fn the_hot_tier_comes_from_the_environment() {
    let db = pgembed::test_database("migrate_hot_tier")
        .await
        .expect("db");
    let url = db.url.clone();
    let run = |env: &'static [(&'static str, &'static str)], args: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || ingest_with(Some(&url), args, env))
    };
    const HOT: &[(&str, &str)] = &[(
        "DEPTHBOOK_RETENTION",
        "depth_updates=3 days,book_ticker=3 days",
    )];
    let (ok, _, err) = run(HOT, &["migrate", "--archive", "book_ticker=off"])
        .await
        .expect("join");
    assert!(ok, "{err}");
    let (ok, _, err) = run(&[("DEPTHBOOK_RETENTION", "")], &["migrate"])
        .await
        .expect("join");
    assert!(ok, "an empty variable changes nothing: {err}");
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT relation, drop_after::text, archive_as FROM storage_policies
             WHERE relation IN ('depth_updates', 'book_ticker') ORDER BY 1",
            &[],
        )
        .await
        .expect("policies");
    let got: Vec<(String, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            ("book_ticker".into(), "3 days".into(), None),
            (
                "depth_updates".into(),
                "3 days".into(),
                Some("incremental_book_L2".into())
            ),
        ]
    );
}
