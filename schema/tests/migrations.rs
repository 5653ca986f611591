//! The migrator against a real PostgreSQL: fresh apply, re-apply, concurrency, refusals.

mod common;

use common::{connect, flavor, fresh_on, migrated, migrated_on};
use pgembed::StoragePath;
use schema::{Error, Flavor, FlavorChoice};

const RELATIONS: &[&str] = &[
    "instruments",
    "depth_updates",
    "book_checkpoints",
    "book_top",
    "book_ticker",
    "trades",
    "mark_prices",
    "sync_events",
    "ingest_batches",
    "storage_policies",
    "schema_migrations",
    "ticker_1s",
    "ticker_1m",
    "ticker_1h",
    "trades_1s",
    "trades_1m",
    "trades_1h",
];

/// Automatic choice on each server: the plain path where TimescaleDB is not preloaded (even
/// where the package is installed), each edition where it is. `plan` first, in the same
/// session: reading the facts must not spoil the session for `CREATE EXTENSION`.
async fn applies_on_an_empty_database_and_reapplies_as_a_no_op(path: StoragePath) {
    let Some((_db, mut client)) = fresh_on(path, "apply").await else {
        return;
    };
    let plan = schema::plan(&mut client, FlavorChoice::Auto)
        .await
        .expect("plan");
    assert_eq!(plan.flavor, flavor(path), "{}", plan.reason);
    assert!(plan.applied.is_empty());
    let expected = schema::migrations(plan.flavor).expect("catalog");
    assert_eq!(plan.pending.len(), expected.len());

    let first = schema::apply(&mut client, FlavorChoice::Auto)
        .await
        .expect("apply");
    assert_eq!(first.applied_now.len(), expected.len());
    for rel in RELATIONS {
        let found: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[rel])
            .await
            .expect("query")
            .get(0);
        assert!(found, "relation {rel} exists after migrating");
    }
    let funcs: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname = 'book_at'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(funcs, 2, "book_at by id and by venue/symbol");
    let role: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'depthbook_reader')",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert!(role);

    let second = schema::apply(&mut client, FlavorChoice::Auto)
        .await
        .expect("re-apply");
    assert!(second.applied_now.is_empty());
    assert_eq!(second.plan.applied.len(), expected.len());
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(recorded as usize, expected.len());
    let flavors: Vec<String> = client
        .query("SELECT DISTINCT flavor FROM schema_migrations", &[])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(flavors, vec![first.plan.flavor.as_str().to_owned()]);
}

async fn concurrent_migrators_apply_each_migration_once(path: StoragePath) {
    let Some((db, _client)) = fresh_on(path, "concurrent").await else {
        return;
    };
    let mut handles = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        handles.push(tokio::spawn(async move {
            let mut c = connect(&url).await;
            schema::apply(&mut c, FlavorChoice::Auto)
                .await
                .map(|r| r.applied_now.len())
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.expect("join").expect("every migrator succeeds");
    }
    let client = connect(&db.url).await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(
        total as i64, rows,
        "each migration applied by exactly one process"
    );
}

#[tokio::test]
async fn a_changed_applied_migration_is_refused() {
    let (_db, mut client, _) = migrated("tampered").await;
    client
        .execute(
            "UPDATE schema_migrations SET checksum = 'deadbeef' WHERE version = 2",
            &[],
        )
        .await
        .expect("tamper");
    let err = schema::apply(&mut client, FlavorChoice::Auto)
        .await
        .expect_err("refused");
    match &err {
        Error::Tampered {
            version, recorded, ..
        } => {
            assert_eq!(*version, 2);
            assert_eq!(recorded, "deadbeef");
        }
        other => panic!("expected Tampered, got {other}"),
    }
    assert!(
        err.to_string().contains("0002"),
        "message names the migration: {err}"
    );
    // --plan refuses the same way.
    assert!(matches!(
        schema::plan(&mut client, FlavorChoice::Auto).await,
        Err(Error::Tampered { .. })
    ));
}

#[tokio::test]
async fn a_migration_from_a_newer_binary_is_refused() {
    let (_db, mut client, flavor) = migrated("newer").await;
    client
        .execute(
            "INSERT INTO schema_migrations (version, name, file, flavor, checksum, duration_ms)
             VALUES (999, 'future', '0999_future.sql', $1, 'x', 0)",
            &[&flavor.as_str()],
        )
        .await
        .expect("insert");
    assert!(matches!(
        schema::apply(&mut client, FlavorChoice::Auto).await,
        Err(Error::UnknownApplied { version: 999, .. })
    ));
}

async fn the_recorded_path_cannot_be_switched(path: StoragePath) {
    let Some((_db, mut client, flavor)) = migrated_on(path, "switch").await else {
        return;
    };
    for other in Flavor::ALL.into_iter().filter(|f| *f != flavor) {
        assert!(matches!(
            schema::apply(&mut client, FlavorChoice::Require(other)).await,
            Err(Error::FlavorMismatch { .. })
        ));
    }
    schema::apply(&mut client, FlavorChoice::Require(flavor))
        .await
        .expect("the recorded path is accepted");
}

/// Forced plain: on every server, and nothing of TimescaleDB is created.
async fn plain_postgres_can_be_required(path: StoragePath) {
    let Some((_db, mut client)) = fresh_on(path, "require_pg").await else {
        return;
    };
    let report = schema::apply(&mut client, FlavorChoice::Require(Flavor::Postgres))
        .await
        .expect("apply");
    assert_eq!(report.plan.flavor, Flavor::Postgres);
    let row = client
        .query_one(
            "SELECT to_regclass('rollup.ticker_1s') IS NOT NULL,
                    EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await
        .expect("query");
    assert!(row.get::<_, bool>(0));
    assert!(!row.get::<_, bool>(1), "no extension on the plain path");
}

/// Asking for the other edition than the server runs is refused before anything changes.
async fn requiring_the_edition_the_server_does_not_run_is_refused(path: StoragePath) {
    let wrong = match path {
        StoragePath::Timescale => Flavor::TimescaleApache,
        StoragePath::TimescaleApache => Flavor::Timescale,
        StoragePath::Postgres => return,
    };
    let Some((_db, mut client)) = fresh_on(path, "wrong_edition").await else {
        return;
    };
    let err = schema::apply(&mut client, FlavorChoice::Require(wrong))
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::TimescaleUnavailable(_)), "{err}");
    assert!(err.to_string().contains("license"), "{err}");
    let ledger: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NULL", &[])
        .await
        .expect("query")
        .get(0);
    assert!(ledger, "nothing was created");
}

pgembed::storage_tests!(
    applies_on_an_empty_database_and_reapplies_as_a_no_op,
    concurrent_migrators_apply_each_migration_once,
    the_recorded_path_cannot_be_switched,
    plain_postgres_can_be_required,
    requiring_the_edition_the_server_does_not_run_is_refused,
);

/// The plain server does not preload TimescaleDB (whether or not the package is installed):
/// requiring it is a clear error, and the session stays usable.
#[tokio::test]
async fn requiring_timescaledb_where_it_cannot_be_created_is_a_clear_error() {
    let Some((db, mut client)) = fresh_on(StoragePath::Postgres, "require_ts").await else {
        return;
    };
    assert!(!db.timescaledb);
    for edition in [Flavor::Timescale, Flavor::TimescaleApache] {
        let err = schema::apply(&mut client, FlavorChoice::Require(edition))
            .await
            .expect_err("refused");
        assert!(matches!(err, Error::TimescaleUnavailable(_)), "{err}");
        assert!(err.to_string().contains("timescaledb"));
    }
    let report = schema::apply(&mut client, FlavorChoice::Auto)
        .await
        .expect("the same session migrates on the plain path");
    assert_eq!(report.plan.flavor, Flavor::Postgres);
}
