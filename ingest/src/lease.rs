//! Shards by lease (`ingest run --shards N`): several collectors share one universe through the
//! database they already write to, with no other coordinator. A symbol belongs to shard
//! `shard_of(venue, symbol)`; a collector collects a shard's symbols only while it holds the
//! shard's row in `collector_leases` (`sql/0013_collector_leases.sql`). A lease is renewed every
//! third of its TTL; one left to expire (a process killed, stopped or cut off from the
//! database) is taken over by another collector, which raises its generation and then closes
//! the epochs the previous holder left open. Every batch carries the generation of each shard
//! it has rows of, and the writer's transaction checks and locks it (`writer`), so a collector
//! that lost a lease never commits into it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use binance::Venue;
use tokio::sync::watch;
use tokio_postgres::types::Type;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::standby::Standby;

/// A shard and the generation of its lease under which rows were produced: what a batch must
/// still match in `collector_leases` to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fence {
    pub shard: u32,
    pub generation: i64,
}

/// What this process holds, shared between the lease task, the venues and the writers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Shard → generation.
    pub shards: BTreeMap<u32, i64>,
    /// Held shards being handed over: their symbols stop, while the rows they queued still
    /// commit under the lease.
    pub leaving: BTreeSet<u32>,
    /// Leaving shards whose symbols have stopped and whose rows are all written: the lease
    /// task lets them go.
    pub drained: BTreeSet<u32>,
    /// Raised by a writer whose batch the database fenced after it removed the leases, still
    /// held, whose rows the batch dropped: those are taken again under a new generation (their
    /// symbols start new epochs), so no later batch continues past the rows dropped.
    pub revocations: u64,
}

impl Held {
    /// Is `fence` still current here?
    pub fn holds(&self, fence: Fence) -> bool {
        self.shards.get(&fence.shard) == Some(&fence.generation)
    }

    /// The lease to collect `shard` under: none when not held, or being handed over.
    pub fn fence(&self, shard: u32) -> Option<Fence> {
        if self.leaving.contains(&shard) {
            return None;
        }
        self.shards
            .get(&shard)
            .map(|&generation| Fence { shard, generation })
    }
}

/// The shared view of [`Held`]: the lease task publishes, venues follow, writers read and
/// revoke.
pub type HeldView = Arc<watch::Sender<Held>>;

/// Drops the leases of `fences` this process still holds (a batch with rows of them was
/// fenced); see [`Held::revocations`]. Returns whether any was.
pub fn revoke(view: &HeldView, fences: &[Fence]) -> bool {
    view.send_if_modified(|h| {
        let held: Vec<u32> = fences
            .iter()
            .filter(|f| h.holds(**f))
            .map(|f| f.shard)
            .collect();
        if held.is_empty() {
            return false;
        }
        h.shards.retain(|s, _| !held.contains(s));
        h.revocations += 1;
        true
    })
}

/// The shard of a symbol: FNV-1a (64 bit) of `venue/SYMBOL`, modulo the shard count. Fixed
/// here rather than std's hasher, which may change between Rust releases: collectors of
/// different builds must agree.
pub fn shard_of(venue: Venue, symbol: &str, shards: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let key = format!("{}/{}", venue.as_str(), symbol.to_ascii_uppercase());
    let hash = key
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (hash % u64::from(shards.max(1))) as u32
}

/// The collectors holding a live lease of this database, if any: a collector without
/// `--shards` must not start beside them (it would write their symbols unfenced, twice).
pub async fn live_holders(db: &Client) -> Result<Option<String>, tokio_postgres::Error> {
    let row = db
        .query_one(
            "SELECT string_agg(DISTINCT split_part(owner, '/', 1), ', ')
             FROM collector_leases WHERE expires_at > now()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// `--shards`, `--instances`, `--lease-ttl-ms`, `--collector-name`.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub shards: u32,
    /// How many collectors are meant to share the shards: each takes up to ⌈shards/instances⌉
    /// at once, and more only when a shard stayed free for a lease round (a third of the TTL).
    pub instances: u32,
    pub ttl: Duration,
    /// The collector's name; its owner id adds this run's start, so a restart is a new owner.
    pub name: String,
    /// `--standby`: stand by for the shards held elsewhere, keeping their rows this long.
    pub standby: Option<Duration>,
}

impl LeaseConfig {
    fn target(&self) -> usize {
        self.shards.div_ceil(self.instances.max(1)) as usize
    }
}

/// Why leases could not be set up or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "the collectors of this database split the universe into {found} shards; this one was \
         started with --shards {wanted} (every collector needs the same count)"
    )]
    ShardCount { found: i32, wanted: u32 },
}

/// The `application_name` of a collector's database sessions: a collector taking a lease over
/// ends the previous holder's sessions by it.
pub fn session_name(owner: &str) -> String {
    format!("depthbook-ingest {owner}")
}

/// One shard's row, as read for a round of acquisition.
struct LeaseRow {
    shard: u32,
    owner: Option<String>,
    generation: i64,
    /// Past its expiry.
    free: bool,
    /// Past its expiry by more than a lease round (a third of the TTL): a collector with room
    /// had its round to take it and did not.
    orphaned: bool,
}

/// This process's leases and the task that keeps them.
#[derive(Debug)]
pub struct Leases {
    cfg: LeaseConfig,
    owner: String,
    view: HeldView,
    /// What the lease task holds (the view may have been revoked since).
    mine: BTreeMap<u32, i64>,
    /// Held shards being handed over, since when ([`Held::leaving`]).
    leaving: BTreeMap<u32, Instant>,
    /// Shards let go in a handover, when: not taken back for two TTLs, so the collector they
    /// were meant for has many rounds to take them (a giver that took them back as soon as
    /// they counted as orphaned, a round later, could race a slow taker, and hand them over
    /// again and again).
    handed: BTreeMap<u32, Instant>,
    seen_revocations: u64,
    metrics: Arc<Metrics>,
    standby: Option<Arc<Standby>>,
}

impl Leases {
    /// Creates the shard rows if this is the first collector, and checks the shard count.
    pub async fn init(
        db: &Client,
        cfg: LeaseConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Leases, LeaseError> {
        let shards = i32::try_from(cfg.shards).unwrap_or(i32::MAX);
        // Born expired "now", so the first collectors share them out before any counts as
        // orphaned (a round later).
        db.execute_typed(
            "INSERT INTO collector_leases (shard, shards, expires_at)
             SELECT s, $1, now() FROM generate_series(0, $1 - 1) AS s
             ON CONFLICT (shard) DO NOTHING",
            &[(&shards, Type::INT4)],
        )
        .await?;
        let found: i32 = db
            .query_one(
                "SELECT CASE WHEN min(shards) = max(shards) AND count(*) = min(shards)
                             THEN min(shards) ELSE -1 END
                 FROM collector_leases",
                &[],
            )
            .await?
            .get(0);
        if found != shards {
            return Err(LeaseError::ShardCount {
                found,
                wanted: cfg.shards,
            });
        }
        // Within PostgreSQL's 63 bytes of application_name (`session_name`).
        let name: String = cfg.name.chars().take(32).collect();
        let owner = format!("{name}/{:x}", crate::now_ms());
        let standby = cfg.standby.map(|keep| Arc::new(Standby::new(keep)));
        Ok(Leases {
            cfg,
            standby,
            owner,
            view: Arc::new(watch::Sender::new(Held::default())),
            mine: BTreeMap::new(),
            leaving: BTreeMap::new(),
            handed: BTreeMap::new(),
            seen_revocations: 0,
            metrics,
        })
    }

    pub fn view(&self) -> HeldView {
        self.view.clone()
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn shards(&self) -> u32 {
        self.cfg.shards
    }

    /// What its standby symbols share (`--standby`).
    pub fn standby(&self) -> Option<Arc<Standby>> {
        self.standby.clone()
    }

    /// One round: notice a revocation, renew what is held, take what is free, publish.
    pub async fn tick(&mut self, db: &Client) -> Result<(), LeaseError> {
        let view = self.view.borrow().clone();
        if view.revocations != self.seen_revocations {
            self.seen_revocations = view.revocations;
            let revoked: Vec<u32> = self
                .mine
                .keys()
                .copied()
                .filter(|s| !view.shards.contains_key(s))
                .collect();
            tracing::warn!(owner = %self.owner, ?revoked, "a batch was fenced: taking these leases again");
            self.mine.retain(|s, _| view.shards.contains_key(s));
        }
        self.renew(db).await?;
        let mine = &self.mine;
        self.leaving.retain(|s, _| mine.contains_key(s));
        self.let_go_drained(db).await?;
        let others = self.others(db).await?;
        let share = share(self.cfg.shards, others.len() + 1).min(self.cfg.target());
        self.acquire(db, share).await?;
        self.rebalance(&others);
        self.publish();
        Ok(())
    }

    /// Renews the leases held; one whose generation moved on was taken over meanwhile.
    async fn renew(&mut self, db: &Client) -> Result<(), LeaseError> {
        if self.mine.is_empty() {
            return Ok(());
        }
        let (shards, generations) = self.pairs();
        let ttl = self.cfg.ttl.as_secs_f64();
        let kept = db
            .query_typed(
                "UPDATE collector_leases l
                 SET renewed_at = now(), expires_at = now() + make_interval(secs => $4)
                 FROM unnest($2::integer[], $3::bigint[]) AS m(shard, generation)
                 WHERE l.shard = m.shard AND l.generation = m.generation AND l.owner = $1
                 RETURNING l.shard",
                &[
                    (&self.owner, Type::TEXT),
                    (&shards, Type::INT4_ARRAY),
                    (&generations, Type::INT8_ARRAY),
                    (&ttl, Type::FLOAT8),
                ],
            )
            .await?;
        let kept: Vec<u32> = kept.iter().map(|r| r.get::<_, i32>(0) as u32).collect();
        let lost: Vec<u32> = self
            .mine
            .keys()
            .copied()
            .filter(|s| !kept.contains(s))
            .collect();
        if !lost.is_empty() {
            tracing::warn!(owner = %self.owner, ?lost, "leases taken over by another collector");
            self.mine.retain(|s, _| kept.contains(s));
        }
        Ok(())
    }

    fn pairs(&self) -> (Vec<i32>, Vec<i64>) {
        self.mine.iter().map(|(&s, &g)| (s as i32, g)).unzip()
    }

    /// Takes free leases up to this collector's `share`, and orphaned ones beyond it.
    async fn acquire(&mut self, db: &Client, share: usize) -> Result<(), LeaseError> {
        let round = self.cfg.ttl.as_secs_f64() / 3.0;
        let rows = db
            .query_typed(
                "SELECT shard, owner, generation, expires_at < now(),
                        expires_at < now() - make_interval(secs => $1)
                 FROM collector_leases ORDER BY shard",
                &[(&round, Type::FLOAT8)],
            )
            .await?;
        let rows: Vec<LeaseRow> = rows
            .iter()
            .map(|r| LeaseRow {
                shard: r.get::<_, i32>(0) as u32,
                owner: r.get(1),
                generation: r.get(2),
                free: r.get(3),
                orphaned: r.get(4),
            })
            .collect();
        let cooldown = self.cfg.ttl * 2;
        self.handed.retain(|_, at| at.elapsed() < cooldown);
        for row in rows {
            if self.mine.contains_key(&row.shard) || self.handed.contains_key(&row.shard) {
                continue;
            }
            // A lease still written to this owner but not held: revoked here, taken again.
            let own = row.owner.as_deref() == Some(self.owner.as_str());
            let wanted = own || (row.free && (self.mine.len() < share || row.orphaned));
            if wanted {
                self.take(db, &row).await?;
            }
        }
        Ok(())
    }

    /// Takes one shard over: ends the previous holder's sessions, locks the row against
    /// batches in flight, raises the generation (every batch of the previous holder is fenced
    /// from here on), then closes the epochs it left open.
    async fn take(&mut self, db: &Client, row: &LeaseRow) -> Result<(), LeaseError> {
        let shard = row.shard;
        // A holder that was stopped or cut off inside a batch's transaction still holds the
        // row FOR KEY SHARE, and would for as long as it stays so: its sessions are ended, so
        // that transaction rolls back.
        if let Some(prev) = row.owner.as_deref().filter(|o| *o != self.owner) {
            let ended = db
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                    &[&session_name(prev)],
                )
                .await;
            if let Err(e) = ended {
                tracing::warn!(error = %e, previous = prev, "cannot end the previous holder's sessions");
            }
        }
        let ms = self.cfg.ttl.as_millis();
        db.batch_execute(&format!("SET lock_timeout = {ms}"))
            .await?;
        let taken = self.raise(db, shard, row.generation).await;
        db.batch_execute("RESET lock_timeout").await?;
        let generation = match taken {
            Ok(Some(g)) => g,
            Ok(None) => return Ok(()), // another collector was quicker
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                tracing::warn!(shard, "a batch in flight still holds the lease; next round");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let instruments = self.instruments_of(db, shard).await?;
        let warm = self.resume_warm(db, &instruments).await?;
        let cold: Vec<i32> = instruments
            .into_iter()
            .filter(|i| !warm.contains(i))
            .collect();
        let closed =
            crate::epochs::close_open(db, Some(&cold), crate::epochs::LEASE_TAKEN_OVER).await?;
        let warm = warm.len();
        tracing::info!(owner = %self.owner, shard, generation, closed_epochs = closed, warm, "lease taken");
        self.mine.insert(shard, generation);
        self.metrics.leases.takeovers.inc();
        Ok(())
    }

    /// The takeover itself, if the lease is still at generation `seen` and free (or this
    /// owner's): the new generation.
    async fn raise(
        &self,
        db: &Client,
        shard: u32,
        seen: i64,
    ) -> Result<Option<i64>, tokio_postgres::Error> {
        let ttl = self.cfg.ttl.as_secs_f64();
        let s = shard as i32;
        let taken = db
            .query_typed(
                "WITH locked AS (
                   SELECT shard FROM collector_leases
                   WHERE shard = $1 AND generation = $2 AND (expires_at < now() OR owner = $3)
                   FOR UPDATE)
                 UPDATE collector_leases l
                 SET owner = $3, generation = l.generation + 1, acquired_at = now(),
                     renewed_at = now(), expires_at = now() + make_interval(secs => $4)
                 FROM locked WHERE l.shard = locked.shard
                 RETURNING l.generation",
                &[
                    (&s, Type::INT4),
                    (&seen, Type::INT8),
                    (&self.owner, Type::TEXT),
                    (&ttl, Type::FLOAT8),
                ],
            )
            .await?;
        Ok(taken.first().map(|r| r.get::<_, i64>(0)))
    }

    /// With `--standby`: the resume points of the shard's books, read for their tasks to go
    /// on from (see `standby`); returns the warm ones, whose epochs are not to be closed and
    /// may be continued. A cold book's point has no open epoch: its rows of the feed and its
    /// next epoch still start past what is stored. Resume points an earlier takeover left
    /// unused are forgotten.
    async fn resume_warm(&self, db: &Client, instruments: &[i32]) -> Result<Vec<i32>, LeaseError> {
        let Some(standby) = &self.standby else {
            return Ok(Vec::new());
        };
        for i in instruments {
            standby.take_resume(*i);
        }
        let warm = standby.warm_among(instruments);
        let mut points = crate::standby::resume_points(db, instruments).await?;
        for (i, point) in &mut points {
            point.warm = warm.contains(i);
            if !point.warm {
                point.open = None;
            }
        }
        standby.put_resume(points);
        Ok(warm)
    }

    async fn instruments_of(&self, db: &Client, shard: u32) -> Result<Vec<i32>, LeaseError> {
        let rows = db
            .query("SELECT id, venue, symbol FROM instruments", &[])
            .await?;
        Ok(rows
            .iter()
            .filter(|r| {
                let venue: &str = r.get(1);
                let symbol: &str = r.get(2);
                Venue::from_name(venue)
                    .is_some_and(|v| shard_of(v, symbol, self.cfg.shards) == shard)
            })
            .map(|r| r.get(0))
            .collect())
    }

    /// Publishes what is held, unless a writer revoked everything since this round began: the
    /// next round takes the leases again first.
    fn publish(&self) {
        let seen = self.seen_revocations;
        let mine = &self.mine;
        let leaving: BTreeSet<u32> = self.leaving.keys().copied().collect();
        self.view.send_if_modified(|h| {
            let drained: BTreeSet<u32> = h.drained.intersection(&leaving).copied().collect();
            let same = h.shards == *mine && h.leaving == leaving && h.drained == drained;
            if h.revocations != seen || same {
                return false;
            }
            h.shards = mine.clone();
            h.leaving = leaving;
            h.drained = drained;
            true
        });
        self.metrics.leases.held.set(self.mine.len() as i64);
    }

    /// Lets go of every lease (a clean shutdown, after the writers flushed), so a standby
    /// takes over at once instead of after the TTL.
    pub async fn release(&mut self, db: &Client) -> Result<(), LeaseError> {
        let all: Vec<u32> = self.mine.keys().copied().collect();
        // Long expired: any collector may take them, beyond its share too.
        self.let_go(db, &all, -3600.0).await
    }

    /// Ends the leases of `shards` in the database, expired `age` seconds ago, with no owner:
    /// whoever takes one has no sessions of ours to end (we let go cleanly).
    async fn let_go(&mut self, db: &Client, shards: &[u32], age: f64) -> Result<(), LeaseError> {
        let (shards, generations): (Vec<i32>, Vec<i64>) = shards
            .iter()
            .filter_map(|s| self.mine.get(s).map(|&g| (*s as i32, g)))
            .unzip();
        db.execute_typed(
            "UPDATE collector_leases l
             SET owner = NULL, expires_at = now() + make_interval(secs => $4)
             FROM unnest($2::integer[], $3::bigint[]) AS m(shard, generation)
             WHERE l.shard = m.shard AND l.generation = m.generation AND l.owner = $1",
            &[
                (&self.owner, Type::TEXT),
                (&shards, Type::INT4_ARRAY),
                (&generations, Type::INT8_ARRAY),
                (&age, Type::FLOAT8),
            ],
        )
        .await?;
        self.mine.retain(|s, _| !shards.contains(&(*s as i32)));
        Ok(())
    }

    /// The leases each other live collector holds, whether it holds any or not. Live: one of
    /// its sessions (named by [`session_name`]) ran a query within the last two lease rounds,
    /// as its lease task does every round; a stopped or cut-off process's sessions fall
    /// silent, so it is not handed leases it cannot take. (Another role's `query_start` is
    /// hidden: a collector running as a different role counts as absent, and nothing moves.)
    async fn others(&self, db: &Client) -> Result<Vec<usize>, LeaseError> {
        let rounds = self.cfg.ttl.as_secs_f64() * 2.0 / 3.0;
        let rows = db
            .query_typed(
                "SELECT (SELECT count(*) FROM collector_leases l
                         WHERE l.owner = o.owner AND l.expires_at > now())
                 FROM (SELECT DISTINCT substr(application_name, length($1) + 1) AS owner
                       FROM pg_stat_activity
                       WHERE starts_with(application_name, $1)
                         AND query_start > now() - make_interval(secs => $3)) o
                 WHERE o.owner <> $2",
                &[
                    (&session_name(""), Type::TEXT),
                    (&self.owner, Type::TEXT),
                    (&rounds, Type::FLOAT8),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| usize::try_from(r.get::<_, i64>(0)).unwrap_or(0))
            .collect())
    }

    /// Starts handing leases over to live collectors below their share (one that just
    /// started, or came back): this one keeps ⌈shards/live⌉. The leases stay held while their
    /// symbols stop and what they queued is written ([`Held::leaving`]); then they are let go
    /// ([`Leases::let_go_drained`]). One handover at a time.
    fn rebalance(&mut self, others: &[usize]) {
        if !self.leaving.is_empty() {
            return;
        }
        let give = handover(self.mine.len(), self.cfg.shards, self.cfg.target(), others);
        let shards: Vec<u32> = self.mine.keys().rev().take(give).copied().collect();
        if shards.is_empty() {
            return;
        }
        tracing::info!(owner = %self.owner, ?shards, live = others.len() + 1, "handing leases over");
        let now = Instant::now();
        self.leaving.extend(shards.into_iter().map(|s| (s, now)));
    }

    /// Lets go of the leaving shards that drained, or that had two TTLs to and did not (what
    /// they still queue is then left out, as fenced): with a fresh expiry, so for a lease round
    /// only a collector below its share takes them; if none does, they are orphaned and any
    /// other collector may take them, this one only after two TTLs (`handed`). Their symbols
    /// start new epochs with their new collector, after the 'stopped' events this one wrote: a
    /// recorded gap of a few seconds each.
    async fn let_go_drained(&mut self, db: &Client) -> Result<(), LeaseError> {
        let drained = self.view.borrow().drained.clone();
        let deadline = self.cfg.ttl * 2;
        let ready: Vec<u32> = self
            .leaving
            .iter()
            .filter(|(s, since)| drained.contains(s) || since.elapsed() > deadline)
            .map(|(s, _)| *s)
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        // Out of the view first: nothing of theirs is written once the database lets go.
        let seen = self.seen_revocations;
        self.view.send_if_modified(|h| {
            if h.revocations != seen {
                return false;
            }
            for s in &ready {
                h.shards.remove(s);
                h.leaving.remove(s);
                h.drained.remove(s);
            }
            true
        });
        self.let_go(db, &ready, 0.0).await?;
        let now = Instant::now();
        for s in &ready {
            self.leaving.remove(s);
            self.handed.insert(*s, now);
        }
        tracing::info!(owner = %self.owner, shards = ?ready, "leases handed over");
        self.metrics.leases.handovers.inc_by(ready.len() as u64);
        Ok(())
    }

    /// Keeps the leases every third of the TTL until `stop`, then releases them.
    pub async fn run(mut self, url: String, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut db: Option<Client> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if db.as_ref().is_none_or(Client::is_closed) {
                db = connect(&url, &session_name(&self.owner)).await;
            }
            let Some(c) = db.as_ref() else { continue };
            if let Err(e) = self.tick(c).await {
                // Unreachable: keep collecting (batches spool and are fenced on replay if
                // the lease was taken over meanwhile).
                tracing::warn!(error = %e, "lease round failed");
                db = None;
            }
        }
        if let Some(c) = connect(&url, &session_name(&self.owner)).await {
            if let Err(e) = self.release(&c).await {
                tracing::warn!(error = %e, "releasing the leases failed; they expire on their own");
            }
        }
    }
}

/// The lease task's session, named as the writers' are: while it is connected, other
/// collectors count this one as live ([`Leases::rebalance`]), holding leases or not.
/// How many of `mine` leases to hand over: what this collector holds beyond its share
/// ⌈shards/live⌉ (`others`: what each other live collector holds), no more than the others
/// have room for below their share and their `target` (every collector runs the same
/// `--instances`), so a lease is never let go that nobody will take.
fn handover(mine: usize, shards: u32, target: usize, others: &[usize]) -> usize {
    let fair = share(shards, others.len() + 1);
    let room: usize = others
        .iter()
        .map(|&n| fair.min(target).saturating_sub(n))
        .sum();
    mine.saturating_sub(fair).min(room)
}

/// ⌈shards/live⌉: what each of `live` collectors holds when they share evenly.
fn share(shards: u32, live: usize) -> usize {
    (shards as usize).div_ceil(live.max(1))
}

async fn connect(url: &str, session: &str) -> Option<Client> {
    let named = async {
        let (c, _conn) = pgconn::connect(url).await.map_err(|e| e.to_string())?;
        c.execute(
            "SELECT set_config('application_name', $1, false)",
            &[&session],
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok::<_, String>(c)
    };
    match named.await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "lease round: database unreachable");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash is part of the on-disk contract (collectors of different builds share the
    /// leases): its values are pinned.
    #[test]
    fn shards_are_stable_and_spread() {
        // FNV-1a of "spot/BTCUSDT" etc., computed independently.
        assert_eq!(shard_of(Venue::Spot, "BTCUSDT", 4), 1);
        assert_eq!(shard_of(Venue::Usdm, "ETHUSDT", 16), 6);
        assert_eq!(shard_of(Venue::Spot, "SYM1USDT", 1000), 64);
        assert_eq!(
            shard_of(Venue::Spot, "btcusdt", 4),
            1,
            "case does not matter"
        );
        let mut counts = [0usize; 4];
        for i in 0..400 {
            counts[shard_of(Venue::Usdm, &format!("SYM{i}USDT"), 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (70..=130).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(shard_of(Venue::Spot, "BTCUSDT", 1), 0);
    }

    #[test]
    fn a_fence_is_current_only_at_its_generation() {
        let mut h = Held::default();
        h.shards.insert(2, 7);
        assert!(h.holds(Fence {
            shard: 2,
            generation: 7
        }));
        assert!(!h.holds(Fence {
            shard: 2,
            generation: 6
        }));
        assert!(!h.holds(Fence {
            shard: 1,
            generation: 7
        }));
    }

    #[test]
    fn a_revocation_drops_only_the_leases_still_held_and_is_counted() {
        let view: HeldView = Arc::new(watch::Sender::new(Held::default()));
        view.send_modify(|h| {
            h.shards.insert(0, 1);
            h.shards.insert(1, 4);
        });
        let f = |shard, generation| Fence { shard, generation };
        assert!(!revoke(&view, &[f(0, 0)]), "a generation already gone");
        assert_eq!(view.borrow().revocations, 0);
        assert!(revoke(&view, &[f(0, 1), f(2, 1)]));
        let h = view.borrow();
        assert_eq!(h.shards.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(h.revocations, 1);
    }

    #[test]
    fn a_collector_hands_over_its_excess_only_to_collectors_with_room() {
        // 16 shards, target 8 (two instances): alone it keeps all; with a newcomer, 8 go.
        assert_eq!(handover(16, 16, 8, &[]), 0);
        assert_eq!(handover(16, 16, 8, &[0]), 8);
        // Balanced already, or within rounding: nothing moves (no ping-pong).
        assert_eq!(handover(8, 16, 8, &[8]), 0);
        assert_eq!(handover(6, 16, 6, &[5, 5]), 0);
        // Three live, one of them new: the excess over ⌈16/3⌉ = 6, bounded by the room.
        assert_eq!(handover(10, 16, 6, &[6, 0]), 4);
        assert_eq!(handover(10, 16, 6, &[6, 4]), 2);
        // A newcomer whose target is smaller than the share takes only up to its target.
        assert_eq!(handover(16, 16, 4, &[0]), 4);
    }
}
