//! Shared by the schema tests: a migrated database of its own per test.
#![allow(dead_code)]

use std::io::Write;

use pgembed::TestDatabase;
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

/// A line the test harness does not capture, so a skipped check is visible in every run.
pub fn say_skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {why} ({test})");
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
