//! Hot standby (`ingest run --standby`): two collectors at the scale of §8, each holding half
//! the shards and standing by for the other half. What each process costs with every symbol
//! collected by both, and what a `kill -9` of one leaves: how long until its leases moved and
//! its books were collected again, how many continued their epochs, and whether any event or
//! epoch boundary appeared in their stored history.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use sim::Sim;

use crate::shards::{self, Collector, Window, SHARDS, TTL_MS};
use crate::stack::{self, Server};
use crate::Plan;

/// How long a standby symbol keeps its rows (`--standby-keep-secs`, the default).
const KEEP_SECS: u64 = 15;

#[derive(Debug, Clone)]
pub struct Standby {
    pub symbols: usize,
    pub sync_secs: f64,
    pub window: Window,
    pub killed: Killed,
}

/// A `kill -9` of the collector holding more books.
#[derive(Debug, Clone, Copy)]
pub struct Killed {
    pub leases_secs: f64,
    /// Until the survivor had promoted every book it took over.
    pub promoted_secs: f64,
    /// Until every book taken over had stored an event after the kill.
    pub books_secs: f64,
    pub books: i64,
    pub continued: f64,
    pub restarted: f64,
    /// `synced`, `gap` or `stopped` events recorded for those books since the kill.
    pub epoch_events: i64,
    /// Breaks in those books' update ids (from 30 s before the kill to the end).
    pub breaks: i64,
}

fn args(plan: &Plan, url: &str, sim: &Sim, name: &str) -> Result<stack::IngestArgs> {
    let mut a = shards::args(plan, url, sim, name)?;
    for (k, v) in &mut a.extra {
        if k == "instances" {
            *v = "2".into();
        }
    }
    a.extra.push(("standby".into(), String::new()));
    a.extra
        .push(("standby-keep-secs".into(), KEEP_SECS.to_string()));
    Ok(a)
}

pub async fn run(server: &Server, plan: &Plan, bin_dir: &Path, work: &Path) -> Result<Standby> {
    let name = "bench_standby";
    let url = server.fresh_database(name).await?;
    let n = plan.shard_symbols;
    let sim = shards::sim(n).await?;
    let db = stack::connect(&url).await?;
    let started = Instant::now();
    let names = (0..2).map(|i| format!("s{i}"));
    let mut collectors = shards::spawn(bin_dir, work, names, |name| args(plan, &url, &sim, name))?;
    let books = 2 * n as i64;
    let http = reqwest::Client::new();
    shards::wait(plan, "every book synced, and warm on the other", || async {
        let mut warm = 0.0;
        for c in &collectors {
            let Ok(t) = stack::scrape(&http, c.proc.addr).await else {
                return false;
            };
            warm += stack::metric_sum(&t, "depthbook_ingest_standby_books");
        }
        warm == books as f64
            && shards::all_held(&db, None).await
            && shards::unsynced(&db, 0.0).await == Some(0)
    })
    .await?;
    let sync_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(plan.warmup).await;
    let window = shards::measure(server, plan, &db, &collectors).await?;
    let killed = kill(plan, &db, &mut collectors).await?;
    shards::tear_down(server, plan, name, collectors, (sim, db)).await?;
    Ok(Standby {
        symbols: 2 * n,
        sync_secs,
        window,
        killed,
    })
}

/// Breaks in the stored update ids of `books` since `from` (Unix seconds): an event missing
/// (spot: `U` not the previous `u` + 1; USD-M: `pu` not the previous `u`).
const BREAKS: &str = "
WITH ev AS (
    SELECT DISTINCT d.instrument_id, i.venue, d.first_update_id, d.update_id, d.prev_update_id
    FROM depth_updates d JOIN instruments i ON i.id = d.instrument_id
    WHERE d.instrument_id = ANY($1) AND d.time >= to_timestamp($2)),
l AS (
    SELECT *, lag(update_id) OVER (PARTITION BY instrument_id ORDER BY update_id) AS prev
    FROM ev)
SELECT count(*) FROM l
WHERE prev IS NOT NULL
  AND CASE WHEN venue = 'spot' THEN first_update_id <> prev + 1
           ELSE prev_update_id IS DISTINCT FROM prev END";

/// `kill -9` of the collector holding more books; times the survivor's takeover.
async fn kill(
    plan: &Plan,
    db: &tokio_postgres::Client,
    collectors: &mut Vec<Collector>,
) -> Result<Killed> {
    let mut held = Vec::new();
    for c in collectors.iter() {
        held.push(shards::books_of(db, &c.name).await?);
    }
    let i = usize::from(held[1].len() > held[0].len());
    let books = held.swap_remove(i);
    let victim = collectors.remove(i);
    let survivor = collectors.first().context("a survivor")?;
    let last_event: i64 = db
        .query_one("SELECT coalesce(max(id), 0) FROM sync_events", &[])
        .await?
        .get(0);
    let since = crate::measure::db_now(db).await?;
    let t = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(victim.proc.pid, libc::SIGKILL) };
    let name = victim.name.clone();
    if let Err(e) = shards::wait(plan, "the leases taken over", || {
        shards::all_held(db, Some(&name))
    })
    .await
    {
        return Err(e.context(shards::leases_now(db).await));
    }
    let leases_secs = t.elapsed().as_secs_f64();
    let http = reqwest::Client::new();
    let promotions = |how: &'static str| {
        let http = http.clone();
        async move {
            let text = stack::scrape(&http, survivor.proc.addr).await?;
            let series = format!("depthbook_ingest_standby_promotions_total{{how=\"{how}\"}}");
            Ok::<f64, anyhow::Error>(series_value(&text, &series))
        }
    };
    let n = books.len() as i64;
    shards::wait(plan, "every book taken over promoted", || async {
        let (c, r) = (promotions("continued").await, promotions("restarted").await);
        matches!((c, r), (Ok(c), Ok(r)) if c + r >= n as f64)
    })
    .await?;
    let promoted_secs = t.elapsed().as_secs_f64();
    let stored = "SELECT count(DISTINCT instrument_id) FROM depth_updates
                  WHERE instrument_id = ANY($1) AND time > to_timestamp($2)";
    shards::wait(plan, "every book taken over collected again", || async {
        db.query_one(stored, &[&books, &since])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) >= n)
    })
    .await?;
    let books_secs = t.elapsed().as_secs_f64();
    let epoch_events: i64 = db
        .query_one(
            "SELECT count(*) FROM sync_events WHERE id > $1 AND instrument_id = ANY($2)
               AND kind IN ('synced', 'gap', 'stopped')",
            &[&last_event, &books],
        )
        .await?
        .get(0);
    let breaks: i64 = db
        .query_one(BREAKS, &[&books, &(since - 30.0)])
        .await?
        .get(0);
    drop(victim);
    Ok(Killed {
        leases_secs,
        promoted_secs,
        books_secs,
        books: n,
        continued: promotions("continued").await?,
        restarted: promotions("restarted").await?,
        epoch_events,
        breaks,
    })
}

/// One labelled series' value in a Prometheus text page (0 when absent).
fn series_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

impl Standby {
    pub fn render(&self, o: &mut String) {
        let _ = writeln!(o, "## 9. Hot standby\n");
        let _ = writeln!(
            o,
            "{} symbols ({} per venue, `sim` at ×1 rates) in {SHARDS} shards over 2 `ingest` processes \
             (`--shards {SHARDS} --instances 2 --lease-ttl-ms {TTL_MS} --standby --standby-keep-secs {KEEP_SECS}`): \
             each holds half the shards and stands by for the other half, so every book is synced in both. \
             Every book synced and standing by in the other {:.0} s after start.",
            self.symbols,
            self.symbols / 2,
            self.sync_secs,
        );
        self.window.render(o, true);
        let k = self.killed;
        let _ = writeln!(
            o,
            "\n**`kill -9` of the one holding more books ({}).** Leases taken over {:.2} s after the kill, every book promoted {:.2} s after it \
             ({:.0} continued their epochs, {:.0} restarted), every book collected again {:.2} s after it. Since the kill, those books recorded \
             {} epoch events (synced, gap, stopped), and their stored update ids from 30 s before the kill on have {} breaks.\n",
            k.books,
            k.leases_secs,
            k.promoted_secs,
            k.continued,
            k.restarted,
            k.books_secs,
            k.epoch_events,
            k.breaks,
        );
    }
}
