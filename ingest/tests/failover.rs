//! Several collectors for one universe (`--shards`): leases taken over after `kill -9`, after
//! SIGSTOP, and after a collector is cut off from the database; a stale collector's batches
//! fenced; books exact at every instant throughout. Real processes, a real database, `sim`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binance::Venue;
use common::*;
use ingest::lease::{Fence, LeaseConfig, Leases};
use ingest::row::{Row, SyncKind, SyncRow};
use sim::{Sim, SimConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

const SHARDS: u32 = 4;
const TTL_MS: u64 = 1500;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One `ingest run` process sharing the universe by lease, reaching the database through a
/// proxy of its own.
struct Collector {
    name: &'static str,
    child: tokio::process::Child,
    metrics_port: u16,
    proxy: Proxy,
    _spool: tempfile::TempDir,
}

impl Collector {
    async fn start(name: &'static str, url: &str, sim: &Sim) -> Collector {
        Collector::start_with(name, url, sim, &[]).await
    }

    /// With `extra` arguments.
    async fn start_with(name: &'static str, url: &str, sim: &Sim, extra: &[&str]) -> Collector {
        let port: u16 = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
            .expect("the server's port");
        let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
        let url = url.replace(&format!(":{port}/"), &format!(":{}/", proxy.addr.port()));
        let (s, u) = (
            sim.spot.as_ref().expect("spot"),
            sim.usdm.as_ref().expect("usdm"),
        );
        let spool = tempfile::tempdir().expect("spool");
        let metrics_port = free_port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
            .args(["run", "--top", "4", "--book-top-ms", "200", "--no-migrate"])
            .args(["--shards", &SHARDS.to_string(), "--instances", "3"])
            .args([
                "--lease-ttl-ms",
                &TTL_MS.to_string(),
                "--collector-name",
                name,
            ])
            .args(["--metrics-bind", &format!("127.0.0.1:{metrics_port}")])
            .args(["--checkpoint-secs", "1", "--streams-per-connection", "6"])
            .args([
                "--spot-rest-url",
                &s.rest_url(),
                "--spot-ws-url",
                &s.ws_url(),
            ])
            .args([
                "--usdm-rest-url",
                &u.rest_url(),
                "--usdm-ws-url",
                &u.ws_url(),
            ])
            .arg("--spool-dir")
            .arg(spool.path())
            .args(extra)
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ingest");
        Collector {
            name,
            child,
            metrics_port,
            proxy,
            _spool: spool,
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running");
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// A metric of its `/metrics`, summed over labels (0 for a labelled counter not yet
    /// counted). A page that cannot be read fails the test rather than reading as 0.
    async fn counter(&self, name: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = reqwest::get(&url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("the collector serves /metrics")
            .text()
            .await
            .expect("its metrics page");
        assert!(
            text.contains("depthbook_ingest_leases_held"),
            "{}: not a collector's metrics page",
            self.name
        );
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Each shard's live holder's name (a lease past its expiry counts as nobody's).
async fn holders(db: &Client) -> BTreeMap<i32, Option<String>> {
    db.query(
        "SELECT shard, CASE WHEN expires_at > now() THEN split_part(owner, '/', 1) END
         FROM collector_leases ORDER BY shard",
        &[],
    )
    .await
    .expect("leases")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// How many shards `name` holds live.
async fn held_by(db: &Client, name: &str) -> usize {
    holders(db)
        .await
        .values()
        .filter(|o| o.as_deref() == Some(name))
        .count()
}

/// Waits until every shard has a live holder other than `not`; returns how long it took.
async fn taken_over(db: &Client, not: &str, since: Instant) -> Duration {
    wait_until("every shard held by a live collector", || async {
        let h = holders(db).await;
        h.len() == SHARDS as usize && h.values().all(|o| o.as_deref().is_some_and(|o| o != not))
    })
    .await;
    since.elapsed()
}

/// Waits until every instrument's book is synced and has stored `events` events since
/// `since_ms` (a taken-over symbol only once its new holder synced it again); returns how long
/// after `since` that was.
async fn resynced(db: &Client, since_ms: u64, events: i64, since: Instant) -> Duration {
    let sql = format!(
        "SELECT count(*) FROM instruments i WHERE i.active AND NOT EXISTS (
           SELECT 1 FROM sync_events s
           WHERE s.instrument_id = i.id AND s.kind = 'synced'
             AND NOT EXISTS (SELECT 1 FROM sync_events e
                             WHERE e.epoch = s.epoch AND e.kind IN ('gap', 'stopped'))
             AND (SELECT count(DISTINCT d.update_id) FROM depth_updates d
                  WHERE d.instrument_id = i.id
                    AND d.time >= greatest(s.time, to_timestamp({since_ms}::float8 / 1000)))
                 >= {events})"
    );
    wait_until("every book synced again", || async {
        count(db, &sql).await == 0
    })
    .await;
    since.elapsed()
}

/// Who holds the most shards right now, among `among`.
async fn busiest(db: &Client, among: &[&str]) -> String {
    let h = holders(db).await;
    among
        .iter()
        .max_by_key(|n| h.values().filter(|o| o.as_deref() == Some(**n)).count())
        .map(|n| n.to_string())
        .expect("a collector")
}

/// No depth row lies after its epoch's end and before the next sync, other than the events
/// that bridged that sync's snapshot (they may be stamped a moment before the sync itself; `u`
/// past the snapshot's id on spot, `U <= id <= u` on USD-M, so `u` may equal it there): a stale
/// collector's rows would.
async fn check_rows_inside_epochs(db: &Client) {
    let outside = "FROM depth_updates d
         JOIN sync_events e ON e.instrument_id = d.instrument_id AND e.kind IN ('gap', 'stopped')
                           AND e.time < d.time
         LEFT JOIN LATERAL (SELECT s.time, s.first_update_id FROM sync_events s
                            WHERE s.instrument_id = d.instrument_id AND s.kind = 'synced'
                              AND s.time > e.time ORDER BY s.time LIMIT 1) n ON true
         JOIN instruments i ON i.id = d.instrument_id
         WHERE n.time IS NULL OR (n.time > d.time AND (d.update_id < n.first_update_id
               OR (d.update_id = n.first_update_id AND i.venue = 'spot')))";
    let rows = db
        .query(
            &format!(
                "SELECT format('iid %s u %s at %s; %s at %s; next sync %s from %s', d.instrument_id,
                               d.update_id, d.time, e.kind, e.time, n.time, n.first_update_id)
                 {outside} ORDER BY d.time LIMIT 5"
            ),
            &[],
        )
        .await
        .expect("rows outside epochs");
    let shown: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        shown.is_empty(),
        "depth rows after their epoch's end: {shown:#?}"
    );
}

/// A TCP proxy in front of PostgreSQL whose connections can be cut (and new ones refused) and
/// let through again: one collector's network partition from the database.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, l) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: refused while cut
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                l.lock().expect("links").push(link);
            }
        });
        Proxy { addr, cut, links }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

async fn sim() -> Sim {
    Sim::start(SimConfig {
        seed: 18,
        spot: Some(venue_cfg(Venue::Spot)),
        usdm: Some(venue_cfg(Venue::Usdm)),
    })
    .await
    .expect("sim")
}

/// Three collectors for 8 books in 4 shards. Takeovers after `kill -9`, SIGSTOP and a cut from
/// the database each complete within a bounded time; the stopped and the cut collector's late
/// batches are fenced; every stored book equals the truth at every instant, with no duplicate
/// and no row outside an epoch.
#[allow(clippy::too_many_lines)] // one scenario, step by step
async fn collectors_take_over_each_other_and_stale_ones_are_fenced(path: StoragePath) {
    let Some((tdb, db)) = migrated_on(path, "failover").await else {
        return;
    };
    let url = tdb.url.clone();
    let sim = sim().await;
    let mut collectors = Vec::new();
    for name in ["a", "b", "c"] {
        collectors.push(Collector::start(name, &url, &sim).await);
    }
    let start = Instant::now();
    taken_over(&db, "-", start).await;
    resynced(&db, 0, 20, start).await;
    let first = holders(&db).await;
    eprintln!("leases at start: {first:?}");

    // kill -9 of the busiest collector.
    let victim = busiest(&db, &["a", "b", "c"]).await;
    let i = collectors
        .iter()
        .position(|x| x.name == victim)
        .expect("victim");
    let mut killed = collectors.remove(i);
    let (b, c) = (&collectors[0], &collectors[1]);
    let (t, t_ms) = (Instant::now(), ingest::now_ms());
    killed.child.start_kill().expect("kill -9");
    let _ = killed.child.wait().await;
    let lease = taken_over(&db, killed.name, t).await;
    let books = resynced(&db, t_ms, 20, t).await;
    eprintln!("kill -9: leases taken over in {lease:?}, every book synced again in {books:?}");
    assert!(
        lease <= Duration::from_millis(TTL_MS) * 3,
        "a killed collector's leases are taken within the TTL and a round ({lease:?})"
    );

    // SIGSTOP of the busier survivor, SIGCONT once its leases moved on.
    let stopped = busiest(&db, &[b.name, "c"]).await;
    let (stopped, other) = if stopped == b.name { (b, c) } else { (c, b) };
    let (t, t_ms) = (Instant::now(), ingest::now_ms());
    stopped.signal("-STOP");
    let lease = taken_over(&db, stopped.name, t).await;
    let books = resynced(&db, t_ms, 20, t).await;
    eprintln!("SIGSTOP: leases taken over in {lease:?}, books synced again in {books:?}");
    stopped.signal("-CONT");
    wait_until("the resumed collector's stale rows fenced", || async {
        stopped.counter("depthbook_ingest_fenced_rows_total").await > 0.0
    })
    .await;
    // Live again, it is handed its share back by the one holding every shard.
    let (n, half) = (other, f64::from(SHARDS / 2));
    wait_until("the resumed collector handed its share back", || async {
        stopped.counter("depthbook_ingest_leases_held").await == half
            && n.counter("depthbook_ingest_leases_held").await == half
    })
    .await;
    assert!(
        other
            .counter("depthbook_ingest_lease_handovers_total")
            .await
            >= half
    );
    assert_eq!(
        other.counter("depthbook_ingest_fenced_rows_total").await,
        0.0,
        "the collector that took over lost nothing"
    );

    // Cut the one holding every shard off the database: it spools, the resumed one takes over.
    let (cut, rescuer) = (other, stopped);
    let fenced_before = cut.counter("depthbook_ingest_fenced_rows_total").await;
    let (t, t_ms) = (Instant::now(), ingest::now_ms());
    cut.proxy.cut();
    let lease = taken_over(&db, cut.name, t).await;
    let books = resynced(&db, t_ms, 20, t).await;
    eprintln!(
        "cut from the database: leases taken over in {lease:?}, books synced again in {books:?}"
    );
    assert_eq!(
        rescuer.counter("depthbook_ingest_leases_held").await,
        f64::from(SHARDS),
        "the rescuer holds every shard while the other is cut off"
    );
    cut.proxy.heal();
    wait_until("the cut collector's spooled rows fenced", || async {
        cut.counter("depthbook_ingest_fenced_rows_total").await > fenced_before
    })
    .await;
    wait_until("the healed collector handed its share back", || async {
        cut.counter("depthbook_ingest_leases_held").await == half
            && rescuer.counter("depthbook_ingest_leases_held").await == half
    })
    .await;

    // Let the rescuer store more, then check it all.
    resynced(&db, ingest::now_ms(), 40, Instant::now()).await;
    drop(collectors);
    check_no_duplicates(&db).await;
    check_continuity(&db).await;
    check_rows_inside_epochs(&db).await;
    let seen = instants::check_every_instant(&db, &sim).await;
    assert!(seen.equal > 500, "{seen:?}");
    assert!(
        seen.refused > 0,
        "the takeovers' gaps are refused: {seen:?}"
    );
}

/// At the writer: a batch produced under a lease whose generation moved on is rolled back by
/// the database, the process's leases are revoked, and later rows of it are not even tried.
#[allow(clippy::too_many_lines)] // one scenario, step by step
async fn a_stale_generation_is_fenced_by_the_database(path: StoragePath) {
    let Some((tdb, db)) = migrated_on(path, "fence").await else {
        return;
    };
    let url = tdb.url.clone();
    let metrics = ingest::metrics::Metrics::new();
    let cfg = LeaseConfig {
        shards: 1,
        instances: 1,
        ttl: Duration::from_secs(60),
        name: "w".into(),
        standby: None,
    };
    let mut leases = Leases::init(&db, cfg, metrics.clone())
        .await
        .expect("leases");
    leases.tick(&db).await.expect("a round");
    let view = leases.view();
    let generation = *view.borrow().shards.get(&0).expect("shard 0 held");
    let spool = tempfile::tempdir().expect("spool");
    let wcfg = ingest::writer::WriterConfig {
        database_url: url.clone(),
        max_rows: 100,
        max_delay: Duration::ZERO,
        queue: 100,
        spool_dir: spool.path().to_owned(),
        instance: "fence-test".into(),
        held: Some(view.clone()),
        session_name: None,
    };
    let (unfenced, handles) = ingest::writer::start(wcfg, metrics.clone());
    let writer = unfenced.fenced(Some(Fence {
        shard: 0,
        generation,
    }));
    drop(unfenced); // the writers stop once every sender is gone
    let iid: i32 = db
        .query_one(
            "INSERT INTO instruments (venue, symbol, base, quote, status, tick_size, step_size)
             VALUES ('spot', 'FENCEUSDT', 'FENCE', 'USDT', 'TRADING', 0.01, 0.001) RETURNING id",
            &[],
        )
        .await
        .expect("instrument")
        .get(0);
    let row = |detail: &str| {
        Row::Sync(SyncRow {
            time: ingest::now_ms(),
            instrument_id: iid,
            epoch: None,
            kind: SyncKind::Resync,
            first_update_id: None,
            last_update_id: None,
            detail: Some(detail.into()),
        })
    };
    let stored = |detail: &'static str| {
        let db = &db;
        async move {
            count(
                db,
                &format!("SELECT count(*) FROM sync_events WHERE detail = '{detail}'"),
            )
            .await
        }
    };
    writer.send(row("held")).await;
    wait_until("the held lease's row committed", || async {
        stored("held").await == 1
    })
    .await;

    // Another collector takes the shard: the generation moves on.
    db.execute(
        "UPDATE collector_leases SET owner = 'other', generation = generation + 1",
        &[],
    )
    .await
    .expect("takeover");
    writer.send(row("stale")).await;
    let fenced = metrics
        .leases
        .fenced_batches
        .with_label_values(&["sync_events"]);
    wait_until("the stale batch fenced", || async { fenced.get() == 1 }).await;
    assert_eq!(view.borrow().revocations, 1, "the lease is taken again");
    assert!(view.borrow().shards.is_empty());
    writer.send(row("after")).await;
    drop(writer);
    for h in handles {
        h.await.expect("writer ends");
    }
    assert_eq!(stored("stale").await, 0, "a fenced batch stores nothing");
    assert_eq!(stored("after").await, 0, "nor does what follows it");
    let lost = metrics
        .leases
        .fenced_rows
        .with_label_values(&["sync_events"]);
    assert_eq!(lost.get(), 2);
    let ledger = count(
        &db,
        "SELECT count(*) FROM ingest_batches WHERE batch_id LIKE 'fence-test-%'",
    )
    .await;
    assert_eq!(ledger, 1, "only the held batch is in the ledger");
}

/// A collector started with another shard count than the database's refuses to run.
async fn a_different_shard_count_is_refused(path: StoragePath) {
    let Some((_tdb, db)) = migrated_on(path, "shards").await else {
        return;
    };
    let cfg = |shards| LeaseConfig {
        shards,
        instances: 1,
        ttl: Duration::from_secs(3),
        name: "x".into(),
        standby: None,
    };
    let metrics = ingest::metrics::Metrics::new();
    Leases::init(&db, cfg(4), metrics.clone())
        .await
        .expect("first");
    let err = Leases::init(&db, cfg(8), metrics)
        .await
        .expect_err("another count");
    assert!(err.to_string().contains("--shards 8"), "{err}");
}

/// A collector without `--shards` refuses to start while others hold leases of the database:
/// it would write their symbols a second time, unfenced.
async fn a_collector_without_shards_refuses_to_start_beside_leases(path: StoragePath) {
    let Some((tdb, db)) = migrated_on(path, "unsharded").await else {
        return;
    };
    let cfg = LeaseConfig {
        shards: 2,
        instances: 1,
        ttl: Duration::from_secs(60),
        name: "leaseholder".into(),
        standby: None,
    };
    let mut leases = Leases::init(&db, cfg, ingest::metrics::Metrics::new())
        .await
        .expect("leases");
    leases.tick(&db).await.expect("a round");
    let sim = sim().await;
    let spool = tempfile::tempdir().expect("spool");
    let run = ingest::run::run(
        run_config(&tdb.url, &sim, spool.path()),
        ingest::metrics::Metrics::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    let err = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("refused at once")
        .expect_err("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("leaseholder") && text.contains("--shards"),
        "{text}"
    );
    let epochs = count(&db, "SELECT count(*) FROM sync_events").await;
    assert_eq!(epochs, 0, "nothing was collected");
}

/// A collector that joins while another holds every shard is handed its share, and the
/// handover loses nothing: the giver ends the epochs it hands over with its own 'stopped'
/// events (none is left for the taker to close), nothing of it is fenced, and every stored book
/// equals the truth at every instant.
#[allow(clippy::too_many_lines)] // one scenario, step by step
async fn a_joining_collector_is_handed_its_share_without_loss(path: StoragePath) {
    let Some((tdb, db)) = migrated_on(path, "handover").await else {
        return;
    };
    let sim = sim().await;
    // Who holds how many shards, read from the database (a process just started serves no
    // metrics yet).
    let a = Collector::start("a", &tdb.url, &sim).await;
    let holding = |name: &'static str| held_by(&db, name);
    wait_until("the first collector holds every shard", || async {
        holding("a").await == SHARDS as usize
    })
    .await;
    resynced(&db, 0, 20, Instant::now()).await;

    let b = Collector::start("b", &tdb.url, &sim).await;
    let half = SHARDS as usize / 2;
    let t = Instant::now();
    wait_until("the newcomer is handed half the shards", || async {
        holding("a").await == half && holding("b").await == half
    })
    .await;
    let books = resynced(&db, ingest::now_ms(), 20, t).await;
    eprintln!("handover: every book collected again {books:?} after the newcomer started");
    assert_eq!(
        a.counter("depthbook_ingest_lease_handovers_total").await,
        half as f64
    );
    assert_eq!(
        a.counter("depthbook_ingest_fenced_rows_total").await,
        0.0,
        "the giver wrote everything it had queued"
    );

    // The books of the shards handed over (the giver's highest) ended with its own events.
    let handed: Vec<i32> = holders(&db)
        .await
        .into_iter()
        .filter(|(_, o)| o.as_deref() == Some("b"))
        .map(|(s, _)| s)
        .collect();
    let books: i64 = db
        .query("SELECT venue, symbol FROM instruments WHERE active", &[])
        .await
        .expect("instruments")
        .iter()
        .filter(|r| {
            let venue = Venue::from_name(r.get(0)).expect("a venue");
            let shard = ingest::lease::shard_of(venue, r.get(1), SHARDS);
            handed.contains(&(shard as i32))
        })
        .count() as i64;
    assert!(books > 0, "the shards handed over hold books: {handed:?}");
    let stopped = |detail: &str| {
        format!("SELECT count(*) FROM sync_events WHERE kind = 'stopped' AND detail = '{detail}'")
    };
    assert_eq!(count(&db, &stopped("shutdown")).await, books);
    assert_eq!(
        count(&db, &stopped(ingest::epochs::LEASE_TAKEN_OVER)).await,
        0,
        "no epoch was left for the taker to close"
    );

    resynced(&db, ingest::now_ms(), 20, Instant::now()).await;
    drop((a, b));
    check_no_duplicates(&db).await;
    check_continuity(&db).await;
    check_rows_inside_epochs(&db).await;
    let seen = instants::check_every_instant(&db, &sim).await;
    assert!(seen.equal > 300, "{seen:?}");
}

/// Two collectors standing by for each other's shards (`--standby`): after a `kill -9` of
/// one, the other continues every book it took over in the same epoch. No event is missing, no
/// gap or new sync is recorded, and every stored book equals the truth at every instant across
/// the takeover. A third that joins is handed its share of books it was standing by for, and
/// the one that gave them stands by for them again.
#[allow(clippy::too_many_lines)] // one scenario, step by step
async fn a_hot_standby_takes_over_without_a_gap(path: StoragePath) {
    let Some((tdb, db)) = migrated_on(path, "standby").await else {
        return;
    };
    let sim = sim().await;
    let standby = ["--standby", "--standby-keep-secs", "20"];
    let a = Collector::start_with("a", &tdb.url, &sim, &standby).await;
    let b = Collector::start_with("b", &tdb.url, &sim, &standby).await;
    // Read from the database: a process just started serves no metrics yet.
    let half = SHARDS as usize / 2;
    wait_until("the collectors share the shards", || async {
        held_by(&db, "a").await == half && held_by(&db, "b").await == half
    })
    .await;
    let active = "SELECT count(*) FROM instruments WHERE active";
    wait_until("the universe listed", || async {
        count(&db, active).await == 8
    })
    .await;
    resynced(&db, 0, 20, Instant::now()).await;
    let books = count(&db, active).await as f64;
    let sum = |name: &'static str| {
        let (a, b) = (&a, &b);
        async move { a.counter(name).await + b.counter(name).await }
    };
    let (synced, warm) = (
        "depthbook_ingest_books_synced",
        "depthbook_ingest_standby_books",
    );
    wait_until(
        "every book written by one and standing by in the other",
        || async { sum(synced).await == books && sum(warm).await == books },
    )
    .await;
    // The victim: the one collecting more books (a shard may hold none of the 8).
    let (victim, survivor) = if a.counter(synced).await >= b.counter(synced).await {
        (a, b)
    } else {
        (b, a)
    };
    let moved = victim.counter(synced).await;
    assert!(moved > 0.0, "the victim collects books");
    // (stopped, synced, gap) events so far.
    let epochs = || async {
        let n = "SELECT count(*) FILTER (WHERE kind = 'stopped'), count(*) FILTER (WHERE kind = 'synced'),
                        count(*) FILTER (WHERE kind = 'gap') FROM sync_events";
        let r = db.query_one(n, &[]).await.expect("sync events");
        (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2))
    };
    let before = epochs().await;

    let (t, t_ms) = (Instant::now(), ingest::now_ms());
    let mut victim = victim;
    victim.child.start_kill().expect("kill -9");
    let _ = victim.child.wait().await;
    let lease = taken_over(&db, victim.name, t).await;
    wait_until("every book taken over is promoted", || async {
        survivor
            .counter("depthbook_ingest_standby_promotions_total")
            .await
            == moved
    })
    .await;
    let continued = resynced(&db, t_ms, 20, t).await;
    eprintln!(
        "hot standby, kill -9: leases taken over in {lease:?}, every book stored 20 events past \
         the kill {continued:?} after it"
    );
    let text = reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        survivor.metrics_port
    ))
    .await
    .expect("metrics")
    .text()
    .await
    .expect("metrics page");
    assert!(
        text.contains(&format!(
            "depthbook_ingest_standby_promotions_total{{how=\"continued\"}} {moved}"
        )),
        "every book taken over continued its epoch: {}",
        text.lines()
            .filter(|l| l.contains("promotions"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    // A feed gap (the simulator cuts off a consumer it finds too slow) would be recorded and
    // resynced like any other; the takeover itself records nothing.
    let after = epochs().await;
    assert_eq!(after.0, before.0, "no epoch ended by the takeover");
    assert_eq!(
        after.1 - before.1,
        after.2 - before.2,
        "no new epoch but after a feed gap: {before:?} → {after:?}"
    );

    // A third joins, standing by: the survivor hands it half the shards. Their epochs were
    // ended by the giver, so the joiner's standby books start new ones at once.
    let cut = || {
        let (s, u) = (sim.spot.as_ref(), sim.usdm.as_ref());
        s.into_iter()
            .chain(u)
            .map(|v| v.state().slow_consumers_cut)
            .sum::<u64>()
    };
    let gaps = "depthbook_ingest_gaps_total";
    let (gaps_before, cut_before) = (survivor.counter(gaps).await, cut());
    let c = Collector::start_with("c", &tdb.url, &sim, &standby).await;
    wait_until("the joiner is handed half the shards", || async {
        held_by(&db, survivor.name).await == half && held_by(&db, "c").await == half
    })
    .await;
    resynced(&db, ingest::now_ms(), 20, Instant::now()).await;
    let promotions = "depthbook_ingest_standby_promotions_total";
    eprintln!(
        "hot standby, joining: {} books handed over, promoted",
        c.counter(promotions).await
    );
    assert_eq!(
        c.counter(promotions).await,
        c.counter(synced).await,
        "every book the joiner collects was standing by"
    );
    wait_until("every book standing by again", || async {
        survivor.counter(warm).await + c.counter(warm).await == books
    })
    .await;
    // The books the survivor gave stand by again on the streams they had: restarting them
    // under their new role subscribes nothing again, so no event goes missing between an
    // UNSUBSCRIBE and a SUBSCRIBE. (Checked 20 events after the handover, long after such a
    // gap would show; a consumer the simulator cut would miss events for another reason.)
    if cut() == cut_before {
        assert_eq!(
            survivor.counter(gaps).await,
            gaps_before,
            "the giver's books restarted in place, without a gap"
        );
    }
    // No lease was lost: a row left out as if one were would be a hole in an epoch.
    for who in [&survivor, &c] {
        assert_eq!(
            who.counter("depthbook_ingest_fenced_rows_total").await,
            0.0,
            "{}: no row left out",
            who.name
        );
    }

    drop((survivor, c));
    check_no_duplicates(&db).await;
    check_continuity(&db).await;
    check_rows_inside_epochs(&db).await;
    let seen = instants::check_every_instant(&db, &sim).await;
    assert!(seen.equal > 300, "{seen:?}");
}

pgembed::storage_tests!(
    a_hot_standby_takes_over_without_a_gap,
    a_joining_collector_is_handed_its_share_without_loss,
    collectors_take_over_each_other_and_stale_ones_are_fenced,
    a_stale_generation_is_fenced_by_the_database,
    a_different_shard_count_is_refused,
    a_collector_without_shards_refuses_to_start_beside_leases
);
