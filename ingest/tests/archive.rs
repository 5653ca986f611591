//! The hot and cold tiers on every storage path, against a real S3 protocol server (moto): rows
//! past their hot window stay until the daily files hold them, read back and verified; a file
//! that disagrees with the database, or a bucket that refuses it, lists nothing and drops
//! nothing; a listed day is dropped, and is then cold to `book_at` and the exporter, which say
//! where the files are; rows reaching a listed day later take it off the list and stay.

use chrono::{Duration, Utc};
use export::daily::{run_day, Daily};
use export::{DataType, ExportError, Format, Range};
use tokio_postgres::Client;

mod common;

use common::s3::{bucket, s3_server};
use common::*;

const TABLES: [&str; 5] = [
    "depth_updates",
    "book_checkpoints",
    "book_ticker",
    "trades",
    "mark_prices",
];

async fn counts(db: &Client) -> Vec<i64> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(count(db, &format!("SELECT count(*) FROM {t}")).await);
    }
    out
}

async fn maintain(db: &Client) {
    db.query_one("SELECT maintain()", &[])
        .await
        .expect("maintain");
}

async fn listed(db: &Client) -> Vec<String> {
    db.query("SELECT data_type FROM archive_days ORDER BY 1", &[])
        .await
        .expect("listed")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Collects a little of every table into one-second chunks, then makes every archived table's
/// hot window one second: all of it is past its retention.
async fn collect(path: StoragePath) -> Option<(sim::Sim, pgembed::TestDatabase, Client)> {
    let (sim, tdb, db) = sim_and_db(path, 31, "ingest_archive").await?;
    // Chunk intervals only: apply_storage_policies() would also replace compression jobs, which
    // can deadlock with a continuous-aggregate refresh running at that moment.
    db.batch_execute(
        "DO $$ DECLARE r record; BEGIN
           IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
             FOR r IN SELECT relation FROM storage_policies WHERE relation <> 'ingest_batches' LOOP
               PERFORM set_chunk_time_interval(r.relation::regclass, interval '1 second');
             END LOOP;
           END IF;
         END $$;",
    )
    .await
    .expect("short chunks");
    let ingest = start_ingest(&tdb.url, &sim, |_| {});
    events_since_sync(&db, 10).await;
    wait_until("trades and mark prices", || async {
        count(&db, "SELECT count(*) FROM trades").await > 0
            && count(&db, "SELECT count(*) FROM mark_prices").await > 0
    })
    .await;
    ingest.stop().await;
    db.batch_execute(&format!(
        "UPDATE storage_policies SET drop_after = interval '1 second' WHERE relation IN ('{}')",
        TABLES.join("', '")
    ))
    .await
    .expect("hot window");
    // The newest row is past it, and so is its one-second chunk.
    wait_until("the last rows past the hot window", || async {
        count(
            &db,
            "SELECT count(*) FROM depth_updates WHERE time > now() - interval '3 seconds'",
        )
        .await
            == 0
    })
    .await;
    Some((sim, tdb, db))
}

fn daily(dir: &std::path::Path, bucket: export::bucket::Bucket) -> Daily {
    Daily {
        dir: dir.to_owned(),
        venues: vec![binance::Venue::Spot, binance::Venue::Usdm],
        types: DataType::ALL.to_vec(),
        formats: vec![Format::Csv],
        bucket: Some(bucket),
        keep_local: false,
    }
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn nothing_leaves_before_its_files_are_verified(path: StoragePath) {
    let Some(s3) = s3_server().await else { return };
    let Some((_sim, _tdb, db)) = collect(path).await else {
        return;
    };
    let today = Utc::now().date_naive();
    let all = counts(&db).await;
    assert!(all.iter().all(|&n| n > 0), "{TABLES:?}: {all:?}");

    // Past the hot window, but no files: everything stays, and the status says why.
    maintain(&db).await;
    assert_eq!(counts(&db).await, all, "nothing archived, nothing dropped");
    let blocked = count(&db, "SELECT count(*) FROM retention_status() WHERE blocked").await;
    assert_eq!(blocked, TABLES.len() as i64, "every archived table waits");

    // A depth row that no known book holds (before the first sync) is in no file: the files
    // disagree with the database, the day is not listed, nothing goes.
    let dir = tempfile::tempdir().expect("dir");
    let stray = "INSERT INTO depth_updates (time, instrument_id, first_update_id, update_id, side, price, qty, received_at)
                 SELECT min(time) - interval '1 millisecond', instrument_id, 1, 1, 'bid', 1, 1, now()
                 FROM book_checkpoints GROUP BY instrument_id ORDER BY instrument_id LIMIT 1";
    db.batch_execute(stray).await.expect("stray row");
    let err = run_day(&db, &daily(dir.path(), bucket(&s3, "research")), today)
        .await
        .expect_err("a file short of the database");
    assert!(
        matches!(&err, ExportError::Verify(why) if why.contains("depth_updates")),
        "{err}"
    );
    assert!(listed(&db).await.is_empty());
    maintain(&db).await;
    assert_eq!(counts(&db).await[0], all[0] + 1, "the stray row stays too");
    db.batch_execute("DELETE FROM depth_updates WHERE update_id = 1 AND first_update_id = 1")
        .await
        .expect("repair");

    // A bucket that refuses the files: nothing listed, nothing dropped.
    let refused = run_day(
        &db,
        &daily(dir.path(), bucket(&s3, "no-such-bucket")),
        today,
    )
    .await;
    assert!(
        matches!(refused, Err(ExportError::Bucket(_))),
        "{refused:?}"
    );
    assert!(listed(&db).await.is_empty());
    maintain(&db).await;
    assert_eq!(counts(&db).await, all);

    // Written, read back, uploaded and read back from the bucket: listed, then dropped.
    let hot = hot_books(&db).await;
    let set = daily(dir.path(), bucket(&s3, "research"));
    let m = run_day(&db, &set, today).await.expect("the day");
    assert!(m.complete && m.files.iter().all(|e| e.verified && e.uploaded));
    let day_dir = dir.path().join(today.format("%Y-%m-%d").to_string());
    assert!(day_dir.join("manifest.json").is_file());
    assert!(
        m.files.iter().all(|e| !day_dir.join(&e.file).exists()),
        "with a bucket, the local data files go once the day is listed"
    );
    assert_eq!(
        listed(&db).await,
        [
            "derivative_ticker",
            "incremental_book_L2",
            "quotes",
            "trades"
        ]
    );
    maintain(&db).await;
    for (t, left) in TABLES.iter().zip(counts(&db).await) {
        let hot = count(
            &db,
            &format!(
                "SELECT count(*) FROM {t} WHERE time >= (SELECT dropped_before FROM storage_policies WHERE relation = '{t}')"
            ),
        )
        .await;
        assert_eq!(left, hot, "{t}: only rows from the cut on are left");
    }
    assert_eq!(counts(&db).await[0], 0, "all depth was past its window");
    cold_answers(&db, &set).await;
    cold_books_are_the_hot_ones(&s3, dir.path(), &hot);
    late_rows_unlist_the_day(&db, &set, today).await;
}

type Levels = Vec<(String, i64, i64)>;

/// `book_at` at a few instants of one symbol per venue, while the day is hot.
async fn hot_books(db: &Client) -> Vec<(String, String, String, Levels)> {
    let mut out = Vec::new();
    for venue in ["spot", "usdm"] {
        let rows = db
            .query(
                "SELECT i.id, i.symbol, to_char(d.time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
                 FROM instruments i JOIN LATERAL (
                     SELECT DISTINCT time FROM depth_updates WHERE instrument_id = i.id ORDER BY time DESC LIMIT 4) d ON true
                 WHERE i.venue = $1 AND i.id = (SELECT min(id) FROM instruments WHERE venue = $1)",
                &[&venue],
            )
            .await
            .expect("instants");
        for r in rows {
            let (iid, symbol, at): (i32, String, String) = (r.get(0), r.get(1), r.get(2));
            let book = db
                .query(
                    "SELECT side, price::text, qty::text FROM book_at($1, $2::text::timestamptz, 10)",
                    &[&iid, &at],
                )
                .await
                .expect("book_at while hot");
            let levels = book
                .iter()
                .map(|l| (l.get(0), e8(l.get(1)), e8(l.get(2))))
                .collect();
            out.push((venue.to_owned(), symbol, at, levels));
        }
    }
    assert!(out.len() >= 2, "{out:?}");
    out
}

fn e8(s: &str) -> i64 {
    binance::units::parse_e8(s).expect("an exact decimal")
}

/// `ingest cold-book`, as a user runs it, answers every instant from the bucket's files (the
/// local ones are gone) with the book `book_at` gave while the day was hot.
fn cold_books_are_the_hot_ones(
    s3: &common::s3::S3Server,
    dir: &std::path::Path,
    hot: &[(String, String, String, Levels)],
) {
    for (venue, symbol, at, want) in hot {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
            .args([
                "cold-book",
                "--venue",
                venue,
                "--symbol",
                symbol,
                "--at",
                at,
                "--depth",
                "10",
            ])
            .arg("--dir")
            .arg(dir)
            .args([
                "--bucket",
                "s3://research/depthbook",
                "--bucket-endpoint",
                &s3.endpoint,
            ])
            .args([
                "--bucket-region",
                "us-east-1",
                "--bucket-key",
                "test",
                "--bucket-secret",
                "test",
            ])
            .env("AWS_ALLOW_HTTP", "true")
            .env("RUST_LOG", "warn")
            .output()
            .expect("ingest cold-book");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Levels = text
            .lines()
            .filter(|l| l.starts_with("bid\t") || l.starts_with("ask\t"))
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[0].to_owned(), e8(f[2]), e8(f[3]))
            })
            .collect();
        assert_eq!(&got, want, "{venue} {symbol} at {at}");
    }
}

/// `book_at` and the exporter call the dropped range cold and say where its files are.
async fn cold_answers(db: &Client, set: &Daily) {
    let (iid, symbol, venue): (i32, String, String) = {
        let r = db
            .query_one(
                "SELECT id, symbol, venue FROM instruments WHERE venue = 'spot' ORDER BY id LIMIT 1",
                &[],
            )
            .await
            .expect("an instrument");
        (r.get(0), r.get(1), r.get(2))
    };
    let err = db
        .query(
            "SELECT * FROM book_at($1, now() - interval '5 seconds', 10)",
            &[&iid],
        )
        .await
        .expect_err("cold");
    assert_eq!(
        err.as_db_error().map(|d| d.code().code()),
        Some("DB003"),
        "{err:?}"
    );
    let inst = export::instrument(db, export_cmd_venue(&venue), &symbol)
        .await
        .expect("instrument");
    let range = Range::new(Utc::now() - Duration::hours(1), Utc::now()).expect("range");
    let err = export::write_csv(
        db,
        &inst,
        DataType::IncrementalBookL2,
        range,
        &mut Vec::new(),
    )
    .await
    .expect_err("cold");
    let url = set.bucket.as_ref().expect("bucket").url().to_owned();
    assert!(
        matches!(&err, ExportError::Cold { location, .. } if location.contains(&url)),
        "{err}"
    );
}

fn export_cmd_venue(v: &str) -> binance::Venue {
    match v {
        "spot" => binance::Venue::Spot,
        _ => binance::Venue::Usdm,
    }
}

/// A batch that reaches a listed day after its files were started takes the day off the list
/// (its files may lack those rows): the rows stay, and the day, already cold, is not rewritten.
async fn late_rows_unlist_the_day(db: &Client, set: &Daily, today: chrono::NaiveDate) {
    db.batch_execute(
        "INSERT INTO book_ticker (time, instrument_id, update_id, bid_price, bid_qty, ask_price, ask_qty, received_at)
         SELECT now() - interval '1 minute', min(id), 1, 1, 1, 2, 1, now() FROM instruments;
         INSERT INTO ingest_batches (batch_id, relation, rows, first_time, last_time, committed_at)
         VALUES ('late', 'book_ticker', 1, now() - interval '1 minute', now() - interval '1 minute', clock_timestamp());",
    )
    .await
    .expect("a late batch");
    maintain(db).await;
    assert!(
        !listed(db).await.contains(&"quotes".to_owned()),
        "{:?}",
        listed(db).await
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM book_ticker WHERE update_id = 1").await,
        1,
        "the late row is not dropped unarchived"
    );
    let again = run_day(db, set, today).await;
    assert!(
        matches!(again, Err(ExportError::Cold { .. })),
        "a day that left is never rewritten from what is left: {again:?}"
    );
}

pgembed::storage_tests!(nothing_leaves_before_its_files_are_verified);
