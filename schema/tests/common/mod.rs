//! Shared by the schema tests: a migrated database of its own per test.
#![allow(dead_code)]

use pgembed::{StoragePath, TestDatabase};
use schema::{Flavor, FlavorChoice};
use tokio_postgres::{Client, NoTls};

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

pub async fn fresh(name: &str) -> (TestDatabase, Client) {
    let db = pgembed::test_database(name).await.expect("test database");
    let client = connect(&db.url).await;
    (db, client)
}

pub async fn migrated(name: &str) -> (TestDatabase, Client, Flavor) {
    let (db, mut client) = fresh(name).await;
    let report = schema::apply(&mut client, FlavorChoice::Auto)
        .await
        .expect("migrations apply");
    (db, client, report.plan.flavor)
}

pub use pgembed::say_skipped;

/// The schema path a storage path's server takes.
pub fn flavor(path: StoragePath) -> Flavor {
    Flavor::parse(path.as_str()).expect("every storage path is a schema flavor")
}

/// A fresh database on `path`'s server; `None` (said) where this machine has no such server.
pub async fn fresh_on(path: StoragePath, name: &str) -> Option<(TestDatabase, Client)> {
    let Some(db) = pgembed::test_database_on(path, name)
        .await
        .expect("test database")
    else {
        say_skipped(name, &format!("{path}: the server here does not run it"));
        return None;
    };
    let client = connect(&db.url).await;
    Some((db, client))
}

/// A database on `path`'s server, migrated on that path (required, so a wrong choice fails).
pub async fn migrated_on(path: StoragePath, name: &str) -> Option<(TestDatabase, Client, Flavor)> {
    let (db, mut client) = fresh_on(path, name).await?;
    let report = schema::apply(&mut client, FlavorChoice::Require(flavor(path)))
        .await
        .expect("migrations apply");
    assert_eq!(report.plan.flavor, flavor(path));
    Some((db, client, report.plan.flavor))
}

/// The id of a TimescaleDB job of `proc_name` on `table`.
pub async fn job(client: &Client, proc_name: &str, table: &str) -> i32 {
    client
        .query_one(
            "SELECT job_id FROM timescaledb_information.jobs
             WHERE proc_name = $1 AND hypertable_name = $2",
            &[&proc_name, &table],
        )
        .await
        .expect("the job exists")
        .get(0)
}

pub async fn instrument(client: &Client, venue: &str, symbol: &str) -> i32 {
    client
        .query_one(
            "INSERT INTO instruments (venue, symbol, base, quote, status, tick_size, step_size, active)
             VALUES ($1, $2, 'BTC', 'USDT', 'TRADING', 0.01, 0.00001, true) RETURNING id",
            &[&venue, &symbol],
        )
        .await
        .expect("insert instrument")
        .get(0)
}

/// Every aggregate view, finest first within each family.
pub const AGGREGATES: [&str; 6] = [
    "ticker_1s",
    "ticker_1m",
    "ticker_1h",
    "trades_1s",
    "trades_1m",
    "trades_1h",
];

/// Refreshes every continuous aggregate over all time, finest first (each level is refreshed
/// from the one beneath).
pub async fn refresh_continuous_aggregates(client: &Client) {
    for view in AGGREGATES {
        client
            .batch_execute(&format!(
                "CALL refresh_continuous_aggregate('{view}', NULL, NULL)"
            ))
            .await
            .expect("refresh");
    }
}
