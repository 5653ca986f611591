//! The scheduled backup (`ops/backup.sh`, the compose service `backup`), run as that service
//! runs it, on every storage path: a dump, a restore drill into a scratch database whose row
//! counts equal the source's, pruning to `BACKUP_KEEP`, the node-exporter textfile, `--list`;
//! and a dump that does not restore fails the run, is kept as `.failed` and prunes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokio_postgres::Client;

mod common;

use common::*;

const TABLES: [&str; 8] = [
    "instruments",
    "sync_events",
    "depth_updates",
    "book_checkpoints",
    "book_top",
    "book_ticker",
    "trades",
    "mark_prices",
];

struct Backup {
    url: String,
    dir: PathBuf,
    textfile: PathBuf,
    /// Prepended to PATH: this machine's PostgreSQL programs, or a broken pg_restore.
    bin: PathBuf,
    /// BACKUP_MARKET_DATA.
    market_data: &'static str,
}

impl Backup {
    fn run(&self, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/backup.sh");
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("sh")
            .arg(script)
            .args(args)
            .env("DATABASE_URL", &self.url)
            .env("BACKUP_DIR", &self.dir)
            .env("BACKUP_KEEP", "2")
            .env("BACKUP_EVERY_SECS", "0")
            .env("BACKUP_TEXTFILE_DIR", &self.textfile)
            .env("BACKUP_MARKET_DATA", self.market_data)
            .env("PATH", path)
            .output()
            .expect("sh ops/backup.sh")
    }

    /// One run that must succeed; the dump it wrote.
    fn once(&self) -> PathBuf {
        let out = self.run(&[]);
        assert!(
            out.status.success(),
            "backup.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().expect("the dump's path"))
    }

    fn dumps(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".dump"))
            .collect();
        names.sort();
        names
    }
}

async fn counts(db: &Client) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for t in TABLES {
        out.insert(
            t.to_owned(),
            count(db, &format!("SELECT count(*) FROM {t}")).await,
        );
    }
    out
}

/// The drill's record: "table rows" per line.
fn verified(dump: &Path) -> BTreeMap<String, i64> {
    let text = std::fs::read_to_string(format!("{}.verified", dump.display())).expect("verified");
    text.lines()
        .map(|l| {
            let (t, n) = l.split_once(' ').expect("table rows");
            (t.to_owned(), n.parse().expect("a count"))
        })
        .collect()
}

async fn backups_restore_are_pruned_and_failures_are_kept(path: StoragePath) {
    let Some((sim, tdb, db)) = sim_and_db(path, 29, "ops_backup").await else {
        return;
    };
    let ingest = start_ingest(&tdb.url, &sim, |_| {});
    events_since_sync(&db, 20).await;
    ingest.stop().await;
    let source = counts(&db).await;
    assert!(
        source["depth_updates"] > 0 && source["trades"] > 0,
        "{source:?}"
    );

    let tmp = tempfile::tempdir().expect("tmp");
    let pg_dump = pgembed::shared_on(path)
        .expect("the server")
        .binaries()
        .bin("pg_dump");
    let b = Backup {
        url: tdb.url.clone(),
        dir: tmp.path().join("backups"),
        textfile: tmp.path().join("textfile"),
        bin: pg_dump.parent().expect("bin dir").to_owned(),
        market_data: "all",
    };
    let first = b.once();
    assert_eq!(
        verified(&first),
        source,
        "the restored copy holds every row"
    );
    let prom = std::fs::read_to_string(b.textfile.join("depthbook_backup.prom")).expect("textfile");
    let size = std::fs::metadata(&first).expect("dump").len();
    assert!(
        prom.contains(&format!("depthbook_backup_last_bytes {size}\n")),
        "{prom}"
    );
    assert!(prom.contains("depthbook_backup_last_success_timestamp_seconds "));

    let (second, third) = (b.once(), b.once());
    let names = b.dumps();
    assert_eq!(names.len(), 2, "BACKUP_KEEP=2: {names:?}");
    assert!(
        !first.exists() && second.exists() && third.exists(),
        "{names:?}"
    );
    assert!(!Path::new(&format!("{}.verified", first.display())).exists());
    let list = String::from_utf8(b.run(&["--list"]).stdout).expect("utf-8");
    let listed: Vec<&str> = list.lines().collect();
    assert_eq!(listed.len(), 2, "{list}");
    assert!(
        listed[0].starts_with(&third.display().to_string()),
        "newest first: {list}"
    );
    assert!(listed[0].contains("restored: instruments"), "{list}");
    let scratch = count(
        &db,
        &format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{}_restore_drill'",
            tdb.name
        ),
    )
    .await;
    assert_eq!(scratch, 0, "the drill's scratch database is dropped");

    a_failed_restore_prunes_nothing(&b, tmp.path(), &third);
    without_market_data(&b, &db, &source, path).await;
}

/// BACKUP_MARKET_DATA=none: the dump restores with every table, the market data's empty (also
/// from TimescaleDB's compressed chunks), the rest whole.
async fn without_market_data(
    b: &Backup,
    db: &Client,
    source: &BTreeMap<String, i64>,
    path: StoragePath,
) {
    if path == StoragePath::Timescale {
        db.batch_execute(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('depth_updates') c",
        )
        .await
        .expect("compressed chunks");
    }
    let slim = Backup {
        url: b.url.clone(),
        dir: b.dir.join("slim"),
        textfile: b.textfile.clone(),
        bin: b.bin.clone(),
        market_data: "none",
    };
    let got = verified(&slim.once());
    for (table, rows) in source {
        let market = !["instruments", "sync_events"].contains(&table.as_str());
        let want = if market { 0 } else { *rows };
        assert_eq!(got[table], want, "{table}: {got:?}");
    }
}

/// A pg_restore that fails: the run fails, its dump is kept as .failed, nothing is pruned, and
/// the textfile still describes `last_good`.
fn a_failed_restore_prunes_nothing(b: &Backup, tmp: &Path, last_good: &Path) {
    let broken = tmp.join("broken");
    std::fs::create_dir_all(&broken).expect("dir");
    std::fs::write(
        broken.join("pg_restore"),
        "#!/bin/sh\necho broken >&2\nexit 1\n",
    )
    .expect("stub");
    set_executable(&broken.join("pg_restore"));
    let failing = Backup {
        bin: PathBuf::from(format!("{}:{}", broken.display(), b.bin.display())),
        url: b.url.clone(),
        dir: b.dir.clone(),
        textfile: b.textfile.clone(),
        market_data: "all",
    };
    let out = failing.run(&[]);
    assert!(
        !out.status.success(),
        "a dump that does not restore fails the run"
    );
    assert_eq!(b.dumps().len(), 2, "nothing pruned");
    let failed = std::fs::read_dir(&b.dir)
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".dump.failed"))
        })
        .count();
    assert_eq!(failed, 1, "the unrestorable dump is kept for inspection");
    let prom_after =
        std::fs::read_to_string(b.textfile.join("depthbook_backup.prom")).expect("textfile");
    assert!(
        prom_after.contains(&format!(
            "depthbook_backup_last_bytes {}\n",
            std::fs::metadata(last_good).expect("dump").len()
        )),
        "the textfile still describes the last good backup: {prom_after}"
    );
}

fn set_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

pgembed::storage_tests!(backups_restore_are_pruned_and_failures_are_kept);
