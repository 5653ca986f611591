//! `ingest export` on data collected from the simulator: a book rebuilt from an exported
//! `incremental_book_L2` stream equals `book_at` at every sampled instant, across a recorded
//! gap that the export lists; the command writes Tardis-named files; pandas, polars and pyarrow
//! read every file type with the database's values, and hftbacktest's Tardis converter takes the
//! depth and trades files; every Parquet file holds its CSV twin's values, typed.

use std::io::Read;
use std::path::Path;

use binance::Venue;
use chrono::{DateTime, Duration, Utc};
use export::{DataType, Range};
use sim::Fault;
use tokio_postgres::Client;

mod common;

use common::s3::s3_server;
use common::tardis::{book_at_us, parse_l2, rebuild_at};
use common::*;

/// Collects until spot instrument `iid` has had a gap, a resync and events after it.
async fn collect_with_a_gap(db: &Client, sim: &sim::Sim, iid: i32, symbol: &str) {
    events_since_sync(db, 20).await;
    let spot = sim.spot.as_ref().expect("spot");
    spot.inject(Fault::DropDepth {
        symbol: Some(symbol.to_owned()),
        count: 1,
    });
    let resynced = format!(
        "SELECT count(DISTINCT d.update_id) FROM depth_updates d WHERE d.instrument_id = {iid}
           AND d.time > (SELECT max(time) FROM book_checkpoints WHERE instrument_id = {iid} AND kind = 'snapshot')
           AND EXISTS (SELECT 1 FROM sync_events WHERE instrument_id = {iid} AND kind = 'gap')
           AND (SELECT max(time) FROM book_checkpoints WHERE instrument_id = {iid} AND kind = 'snapshot')
               > (SELECT max(time) FROM sync_events WHERE instrument_id = {iid} AND kind = 'gap')"
    );
    wait_until("a gap, a resync and 20 events after it", || {
        let sql = resynced.clone();
        async move { count(db, &sql).await >= 20 }
    })
    .await;
}

/// The range: from inside the first epoch (so the export opens with `book_at`'s book) to after
/// the last row.
async fn export_range(db: &Client, iid: i32) -> Range {
    let row = db
        .query_one(
            "SELECT min(time), max(time) FROM depth_updates WHERE instrument_id = $1",
            &[&iid],
        )
        .await
        .expect("times");
    let (first, last): (DateTime<Utc>, DateTime<Utc>) = (row.get(0), row.get(1));
    Range::new(first + (last - first) / 5, last + Duration::seconds(1)).expect("range")
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn exported_depth_rebuilds_book_at_across_a_gap(path: StoragePath) {
    let Some((sim, tdb, db)) = sim_and_db(path, 17, "ingest_export").await else {
        return;
    };
    let ingest = start_ingest(&tdb.url, &sim, |_| {});
    let symbol = sim.spot.as_ref().expect("spot").symbols()[0].clone();
    let (db_ref, sym) = (&db, symbol.as_str());
    wait_until("the instrument", || async move {
        export::instrument(db_ref, Venue::Spot, sym).await.is_ok()
    })
    .await;
    let iid = export::instrument(&db, Venue::Spot, &symbol)
        .await
        .expect("instrument")
        .id;
    collect_with_a_gap(&db, &sim, iid, &symbol).await;
    ingest.stop().await;

    let inst = export::instrument(&db, Venue::Spot, &symbol.to_lowercase())
        .await
        .expect("symbols match in any case");
    let range = export_range(&db, iid).await;
    let mut csv = Vec::new();
    let summary = export::write_csv(&db, &inst, DataType::IncrementalBookL2, range, &mut csv)
        .await
        .expect("export");
    let rows = parse_l2(std::str::from_utf8(&csv).expect("utf-8"));
    assert_eq!(rows.len() as u64, summary.rows);
    assert!(rows[0].snapshot, "the file opens with the book");
    assert!(rows[0].timestamp == range.from.timestamp_micros());
    assert!(
        rows.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "rows in time order"
    );
    let snapshots = rows
        .windows(2)
        .filter(|w| w[1].snapshot && !w[0].snapshot)
        .count();
    assert!(snapshots >= 1, "the resync starts a new book in the file");
    let gaps: Vec<_> = summary.gaps.iter().filter(|g| g.kind == "gap").collect();
    assert!(
        !gaps.is_empty(),
        "the dropped event is listed: {:?}",
        summary.gaps
    );

    // Up to 300 distinct row times, the last one, and the middle of each gap.
    let mut instants: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
    instants.dedup();
    let step = (instants.len() / 300).max(1);
    let mut sample: Vec<i64> = instants.iter().step_by(step).copied().collect();
    sample.push(*instants.last().expect("rows"));
    sample.extend(gaps.iter().map(|g| (g.from_us + g.to_us) / 2));
    sample.sort_unstable();
    sample.dedup();
    let rebuilt = rebuild_at(&rows, &sample);
    let (mut equal, mut refused) = (0, 0);
    for (t, file_book) in sample.iter().zip(rebuilt) {
        let in_gap = summary.gaps.iter().any(|g| g.from_us < *t && *t < g.to_us);
        match book_at_us(&db, iid, *t).await {
            Ok(db_book) => {
                assert!(!in_gap, "book_at answers at {t}, listed as a gap");
                assert_eq!(file_book, db_book, "book at {t}");
                equal += 1;
            }
            Err(e) => {
                let code = e.as_db_error().map(|d| d.code().code().to_owned());
                assert_eq!(code.as_deref(), Some("DB001"), "{e}");
                assert!(in_gap, "book_at refuses {t}, the file's gaps do not say so");
                refused += 1;
            }
        }
    }
    assert!(
        equal > 20 && refused >= 1,
        "{equal} equal, {refused} refused"
    );

    let dir = tempfile::tempdir().expect("dir");
    let usdm_symbol = sim.usdm.as_ref().expect("usdm").symbols()[0].clone();
    for format in ["csv", "parquet"] {
        run_export_command(&tdb.url, ("spot", &symbol), range, format, dir.path());
        run_export_command(&tdb.url, ("usdm", &usdm_symbol), range, format, dir.path());
    }
    check_files(&db, dir.path(), &[&symbol, &usdm_symbol]).await;
}

fn run_export_command(
    url: &str,
    (venue, symbol): (&str, &str),
    range: Range,
    format: &str,
    dir: &Path,
) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["export", "--venue", venue, "--symbols", symbol])
        .args(["--format", format])
        .args([
            "--from",
            &range.from.to_rfc3339(),
            "--to",
            &range.to.to_rfc3339(),
        ])
        .arg("--out")
        .arg(dir)
        .env("DATABASE_URL", url)
        .output()
        .expect("ingest export");
    assert!(
        out.status.success(),
        "ingest export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file is named as Tardis names it, its gzip holds the header and as many rows as the
/// command said, and (where Python has them) pandas, polars and pyarrow read it.
async fn check_files(db: &Client, dir: &Path, symbols: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for t in DataType::ALL {
        let expected = if t == DataType::DerivativeTicker {
            1
        } else {
            2
        };
        for ext in [".csv.gz", ".parquet"] {
            let files = names
                .iter()
                .filter(|n| n.contains(&format!("_{}_", t.name())) && n.ends_with(ext))
                .count();
            assert!(files >= expected, "{t}{ext}: {names:?}");
        }
    }
    for name in names.iter().filter(|n| n.ends_with(".csv.gz")) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(dir.join(name)).expect("open"))
            .read_to_string(&mut text)
            .expect("gzip");
        let kind = DataType::ALL
            .into_iter()
            .find(|t| name.contains(&format!("_{}_", t.name())))
            .expect("a Tardis type");
        assert_eq!(text.lines().next(), Some(kind.header().as_str()), "{name}");
        assert!(symbols
            .iter()
            .any(|s| name.ends_with(&format!("_{s}.csv.gz"))));
    }
    python_reads(db, dir).await;
}

/// pandas, polars and pyarrow read every file with the database's values; hftbacktest converts
/// the depth and trades. Skipped visibly without them, except under CI.
async fn python_reads(db: &Client, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_exports.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
        .expect("python3");
    if out.status.code() == Some(3) && std::env::var_os("CI").is_none() {
        pgembed::say_skipped("ingest_export", &String::from_utf8_lossy(&out.stderr));
        return;
    }
    assert!(
        out.status.success(),
        "read_exports.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The report is the last line: hftbacktest prints its progress on stdout too.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report from read_exports.py: {stdout}"));
    let files = report["files"].as_object().expect("files");
    for (name, f) in files {
        let rows = f["pandas_rows"].as_i64().expect("rows");
        assert_eq!(f["polars_rows"].as_i64(), Some(rows), "{name}");
        assert_eq!(f["pyarrow_rows"].as_i64(), Some(rows), "{name}");
        assert!(rows > 0, "{name}");
    }
    check_parquet(dir, &report);
    let compared = check_sums(db, files).await;
    assert_eq!(
        compared, 5,
        "trades and quotes of both venues, the USD-M ticker"
    );
    let converted = report["hftbacktest"].as_object().expect("hftbacktest");
    assert!(!converted.is_empty(), "{report}");
    for (pair, events) in converted {
        assert!(events.as_i64().unwrap_or(0) > 0, "{pair}: {events}");
    }
}

/// Every Parquet file: read by the three tools, typed, every value equal to its CSV twin's, and
/// the gaps in its metadata equal to the CSV's sidecar.
fn check_parquet(dir: &Path, report: &serde_json::Value) {
    let files = report["parquet"].as_object().expect("parquet");
    assert!(
        files.len() >= 11,
        "five types of two symbols, one ticker: {files:?}"
    );
    for (name, f) in files {
        let rows = f["pyarrow_rows"].as_i64().expect("rows");
        assert!(rows > 0, "{name}");
        assert_eq!(f["pandas_rows"].as_i64(), Some(rows), "{name}");
        assert_eq!(f["polars_rows"].as_i64(), Some(rows), "{name}");
        assert_eq!(f["values_unequal_to_csv"].as_i64(), Some(0), "{name}: {f}");
        let types: Vec<&str> = f["types"]
            .as_array()
            .expect("types")
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        assert!(
            types.contains(&"timestamp[us, tz=UTC]"),
            "{name}: {types:?}"
        );
        assert!(types.contains(&"decimal128(20, 8)"), "{name}: {types:?}");
        let stem = name.trim_end_matches(".parquet");
        let sidecar = dir.join(format!("{stem}.gaps.json"));
        if let Ok(text) = std::fs::read(&sidecar) {
            let sidecar: serde_json::Value = serde_json::from_slice(&text).expect("json");
            assert_eq!(
                f["gaps"], sidecar["gaps"],
                "{name}: the same gaps as the CSV's"
            );
        } else {
            assert_eq!(
                f["gaps"],
                serde_json::json!([]),
                "{name}: no gaps outside books"
            );
        }
    }
}

/// Trades, quotes and the USD-M ticker as the tools read them: as many rows as the database
/// holds in the file's span, and the exact sum of a price column; returns the files compared.
async fn check_sums(db: &Client, files: &serde_json::Map<String, serde_json::Value>) -> usize {
    let mut compared = 0;
    for (name, f) in files {
        let (table, column) = if name.contains("_trades_") {
            ("trades", "price")
        } else if name.contains("_quotes_") {
            ("book_ticker", "bid_price")
        } else if name.contains("_derivative_ticker_") {
            ("mark_prices", "mark_price")
        } else {
            continue;
        };
        let (from, to) = (
            f["first_timestamp"].as_i64().expect("first"),
            f["last_timestamp"].as_i64().expect("last"),
        );
        let symbol = name
            .trim_end_matches(".csv.gz")
            .rsplit('_')
            .next()
            .expect("symbol");
        let venue = if name.starts_with("binance-futures_") {
            "usdm"
        } else {
            "spot"
        };
        let sql = format!(
            "SELECT count(*), trim_scale(sum({column}))::text FROM {table} t JOIN instruments i ON i.id = t.instrument_id
             WHERE i.venue = $1 AND i.symbol = $2
               AND t.time >= 'epoch'::timestamptz + ($3::int8 || ' microseconds')::interval
               AND t.time <= 'epoch'::timestamptz + ($4::int8 || ' microseconds')::interval"
        );
        let row = db
            .query_one(&sql, &[&venue, &symbol, &from, &to])
            .await
            .expect("sums");
        assert_eq!(
            Some(row.get::<_, i64>(0)),
            f["pandas_rows"].as_i64(),
            "{name}"
        );
        assert_eq!(
            Some(row.get::<_, String>(1).as_str()),
            f[format!("sum_{column}")].as_str(),
            "{name}: exact sum of {column}"
        );
        compared += 1;
    }
    compared
}

pgembed::storage_tests!(exported_depth_rebuilds_book_at_across_a_gap);

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn the_daily_set_is_whole_resumable_and_in_the_bucket(path: StoragePath) {
    let Some(s3) = s3_server().await else { return };
    let Some((sim, tdb, db)) = sim_and_db(path, 23, "ingest_daily").await else {
        return;
    };
    let ingest = start_ingest(&tdb.url, &sim, |_| {});
    events_since_sync(&db, 20).await;
    ingest.stop().await;

    let dir = tempfile::tempdir().expect("dir");
    let bucket = common::s3::bucket(&s3, "research");
    let store = bucket.store();
    let daily = export::daily::Daily {
        dir: dir.path().to_owned(),
        venues: vec![Venue::Spot, Venue::Usdm],
        types: DataType::ALL.to_vec(),
        formats: export::Format::ALL.to_vec(),
        bucket: Some(bucket),
        keep_local: true,
    };
    let key = |k: &str| daily.bucket.as_ref().expect("a bucket").key(k);
    let today = Utc::now().date_naive();
    let day_dir = dir.path().join(today.format("%Y-%m-%d").to_string());
    let m = export::daily::run_day(&db, &daily, today)
        .await
        .expect("the day");
    assert!(m.complete);
    // Four symbols per venue: five types on spot, six on USD-M, in two formats.
    assert_eq!(
        m.files.len(),
        (4 * 5 + 4 * 6) * 2,
        "{:?}",
        m.files.iter().map(|e| &e.file).collect::<Vec<_>>()
    );
    for e in &m.files {
        let local = std::fs::read(day_dir.join(&e.file)).expect("the file");
        assert_eq!(local.len() as u64, e.bytes, "{}", e.file);
        let digest =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&local));
        assert_eq!(hex::encode(digest), e.sha256, "{}", e.file);
        let remote = store
            .get(&key(&format!("{today}/{}", e.file)))
            .await
            .expect("uploaded")
            .bytes()
            .await
            .expect("body");
        assert_eq!(
            remote.as_ref(),
            local.as_slice(),
            "{}: the bucket holds the same bytes",
            e.file
        );
        assert!(e.uploaded, "{e:?}");
        if e.data_type == "incremental_book_L2" {
            assert!(e.rows > 0, "{e:?}");
        }
    }
    let remote_manifest = store
        .get(&key(&format!("{today}/manifest.json")))
        .await
        .expect("manifest uploaded");
    let remote_manifest: export::daily::Manifest =
        serde_json::from_slice(&remote_manifest.bytes().await.expect("body")).expect("a manifest");
    assert_eq!(remote_manifest, m);

    // Again: nothing is rewritten.
    let first = &m.files[0].file;
    let stamp = modified(&day_dir.join(first));
    assert_eq!(
        export::daily::run_day(&db, &daily, today)
            .await
            .expect("again"),
        m
    );
    assert_eq!(
        modified(&day_dir.join(first)),
        stamp,
        "a complete day is left alone"
    );

    // Interrupted after all but the last file: only that one is written.
    let mut cut = m.clone();
    let last = cut.files.pop().expect("files");
    cut.complete = false;
    std::fs::write(
        day_dir.join("manifest.json"),
        serde_json::to_vec(&cut).expect("json"),
    )
    .expect("write");
    std::fs::remove_file(day_dir.join(&last.file)).expect("remove");
    let resumed = export::daily::run_day(&db, &daily, today)
        .await
        .expect("resumed");
    assert!(resumed.complete);
    assert_eq!(resumed.files.len(), m.files.len());
    assert_eq!(
        modified(&day_dir.join(first)),
        stamp,
        "done files are not redone"
    );
    let redone = resumed
        .files
        .iter()
        .find(|e| e.file == last.file)
        .expect("the missing file");
    assert_eq!(redone.sha256, last.sha256, "the same rows, byte for byte");
}

pgembed::storage_tests!(the_daily_set_is_whole_resumable_and_in_the_bucket);
