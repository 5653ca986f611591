//! What each TimescaleDB edition gives, run for real: the compression job compresses and every
//! read answers the same; late rows land in compressed chunks; retention drops chunks and
//! `book_at` then refuses. Where a path is not installed, its test says so and passes.

mod common;

use common::{instrument, job, migrated_on, refresh_continuous_aggregates, say_skipped};
use pgembed::StoragePath;
use schema::Flavor;
use tokio_postgres::Client;

const TABLES: [&str; 6] = [
    "book_checkpoints",
    "book_ticker",
    "book_top",
    "depth_updates",
    "mark_prices",
    "trades",
];

async fn strings(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .expect(sql)
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Community: hypertables, compression, six continuous aggregates and their jobs. Apache:
/// hypertables and nothing the license refuses (rollups instead). Plain: no hypertables.
async fn each_edition_gets_what_it_supports(path: StoragePath) {
    let Some((_db, client, flavor)) = migrated_on(path, "ts_objects").await else {
        return;
    };
    let hypertables = if flavor.hypertables() {
        strings(&client, "SELECT hypertable_name::text FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public' ORDER BY 1").await
    } else {
        Vec::new()
    };
    let expected: Vec<&str> = if flavor.hypertables() {
        TABLES.to_vec()
    } else {
        Vec::new()
    };
    assert_eq!(hypertables, expected);
    let rollups = count(
        &client,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'rollup' AND tablename NOT IN ('watermarks', 'late')",
    )
    .await;
    if flavor != Flavor::Timescale {
        assert_eq!(rollups, 6, "aggregates are rollup tables here");
        return;
    }
    assert_eq!(rollups, 0);
    let seg: String = client
        .query_one(
            "SELECT segmentby::text FROM timescaledb_information.hypertable_compression_settings WHERE hypertable = 'depth_updates'::regclass",
            &[],
        )
        .await
        .expect("compression settings")
        .get(0);
    assert!(seg.contains("instrument_id"), "{seg}");
    for (sql, n) in [
        ("SELECT count(*) FROM timescaledb_information.continuous_aggregates", 6),
        ("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'", 6),
        ("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'", 6),
        // Retention runs in maintain(), gated by the verified archive (0010, 0011).
        ("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'", 0),
    ] {
        assert_eq!(count(&client, sql).await, n, "{sql}");
    }
}

/// Old enough that every compression policy (at most a day after a chunk ends) applies.
const T0: &str = "now() - interval '3 days'";
/// The seeded book's start, read back: `T0` moves with the clock, so an instant computed from
/// it in a later statement may fall a second later than the rows were seeded from.
const BASE: &str = "(SELECT min(c.time) FROM book_checkpoints c)";

async fn seed(client: &Client, iid: i32) {
    client
        .batch_execute(&format!(
            "INSERT INTO book_checkpoints (time, instrument_id, epoch, update_id, kind, bid_prices, bid_qtys, ask_prices, ask_qtys, received_at)
             VALUES (date_trunc('second', {T0}), {iid}, nextval('sync_epochs'), 10, 'snapshot', '{{10.0,9.9}}', '{{1,1}}', '{{10.1,10.2}}', '{{1,1}}', now());
             INSERT INTO depth_updates (time, instrument_id, first_update_id, update_id, side, price, qty, received_at)
             SELECT date_trunc('second', {T0}) + i * interval '1 second', {iid}, 10 + i, 10 + i,
                    CASE WHEN i % 2 = 0 THEN 'bid' ELSE 'ask' END,
                    CASE WHEN i % 2 = 0 THEN 9.9 - (i % 7) * 0.1 ELSE 10.1 + (i % 5) * 0.1 END,
                    (i % 3), now()
             FROM generate_series(1, 500) AS i;
             INSERT INTO book_ticker (time, instrument_id, update_id, bid_price, bid_qty, ask_price, ask_qty, received_at)
             SELECT date_trunc('second', {T0}) + i * interval '250 milliseconds', {iid}, 10 + i,
                    10 + (i % 9) * 0.01, 1.5, 10.2 + (i % 4) * 0.01, 2.25, now()
             FROM generate_series(1, 2000) AS i;
             INSERT INTO trades (time, instrument_id, agg_trade_id, price, qty, first_trade_id, last_trade_id, buyer_is_maker, event_time, received_at)
             SELECT date_trunc('second', {T0}) + i * interval '300 milliseconds', {iid}, i,
                    10 + (i % 11) * 0.01, 0.001 * i, i * 2, i * 2 + 1, i % 2 = 0, now(), now()
             FROM generate_series(1, 1500) AS i;"
        ))
        .await
        .expect("seed");
}

/// What a reader sees: the book at three instants and every aggregate level.
async fn answers(client: &Client, iid: i32) -> Vec<String> {
    let mut out = Vec::new();
    for offset in ["10 seconds", "200 seconds", "499 seconds"] {
        out.extend(strings(client, &format!(
            "SELECT string_agg(format('%s %s %s %s', side, level, price, qty), ',' ORDER BY side, level)
             FROM book_at({iid}, {BASE} + interval '{offset}', 50)"
        )).await);
    }
    for view in common::AGGREGATES {
        out.extend(
            strings(
                client,
                &format!(
                    "SELECT coalesce(string_agg(t::text, ',' ORDER BY bucket), '') FROM {view} t"
                ),
            )
            .await,
        );
    }
    out
}

#[tokio::test]
async fn the_compression_jobs_compress_and_every_read_is_unchanged() {
    let test = "the_compression_jobs_compress_and_every_read_is_unchanged";
    if !pgembed::skip_unless_available(StoragePath::Timescale, test) {
        return;
    }
    let Some((_db, client, _)) = migrated_on(StoragePath::Timescale, "ts_compress").await else {
        return;
    };
    client
        .execute("UPDATE storage_policies SET drop_after = NULL", &[])
        .await
        .expect("policy");
    let iid = instrument(&client, "spot", "BTCUSDT").await;
    seed(&client, iid).await;
    refresh_continuous_aggregates(&client).await;
    let before = answers(&client, iid).await;
    assert!(before.iter().all(|a| !a.is_empty()), "{before:?}");

    for table in ["depth_updates", "book_checkpoints", "book_ticker", "trades"] {
        let id = job(&client, "policy_compression", table).await;
        client
            .batch_execute(&format!("CALL run_job({id})"))
            .await
            .expect("compression job");
        let (all, compressed) = (
            count(&client, &format!("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = '{table}'")).await,
            count(&client, &format!("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = '{table}' AND is_compressed")).await,
        );
        assert!(
            all > 0 && compressed == all,
            "{table}: {compressed} of {all} chunks compressed"
        );
    }
    let after = answers(&client, iid).await;
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        if a != b {
            let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
            let near = |s: &str| {
                s.get(at.saturating_sub(120)..(at + 120).min(s.len()))
                    .unwrap_or(s)
                    .to_owned()
            };
            panic!(
                "answer {i} changed at byte {at}: after …{}… before …{}…",
                near(a),
                near(b)
            );
        }
    }
    assert_eq!(
        after.len(),
        before.len(),
        "compressed chunks answer the same"
    );

    // A late update (a spool replay) into a compressed chunk is stored and read back.
    client
        .batch_execute(&format!(
            "INSERT INTO depth_updates (time, instrument_id, first_update_id, update_id, side, price, qty, received_at)
             VALUES ({BASE} + interval '499.5 seconds', {iid}, 600, 600, 'bid', 9.95, 7, now())"
        ))
        .await
        .expect("late row into a compressed chunk");
    let late = strings(&client, &format!(
        "SELECT qty::text FROM book_at({iid}, {BASE} + interval '500 seconds', 50) WHERE side = 'bid' AND price = 9.95"
    )).await;
    assert_eq!(late, ["7"]);
}

/// Depth rows past retention go when the table is not archived (chunks on both TimescaleDB
/// editions, rows on plain PostgreSQL, by maintain()), and `book_at` refuses that time (DB003).
async fn retention_drops_old_data_and_book_at_then_refuses(path: StoragePath) {
    let Some((_db, client, flavor)) = migrated_on(path, "ts_retention").await else {
        return;
    };
    let iid = instrument(&client, "spot", "BTCUSDT").await;
    client
        .batch_execute(&format!(
            "INSERT INTO book_checkpoints (time, instrument_id, epoch, update_id, kind, bid_prices, bid_qtys, ask_prices, ask_qtys, received_at)
             VALUES (now() - interval '40 days', {iid}, nextval('sync_epochs'), 10, 'snapshot', '{{10.0}}', '{{1}}', '{{10.1}}', '{{1}}', now());
             INSERT INTO depth_updates (time, instrument_id, first_update_id, update_id, side, price, qty, received_at)
             VALUES (now() - interval '40 days' + interval '1 second', {iid}, 11, 11, 'bid', 9.9, 1, now()),
                    (now() - interval '1 minute', {iid}, 12, 12, 'bid', 9.8, 1, now());"
        ))
        .await
        .expect("seed");
    client
        .execute(
            "UPDATE storage_policies SET archive_as = NULL WHERE relation = 'depth_updates'",
            &[],
        )
        .await
        .expect("no archive");
    client
        .query_one("SELECT maintain()", &[])
        .await
        .expect("maintain");
    let left = strings(&client, "SELECT price::text FROM depth_updates").await;
    assert_eq!(left, ["9.8"], "only the recent update is kept");
    if flavor.hypertables() {
        let old_chunks = count(&client, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'depth_updates' AND range_end < now() - interval '30 days'").await;
        assert_eq!(old_chunks, 0, "the old chunk is dropped, not emptied");
    }
    let err = client
        .query(
            "SELECT * FROM book_at($1, now() - interval '40 days' + interval '2 seconds', 10)",
            &[&iid],
        )
        .await
        .expect_err("past retention");
    let code = err.as_db_error().map(|d| d.code().code().to_owned());
    assert_eq!(code.as_deref(), Some("DB003"), "{err}");
    if flavor == Flavor::Postgres {
        say_skipped(
            "retention_drops_old_data_and_book_at_then_refuses::postgres",
            "chunk checks: plain PostgreSQL has no chunks",
        );
    }
}

pgembed::storage_tests!(
    each_edition_gets_what_it_supports,
    retention_drops_old_data_and_book_at_then_refuses,
);
