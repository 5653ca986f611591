//! TimescaleDB-only assertions. Where the extension is not installed, each test says so on a
//! line the harness does not capture and passes without checking anything else.

mod common;

use common::{instrument, migrated, say_skipped};
use schema::Flavor;

#[tokio::test]
async fn hypertables_compression_and_policies_exist() {
    let (_db, client, flavor) = migrated("ts_objects").await;
    if flavor != Flavor::Timescale {
        say_skipped(
            "hypertables_compression_and_policies_exist",
            "no timescaledb",
        );
        return;
    }
    let hypertables: Vec<String> = client
        .query("SELECT hypertable_name::text FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public' ORDER BY 1", &[])
        .await
        .expect("hypertables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        hypertables,
        [
            "book_checkpoints",
            "book_ticker",
            "book_top",
            "depth_updates",
            "mark_prices",
            "trades"
        ]
    );
    let seg: String = client
        .query_one(
            "SELECT segmentby::text FROM timescaledb_information.hypertable_compression_settings WHERE hypertable = 'depth_updates'::regclass",
            &[],
        )
        .await
        .expect("compression settings")
        .get(0);
    assert!(seg.contains("instrument_id"), "{seg}");
    let caggs: i64 = client
        .query_one(
            "SELECT count(*) FROM timescaledb_information.continuous_aggregates",
            &[],
        )
        .await
        .expect("caggs")
        .get(0);
    assert_eq!(caggs, 6);
    let refresh_jobs: i64 = client
        .query_one("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'", &[])
        .await
        .expect("jobs")
        .get(0);
    assert_eq!(refresh_jobs, 6);
    let compression_jobs: i64 = client
        .query_one("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'", &[])
        .await
        .expect("jobs")
        .get(0);
    assert_eq!(compression_jobs, 6);
}

#[tokio::test]
async fn a_compressed_chunk_gives_the_same_book() {
    let (_db, client, flavor) = migrated("ts_compressed").await;
    if flavor != Flavor::Timescale {
        say_skipped("a_compressed_chunk_gives_the_same_book", "no timescaledb");
        return;
    }
    client
        .execute("UPDATE storage_policies SET drop_after = NULL", &[])
        .await
        .expect("policy");
    let iid = instrument(&client, "spot", "BTCUSDT").await;
    client
        .batch_execute(&format!(
            "INSERT INTO book_checkpoints (time, instrument_id, epoch, update_id, kind, bid_prices, bid_qtys, ask_prices, ask_qtys, received_at)
             VALUES ('2026-11-01 10:00:00+00', {iid}, nextval('sync_epochs'), 10, 'snapshot', '{{10.0,9.9}}', '{{1,1}}', '{{10.1,10.2}}', '{{1,1}}', now());
             INSERT INTO depth_updates (time, instrument_id, first_update_id, update_id, side, price, qty, received_at)
             SELECT '2026-11-01 10:00:00+00'::timestamptz + i * interval '1 second', {iid}, 10 + i, 10 + i,
                    CASE WHEN i % 2 = 0 THEN 'bid' ELSE 'ask' END,
                    CASE WHEN i % 2 = 0 THEN 9.9 - (i % 7) * 0.1 ELSE 10.1 + (i % 5) * 0.1 END,
                    (i % 3), now()
             FROM generate_series(1, 500) AS i;"
        ))
        .await
        .expect("seed");
    let query =
        "SELECT side, level, price::text, qty::text FROM book_at($1, '2026-11-01 10:05:00+00', 50)";
    let before: Vec<(String, i32, String, String)> = client
        .query(query, &[&iid])
        .await
        .expect("book before")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    client
        .batch_execute("SELECT compress_chunk(c) FROM show_chunks('depth_updates') c; SELECT compress_chunk(c) FROM show_chunks('book_checkpoints') c;")
        .await
        .expect("compress");
    let compressed: i64 = client
        .query_one("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'depth_updates' AND is_compressed", &[])
        .await
        .expect("chunks")
        .get(0);
    assert!(compressed > 0);
    let after: Vec<(String, i32, String, String)> = client
        .query(query, &[&iid])
        .await
        .expect("book after")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(!before.is_empty());
    assert_eq!(before, after);
}
