//! Several collectors (`ingest run --shards`): 2 000 symbols split over 4 `ingest` processes by
//! lease; what each process costs, how long a takeover takes after `kill -9` of one of them
//! and after a clean shutdown (SIGTERM) of another, and how a collector that joins is handed
//! its share.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use binance::Venue;
use sim::{Sim, SimConfig};

use crate::procstat::{self, CpuWindow};
use crate::stack::{self, IngestArgs, Proc, Server};
use crate::Plan;

pub(crate) const SHARDS: u32 = 8;
pub(crate) const TTL_MS: u64 = 3000;

/// One collector over the measurement window.
#[derive(Debug, Clone)]
pub struct PerProcess {
    pub name: String,
    pub shards: i64,
    pub books: f64,
    /// Books synced standing by (`--standby`).
    pub standby_books: f64,
    pub messages_per_sec: f64,
    pub cpu: f64,
    pub peak_rss: u64,
}

/// One takeover: until every shard had a live holder again, and until every book of the
/// shards moved was synced again.
#[derive(Debug, Clone, Copy)]
pub struct Takeover {
    pub leases_secs: f64,
    pub books_secs: f64,
    pub books: i64,
}

#[derive(Debug, Clone)]
pub struct Shards {
    pub symbols: usize,
    pub processes: usize,
    pub sync_secs: f64,
    pub window: Window,
    pub killed: Takeover,
    pub terminated: Takeover,
    pub joined: Joined,
}

/// A collector started beside the survivors: until it held its share, until every book of
/// that share was synced again by it, and what the handover lost.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    pub shards: i64,
    pub leases_secs: f64,
    pub books_secs: f64,
    pub books: i64,
    /// Rows the givers left out as fenced (a handover drains first: 0).
    pub fenced_rows: f64,
    /// Epochs the joiner had to close for the givers (they close their own: 0).
    pub closed_for_givers: i64,
}

pub(crate) struct Collector {
    pub name: String,
    pub proc: Proc,
}

pub(crate) fn args(plan: &Plan, url: &str, sim: &Sim, name: &str) -> Result<IngestArgs> {
    let (spot, usdm) = (
        sim.spot.as_ref().context("spot")?,
        sim.usdm.as_ref().context("usdm")?,
    );
    let mut extra = vec![
        ("shards".to_owned(), SHARDS.to_string()),
        ("instances".to_owned(), plan.shard_processes.to_string()),
        ("lease-ttl-ms".to_owned(), TTL_MS.to_string()),
        ("collector-name".to_owned(), name.to_owned()),
    ];
    extra.extend(plan.ingest_args.iter().cloned());
    Ok(IngestArgs {
        database_url: url.to_owned(),
        venues: vec![
            (Venue::Spot, spot.rest_url(), spot.ws_url()),
            (Venue::Usdm, usdm.rest_url(), usdm.ws_url()),
        ],
        top: plan.shard_symbols,
        extra,
    })
}

pub async fn run(server: &Server, plan: &Plan, bin_dir: &Path, work: &Path) -> Result<Shards> {
    let name = "bench_shards";
    let url = server.fresh_database(name).await?;
    let n = plan.shard_symbols;
    let sim = sim(n).await?;
    let db = stack::connect(&url).await?;
    let started = Instant::now();
    let names = (0..plan.shard_processes).map(|i| format!("c{i}"));
    let mut collectors = spawn(bin_dir, work, names, |name| args(plan, &url, &sim, name))?;
    let books = 2 * n as i64;
    wait(plan, "every shard held and every book synced", || async {
        let listed = db
            .query_one("SELECT count(*) FROM instruments WHERE active", &[])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == books);
        listed && all_held(&db, None).await && unsynced(&db, 0.0).await == Some(0)
    })
    .await?;
    let sync_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(plan.warmup).await;
    let window = measure(server, plan, &db, &collectors).await?;
    let killed = take_over(plan, &db, &mut collectors, libc::SIGKILL).await?;
    let terminated = take_over(plan, &db, &mut collectors, libc::SIGTERM).await?;
    let joiner = {
        let dir = work.join("joined");
        std::fs::create_dir_all(&dir)?;
        let a = args(plan, &url, &sim, "joined")?;
        Collector {
            name: "joined".into(),
            proc: stack::spawn_ingest(bin_dir, &a, &dir)?,
        }
    };
    let joined = join(plan, &db, &collectors, &joiner).await?;
    collectors.push(joiner);
    tear_down(server, plan, name, collectors, (sim, db)).await?;
    Ok(Shards {
        symbols: 2 * n,
        processes: plan.shard_processes,
        sync_secs,
        window,
        killed,
        terminated,
        joined,
    })
}

/// The simulator of §8 and §9: `n` symbols per venue at ×1 rates.
pub(crate) async fn sim(n: usize) -> Result<Sim> {
    Ok(Sim::start(SimConfig {
        seed: 18,
        spot: Some(stack::sim_venue(Venue::Spot, n, 1.0)),
        usdm: Some(stack::sim_venue(Venue::Usdm, n, 1.0)),
    })
    .await?)
}

/// Stops the collectors and the simulator; drops the database unless it is kept.
pub(crate) async fn tear_down(
    server: &Server,
    plan: &Plan,
    name: &str,
    collectors: Vec<Collector>,
    (sim, db): (Sim, tokio_postgres::Client),
) -> Result<()> {
    for c in collectors {
        c.proc.stop().await?;
    }
    sim.shutdown();
    drop(db);
    if !plan.keep {
        server.drop_database(name).await?;
    }
    Ok(())
}

/// Starts a collector per name, each with its own work directory and `args(name)`.
pub(crate) fn spawn(
    bin_dir: &Path,
    work: &Path,
    names: impl Iterator<Item = String>,
    args: impl Fn(&str) -> Result<IngestArgs>,
) -> Result<Vec<Collector>> {
    let mut collectors = Vec::new();
    for name in names {
        let dir = work.join(&name);
        std::fs::create_dir_all(&dir)?;
        let proc = stack::spawn_ingest(bin_dir, &args(&name)?, &dir)?;
        collectors.push(Collector { name, proc });
    }
    Ok(collectors)
}

pub(crate) async fn wait<F, Fut>(plan: &Plan, what: &str, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        anyhow::ensure!(
            start.elapsed() < plan.sync_deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Every shard has a live holder (other than `not`).
pub(crate) async fn all_held(db: &tokio_postgres::Client, not: Option<&str>) -> bool {
    let not = not.unwrap_or("");
    db.query_one(
        "SELECT count(*) = (SELECT count(*) FROM collector_leases) FROM collector_leases
         WHERE expires_at > now() AND split_part(owner, '/', 1) <> $1",
        &[&not],
    )
    .await
    .is_ok_and(|r| r.get(0))
}

/// Active instruments without a book synced (an open epoch) since `since` (Unix seconds).
pub(crate) async fn unsynced(db: &tokio_postgres::Client, since: f64) -> Option<i64> {
    db.query_one(
        "SELECT count(*) FROM instruments i WHERE i.active AND NOT EXISTS (
           SELECT 1 FROM sync_events s WHERE s.instrument_id = i.id AND s.kind = 'synced'
             AND s.time >= to_timestamp($1)
             AND NOT EXISTS (SELECT 1 FROM sync_events e
                             WHERE e.epoch = s.epoch AND e.kind IN ('gap', 'stopped')))",
        &[&since],
    )
    .await
    .ok()
    .map(|r| r.get(0))
}

/// The collectors over a measurement window, and what was committed meanwhile.
#[derive(Debug, Clone)]
pub struct Window {
    pub secs: f64,
    pub rows_per_sec: f64,
    pub cpu_postgres: Option<f64>,
    pub per_process: Vec<PerProcess>,
}

impl Window {
    /// "Window: …" and the per-process table.
    pub(crate) fn render(&self, o: &mut String, standby: bool) {
        let _ = writeln!(
            o,
            "Window: {:.0} s, {:.0} rows/s committed in all; PostgreSQL {} of one core.\n",
            self.secs,
            self.rows_per_sec,
            self.cpu_postgres
                .map_or("n/a".into(), |c| format!("{c:.0} %")),
        );
        render_processes(o, &self.per_process, standby);
    }
}

pub(crate) async fn measure(
    server: &Server,
    plan: &Plan,
    db: &tokio_postgres::Client,
    collectors: &[Collector],
) -> Result<Window> {
    let http = reqwest::Client::new();
    let mut before = Vec::new();
    for c in collectors {
        let t = stack::scrape(&http, c.proc.addr).await?;
        before.push(stack::metric_sum(&t, "depthbook_ingest_messages_total"));
    }
    let cpus = collectors
        .iter()
        .map(|c| CpuWindow::start(c.proc.pid, false))
        .collect::<Result<Vec<_>>>()?;
    let pg = server
        .postmaster_pid
        .map(|p| CpuWindow::start(p, true))
        .transpose()?;
    let t0 = crate::measure::db_now(db).await?;
    tokio::time::sleep(plan.shard_window).await;
    let t1 = crate::measure::db_now(db).await?;
    let secs = t1 - t0;
    let mut out = Vec::new();
    for ((c, cpu), before) in collectors.iter().zip(&cpus).zip(before) {
        let t = stack::scrape(&http, c.proc.addr).await?;
        let m = |n: &str| stack::metric_sum(&t, &format!("depthbook_ingest_{n}"));
        out.push(PerProcess {
            name: c.name.clone(),
            shards: m("leases_held") as i64,
            books: m("books_synced"),
            standby_books: m("standby_books"),
            messages_per_sec: (m("messages_total") - before) / secs,
            cpu: cpu.percent()?,
            peak_rss: procstat::peak_rss(c.proc.pid)?,
        });
    }
    let rows: i64 = crate::measure::committed_rows(db, t0, t1)
        .await?
        .iter()
        .map(|c| c.1)
        .sum();
    let cpu_pg = pg.map(|w| w.percent()).transpose()?;
    Ok(Window {
        secs,
        rows_per_sec: rows as f64 / secs,
        cpu_postgres: cpu_pg,
        per_process: out,
    })
}

/// The active instruments of `victim`'s shards, by the collectors' own hash.
pub(crate) async fn books_of(db: &tokio_postgres::Client, victim: &str) -> Result<Vec<i32>> {
    let shards: Vec<u32> = db
        .query(
            "SELECT shard FROM collector_leases WHERE split_part(owner, '/', 1) = $1 AND expires_at > now()",
            &[&victim],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, i32>(0) as u32)
        .collect();
    let rows = db
        .query(
            "SELECT id, venue, symbol FROM instruments WHERE active",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter(|r| {
            Venue::from_name(r.get(1))
                .is_some_and(|v| shards.contains(&ingest::lease::shard_of(v, r.get(2), SHARDS)))
        })
        .map(|r| r.get(0))
        .collect())
}

/// Signals the collector holding the most shards (`SIGKILL` or `SIGTERM`) and times its
/// shards' takeover.
async fn take_over(
    plan: &Plan,
    db: &tokio_postgres::Client,
    collectors: &mut Vec<Collector>,
    signal: i32,
) -> Result<Takeover> {
    let mut moved: Vec<(usize, Vec<i32>)> = Vec::new();
    for (i, c) in collectors.iter().enumerate() {
        moved.push((i, books_of(db, &c.name).await?));
    }
    let (i, books) = moved
        .into_iter()
        .max_by_key(|(_, b)| b.len())
        .context("a collector")?;
    let victim = collectors.remove(i);
    let since = crate::measure::db_now(db).await?;
    let t = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(victim.proc.pid, signal) };
    let name = victim.name.clone();
    if let Err(e) = wait(plan, "the leases taken over", || all_held(db, Some(&name))).await {
        return Err(e.context(leases_now(db).await));
    }
    let leases_secs = t.elapsed().as_secs_f64();
    let sql = "SELECT count(DISTINCT s.instrument_id) FROM sync_events s
               WHERE s.instrument_id = ANY($1) AND s.kind = 'synced' AND s.time >= to_timestamp($2)
                 AND NOT EXISTS (SELECT 1 FROM sync_events e
                                 WHERE e.epoch = s.epoch AND e.kind IN ('gap', 'stopped'))";
    let n = books.len() as i64;
    wait(plan, "the moved books synced again", || async {
        db.query_one(sql, &[&books, &since])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) >= n)
    })
    .await?;
    let books_secs = t.elapsed().as_secs_f64();
    drop(victim);
    Ok(Takeover {
        leases_secs,
        books_secs,
        books: n,
    })
}

/// Times the handover to `joiner`, just started beside `givers`.
async fn join(
    plan: &Plan,
    db: &tokio_postgres::Client,
    givers: &[Collector],
    joiner: &Collector,
) -> Result<Joined> {
    let http = reqwest::Client::new();
    let fenced = |http: reqwest::Client| async move {
        let mut sum = 0.0;
        for g in givers {
            let text = stack::scrape(&http, g.proc.addr).await?;
            sum += stack::metric_sum(&text, "depthbook_ingest_fenced_rows_total");
        }
        Ok::<f64, anyhow::Error>(sum)
    };
    let fenced_before = fenced(http.clone()).await?;
    let since = crate::measure::db_now(db).await?;
    let t = Instant::now();
    let live = givers.len() + 1;
    let target = SHARDS.div_ceil(plan.shard_processes as u32) as usize;
    let share = (SHARDS as usize).div_ceil(live).min(target) as i64;
    let held = "SELECT count(*) FROM collector_leases
                WHERE split_part(owner, '/', 1) = $1 AND expires_at > now()";
    let name = joiner.name.as_str();
    wait(plan, "the joiner handed its share", || async {
        db.query_one(held, &[&name])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) >= share)
    })
    .await?;
    let leases_secs = t.elapsed().as_secs_f64();
    let books = books_of(db, name).await?;
    let n = books.len() as i64;
    let synced = "SELECT count(DISTINCT s.instrument_id) FROM sync_events s
                  WHERE s.instrument_id = ANY($1) AND s.kind = 'synced' AND s.time >= to_timestamp($2)";
    wait(plan, "the joiner's books synced", || async {
        db.query_one(synced, &[&books, &since])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) >= n)
    })
    .await?;
    let books_secs = t.elapsed().as_secs_f64();
    let fenced_rows = fenced(http).await? - fenced_before;
    let closed_for_givers: i64 = db
        .query_one(
            "SELECT count(*) FROM sync_events WHERE kind = 'stopped' AND detail = $1
               AND time >= to_timestamp($2)",
            &[&ingest::epochs::LEASE_TAKEN_OVER, &since],
        )
        .await?
        .get(0);
    Ok(Joined {
        shards: share,
        leases_secs,
        books_secs,
        books: n,
        fenced_rows,
        closed_for_givers,
    })
}

/// The lease table as text, for an error.
pub(crate) async fn leases_now(db: &tokio_postgres::Client) -> String {
    match db
        .query(
            "SELECT format('shard %s: %s gen %s expires in %s', shard, owner, generation, expires_at - now())
             FROM collector_leases ORDER BY shard",
            &[],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("; "),
        Err(e) => format!("leases unreadable: {e}"),
    }
}

/// The per-process table; `standby`: with the books each stands by for.
pub(crate) fn render_processes(o: &mut String, processes: &[PerProcess], standby: bool) {
    let (head, rule) = if standby {
        ("| books written | books standing by ", "|---|---")
    } else {
        ("| books ", "|---")
    };
    let _ = writeln!(
        o,
        "| process | shards {head}| msg/s | CPU (% of one core) | peak RSS |\n|---|---{rule}|---|---|---|"
    );
    for p in processes {
        let standing = if standby {
            format!(" {:.0} |", p.standby_books)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "| {} | {} | {:.0} |{standing} {:.0} | {:.1} % | {:.0} MB |",
            p.name,
            p.shards,
            p.books,
            p.messages_per_sec,
            p.cpu,
            p.peak_rss as f64 / 1024.0 / 1024.0
        );
    }
}

impl Shards {
    pub fn render(&self, o: &mut String) {
        let _ = writeln!(o, "## 8. Several collectors\n");
        let _ = writeln!(
            o,
            "{} symbols ({} per venue, `sim` at ×1 rates) split into {SHARDS} shards over {} `ingest` processes \
             (`--shards {SHARDS} --instances {} --lease-ttl-ms {TTL_MS}`), all on this machine with one PostgreSQL. \
             Every shard held and every book synced {:.0} s after start.",
            self.symbols,
            self.symbols / 2,
            self.processes,
            self.processes,
            self.sync_secs,
        );
        self.window.render(o, false);
        let _ = writeln!(
            o,
            "\n**Takeover.** The collector holding the most shards was signalled; *leases* is until every shard had a live holder again, \
             *books* until every book of the moved shards was synced again by its new holder (the time between is a recorded gap, refused by `book_at`).\n"
        );
        let _ = writeln!(
            o,
            "| signal | leases | books | books moved |\n|---|---|---|---|"
        );
        for (what, t) in [
            ("`kill -9`", self.killed),
            ("SIGTERM (leases released)", self.terminated),
        ] {
            let _ = writeln!(
                o,
                "| {what} | {:.2} s | {:.2} s | {} |",
                t.leases_secs, t.books_secs, t.books
            );
        }
        let j = self.joined;
        let _ = writeln!(
            o,
            "\n**Joining.** A collector started beside {} was handed its share of {} shards {:.2} s after it started, \
             and had synced its {} books {:.2} s after it started; the givers stopped those books and wrote what they had queued before letting go: \
             {:.0} rows fenced, {} epochs left for the joiner to close.\n",
            match self.processes - 2 {
                1 => "the one survivor".to_owned(),
                n => format!("the {n} survivors"),
            },
            j.shards,
            j.leases_secs,
            j.books,
            j.books_secs,
            j.fenced_rows,
            j.closed_for_givers,
        );
    }
}
