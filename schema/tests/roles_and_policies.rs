//! The read-only role, storage policies and retention.

mod common;

use common::{connect, instrument, migrated_on};
use pgembed::StoragePath;
use schema::{Flavor, PolicyChange};

fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_default()
}

async fn the_reader_role_reads_and_cannot_write(path: StoragePath) {
    let Some((db, client, _)) = migrated_on(path, "reader").await else {
        return;
    };
    let iid = instrument(&client, "spot", "BTCUSDT").await;
    // Roles are cluster-wide: a name of this database's own.
    let login = format!("reader_{}", db.name);
    client
        .batch_execute(&format!(
            "CREATE ROLE \"{login}\" LOGIN IN ROLE depthbook_reader"
        ))
        .await
        .expect("create login role");

    let reader = connect(&url_for(&db.url, &login)).await;
    let n: i64 = reader
        .query_one("SELECT count(*) FROM instruments", &[])
        .await
        .expect("select")
        .get(0);
    assert_eq!(n, 1);
    reader
        .query("SELECT * FROM ticker_1m LIMIT 1", &[])
        .await
        .expect("aggregates readable");
    reader
        .query("SELECT * FROM sync_events LIMIT 1", &[])
        .await
        .expect("ledger readable");

    for sql in [
        "INSERT INTO instruments (venue, symbol, base, quote, status, tick_size, step_size) VALUES ('spot','X','X','Y','TRADING',1,1)".to_owned(),
        format!("UPDATE instruments SET active = false WHERE id = {iid}"),
        "DELETE FROM depth_updates".to_owned(),
        "TRUNCATE book_ticker".to_owned(),
        "CREATE TABLE sneaky (x int)".to_owned(),
        "SELECT maintain()".to_owned(),
        "SELECT apply_storage_policies()".to_owned(),
    ] {
        let e = reader.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(code(&e), "42501", "{sql}: {e}");
    }
    drop(reader);
    client
        .batch_execute(&format!("DROP OWNED BY \"{login}\"; DROP ROLE \"{login}\""))
        .await
        .ok();
}

fn url_for(url: &str, user: &str) -> String {
    // postgres://USER@host:port/db -> another user, no password (trust on the private server,
    // or whatever DATABASE_URL's server allows).
    let (scheme, rest) = url.split_once("://").expect("url");
    let rest = rest.split_once('@').map(|(_, r)| r).unwrap_or(rest);
    format!("{scheme}://{user}@{rest}")
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn policies_are_validated_and_recorded(path: StoragePath) {
    let Some((_db, mut client, flavor)) = migrated_on(path, "policies").await else {
        return;
    };
    schema::set_policies(
        &mut client,
        &[
            PolicyChange::Retention {
                relation: "trades".into(),
                after: Some("90 days".into()),
            },
            PolicyChange::Compression {
                relation: "trades".into(),
                after: Some("3h".into()),
            },
            PolicyChange::Retention {
                relation: "depth_updates".into(),
                after: None,
            },
        ],
    )
    .await
    .expect("valid changes");
    let row = client
        .query_one(
            "SELECT (SELECT drop_after::text FROM storage_policies WHERE relation = 'trades'),
                    (SELECT compress_after::text FROM storage_policies WHERE relation = 'trades'),
                    (SELECT drop_after IS NULL FROM storage_policies WHERE relation = 'depth_updates')",
            &[],
        )
        .await
        .expect("read");
    assert_eq!(row.get::<_, String>(0), "90 days");
    assert_eq!(row.get::<_, String>(1), "03:00:00");
    assert!(row.get::<_, bool>(2));

    let bad_interval = schema::set_policies(
        &mut client,
        &[
            PolicyChange::Retention {
                relation: "trades".into(),
                after: Some("1 day".into()),
            },
            PolicyChange::Retention {
                relation: "trades".into(),
                after: Some("forever-ish".into()),
            },
        ],
    )
    .await
    .expect_err("bad interval");
    assert!(
        bad_interval.to_string().contains("forever-ish"),
        "{bad_interval}"
    );
    let negative = schema::set_policies(
        &mut client,
        &[PolicyChange::Retention {
            relation: "trades".into(),
            after: Some("-1 day".into()),
        }],
    )
    .await;
    assert!(negative.is_err());
    let unknown = schema::set_policies(
        &mut client,
        &[PolicyChange::Retention {
            relation: "nope".into(),
            after: Some("1 day".into()),
        }],
    )
    .await
    .expect_err("unknown table");
    assert!(
        unknown.to_string().contains("depth_updates"),
        "lists the known tables: {unknown}"
    );
    // Nothing of a refused batch was applied.
    let still: String = client
        .query_one(
            "SELECT drop_after::text FROM storage_policies WHERE relation = 'trades'",
            &[],
        )
        .await
        .expect("read")
        .get(0);
    assert_eq!(still, "90 days");

    assert_eq!(
        PolicyChange::parse_pair("book_ticker = 14 days").expect("parse"),
        ("book_ticker".to_owned(), Some("14 days".to_owned()))
    );
    assert_eq!(
        PolicyChange::parse_pair("trades=none").expect("parse").1,
        None
    );
    assert!(PolicyChange::parse_pair("trades").is_err());
    assert!(PolicyChange::parse_archive("trades=maybe").is_err());
    let not_archivable = schema::set_policies(
        &mut client,
        &[PolicyChange::parse_archive("book_top=on").expect("parse")],
    )
    .await
    .expect_err("book_top has no daily type");
    assert!(
        not_archivable.to_string().contains("depth_updates"),
        "{not_archivable}"
    );
    assert!(PolicyChange::parse_pair("=1d").is_err());

    if flavor == Flavor::Timescale {
        let jobs: i64 = client
            .query_one(
                "SELECT count(*) FROM timescaledb_information.jobs
                 WHERE hypertable_name = 'trades' AND proc_name IN ('policy_retention', 'policy_compression')",
                &[],
            )
            .await
            .expect("jobs")
            .get(0);
        assert_eq!(
            jobs, 1,
            "the compression job follows the policy table; retention is maintain()'s"
        );
    }
}

async fn maintain_deletes_rows_past_retention(path: StoragePath) {
    let Some((_db, mut client, _)) = migrated_on(path, "retention").await else {
        return;
    };
    let iid = instrument(&client, "spot", "BTCUSDT").await;
    schema::set_policies(
        &mut client,
        &[PolicyChange::parse_archive("book_ticker=off").expect("parse")],
    )
    .await
    .expect("unarchived");
    for age in ["40 days", "1 hour"] {
        client
            .execute(
                "INSERT INTO book_ticker (time, instrument_id, update_id, bid_price, bid_qty, ask_price, ask_qty, received_at)
                 VALUES (now() - $1::text::interval, $2, 1, 1, 1, 2, 1, now())",
                &[&age, &iid],
            )
            .await
            .expect("insert");
        client
            .execute(
                "INSERT INTO ingest_batches (batch_id, relation, rows, committed_at) VALUES ($1, 'book_ticker', 1, now() - $1::text::interval)",
                &[&age],
            )
            .await
            .expect("ledger");
    }
    let summary: String = client
        .query_one("SELECT maintain()", &[])
        .await
        .expect("maintain")
        .get(0);
    assert!(!summary.is_empty());
    let ledger: i64 = client
        .query_one("SELECT count(*) FROM ingest_batches", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        ledger, 1,
        "ledger rows past 7 days are deleted on both paths"
    );
    {
        let left: Vec<String> = client
            .query(
                "SELECT (now() - time < interval '1 day')::text FROM book_ticker",
                &[],
            )
            .await
            .expect("rows")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, vec!["true".to_owned()], "only the recent row is kept");
    }
}

pgembed::storage_tests!(
    the_reader_role_reads_and_cannot_write,
    policies_are_validated_and_recorded,
    maintain_deletes_rows_past_retention,
);
