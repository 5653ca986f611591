//! The write path: one task per table commits rows by binary COPY, each batch together with
//! its `ingest_batches` row (and, for live tables, its NOTIFY announcements). Group commit: a
//! batch is whatever queued while the previous one was committing (up to `max_rows`), so
//! batches grow with load; `max_delay` (`--batch-delay-ms`, 2 ms by default) lingers for more
//! rows after a batch's first, which bounds a busy table's commits under a steady stream.
//! While the database is unreachable, batches go to the table's [`Spool`] and are replayed in
//! order once it is back; a replayed batch already in the ledger writes nothing.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::copy::CopyBuf;
use crate::hold::Hold;
use crate::lease::{Fence, Held, HeldView};
use crate::metrics::Metrics;
use crate::notify::Notes;
use crate::row::{Row, Table};
use crate::spool::{Batch, Spool};

/// Batching and spool settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub database_url: String,
    /// A batch holds at most this many rows.
    pub max_rows: usize,
    /// How long a batch waits for more rows after its first (`--batch-delay-ms`, 2 ms by
    /// default). Zero: pure group commit, a batch is what queued while the previous one
    /// committed.
    pub max_delay: Duration,
    /// Rows queued per table before producers wait (backpressure).
    pub queue: usize,
    pub spool_dir: PathBuf,
    /// Identifies this process's batches in the ledger.
    pub instance: String,
    /// The leases held (`--shards`): a row of a shard no longer held is not written. `None`:
    /// no leases, nothing is fenced.
    pub held: Option<HeldView>,
    /// The sessions' `application_name` (`lease::session_name`), by which a collector taking
    /// a lease over ends them.
    pub session_name: Option<String>,
}

/// A row and the lease it was produced under.
#[derive(Debug)]
enum Item {
    Row {
        row: Row,
        fence: Option<Fence>,
    },
    /// Answered once every row queued before it is committed, spooled or left out as fenced.
    Barrier(oneshot::Sender<()>),
}

/// Why a batch did not commit.
#[derive(Debug, thiserror::Error)]
enum CommitError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// The lease of these shards moved on: the batch must never be written.
    #[error("fenced: the lease of shard(s) {0:?} was taken over")]
    Fenced(Vec<u32>),
}

/// Senders to the table writers; dropping every clone flushes and stops them.
#[derive(Debug, Clone)]
pub struct Writer {
    txs: Arc<Vec<(Table, mpsc::Sender<Item>)>>,
    fence: Option<Fence>,
    /// A standby symbol's: its rows are kept in memory until it goes live.
    hold: Option<Arc<Hold>>,
}

impl Writer {
    /// Queues a row; waits when the table's queue is full (backpressure). A standby writer
    /// keeps it instead.
    pub async fn send(&self, row: Row) {
        match &self.hold {
            None => self.queue(row, self.fence).await,
            Some(hold) => {
                let mut st = hold.state.lock().await;
                if st.kept.is_some() {
                    hold.keep(&mut st, row);
                } else {
                    // Queued under the lock: after every row kept before going live.
                    self.queue(row, st.fence).await;
                }
            }
        }
    }

    async fn queue(&self, row: Row, fence: Option<Fence>) {
        let t = row.table();
        if let Some((_, tx)) = self.txs.iter().find(|(tt, _)| *tt == t) {
            // A closed writer means shutdown is under way; the row is dropped with it.
            let _ = tx.send(Item::Row { row, fence }).await;
        }
    }

    /// A standby symbol's writer: rows kept for `keep`, none written until
    /// [`Writer::go_live`].
    pub fn standby(&self, keep: Duration) -> Writer {
        Writer {
            txs: self.txs.clone(),
            fence: None,
            hold: Some(Arc::new(Hold::new(keep))),
        }
    }

    pub fn is_standby(&self) -> bool {
        self.hold.is_some()
    }

    /// The highest update id of a depth row a standby writer let go for age (0: none).
    pub async fn dropped_depth(&self) -> u64 {
        match &self.hold {
            Some(hold) => hold.state.lock().await.dropped_depth,
            None => 0,
        }
    }

    /// A standby writer goes live under `fence`: the kept rows that `keep` accepts (and may
    /// change) are queued first, in order, then every row sent from now on. Returns how many
    /// kept rows were queued and how many let go.
    pub async fn go_live(
        &self,
        fence: Fence,
        mut keep: impl FnMut(&mut Row) -> bool,
    ) -> (usize, usize) {
        let Some(hold) = &self.hold else {
            return (0, 0);
        };
        let mut st = hold.state.lock().await;
        let kept = st.kept.take().unwrap_or_default();
        let (mut queued, mut dropped) = (0, 0);
        for (_, mut row) in kept {
            if keep(&mut row) {
                self.queue(row, Some(fence)).await;
                queued += 1;
            } else {
                dropped += 1;
            }
        }
        st.fence = Some(fence);
        (queued, dropped)
    }

    /// Waits until every row queued before this call is committed (or spooled, or left out
    /// as fenced): a barrier through each table's queue, behind what it holds.
    pub async fn flush(&self) {
        let mut acks = Vec::new();
        for (_, tx) in self.txs.iter() {
            let (barrier, ack) = oneshot::channel();
            if tx.send(Item::Barrier(barrier)).await.is_ok() {
                acks.push(ack);
            }
        }
        for ack in acks {
            // A writer that stopped meanwhile finished with its queue.
            let _ = ack.await;
        }
    }

    /// The same writer, marking every row it sends with `fence`: the lease of the shard its
    /// producer collects under.
    pub fn fenced(&self, fence: Option<Fence>) -> Writer {
        Writer {
            txs: self.txs.clone(),
            fence,
            hold: None,
        }
    }
}

/// Starts one writer task per table; the join handles finish once every `Writer` clone is
/// dropped and everything is flushed (or spooled).
pub fn start(
    cfg: WriterConfig,
    metrics: Arc<Metrics>,
) -> (Writer, Vec<tokio::task::JoinHandle<()>>) {
    let mut txs = Vec::new();
    let mut handles = Vec::new();
    for table in Table::ALL {
        let (tx, rx) = mpsc::channel(cfg.queue);
        txs.push((table, tx));
        let task = TableWriter::new(table, cfg.clone(), metrics.clone());
        handles.push(tokio::spawn(task.run(rx)));
    }
    let writer = Writer {
        txs: Arc::new(txs),
        fence: None,
        hold: None,
    };
    (writer, handles)
}

/// Replays every table's spool left by a previous run, before anything new is written.
/// Returns the batches still spooled (0 unless the database went away meanwhile): the
/// caller must not judge what is stored (e.g. close open epochs) until that is 0.
pub async fn replay_spool(cfg: &WriterConfig, metrics: &Arc<Metrics>) -> usize {
    let mut left = 0;
    for table in Table::ALL {
        let mut w = TableWriter::new(table, cfg.clone(), metrics.clone());
        if !w.spool.is_empty() {
            tracing::info!(
                table = table.name(),
                batches = w.spool.len(),
                "replaying the spool of a previous run"
            );
            w.drain_spool().await;
        }
        left += w.spool.len();
    }
    left
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Rows read off a table's queue into one batch.
struct Collected {
    batch: Batch,
    /// LISTEN/NOTIFY announcements (live tables only; a replayed batch is history).
    notes: Option<Notes>,
    /// The queue closed: this is the last batch.
    closed: bool,
    /// A barrier right behind the batch's rows, answered once the batch is written.
    barrier: Option<oneshot::Sender<()>>,
}

struct TableWriter {
    table: Table,
    cfg: WriterConfig,
    metrics: Arc<Metrics>,
    /// The connection, and the table's COPY prepared once on it.
    client: Option<(Client, Statement)>,
    spool: Spool,
    last_connect_attempt: Option<Instant>,
    /// Leases a batch of this table was fenced under: no later batch carrying one is tried, so
    /// nothing commits after rows that were dropped.
    dead: HashSet<Fence>,
}

impl TableWriter {
    fn new(table: Table, cfg: WriterConfig, metrics: Arc<Metrics>) -> TableWriter {
        let spool = Spool::open(cfg.spool_dir.join(table.name()));
        TableWriter {
            table,
            cfg,
            metrics,
            client: None,
            spool,
            last_connect_attempt: None,
            dead: HashSet::new(),
        }
    }

    /// A spooled batch in the table's current columns: one written before the table gained a
    /// trailing nullable column gets NULL there.
    fn current(&self, mut b: Batch) -> Option<Batch> {
        let fields = i16::try_from(self.table.fields()).ok()?;
        b.bytes = crate::copy::pad_rows(&b.bytes, fields)?;
        Some(b)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Item>) {
        loop {
            let first = match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(_) => {
                    // Idle: a good moment to replay what the spool holds (a previous run's
                    // batches too).
                    if !self.spool.is_empty() {
                        self.drain_spool().await;
                    }
                    continue;
                }
            };
            let c = self.collect(first, &mut rx).await;
            if c.batch.rows > 0 {
                self.write(c.batch, c.notes).await;
            }
            if let Some(barrier) = c.barrier {
                let _ = barrier.send(());
            }
            if c.closed {
                break;
            }
        }
        // Final attempt at an outstanding spool before exiting.
        self.drain_spool().await;
    }

    /// Encodes `first` and what follows it, up to the row cap: what is queued already (group
    /// commit), or what comes within `max_delay` of the first row.
    async fn collect(&self, first: Item, rx: &mut mpsc::Receiver<Item>) -> Collected {
        let deadline = tokio::time::Instant::now() + self.cfg.max_delay;
        let linger = !self.cfg.max_delay.is_zero();
        let mut held: Option<Held> = self.cfg.held.as_ref().map(|v| v.borrow().clone());
        let mut buf = CopyBuf::new();
        let mut notes = crate::notify::channel(self.table).map(|_| Notes::default());
        let (mut lo, mut hi) = (u64::MAX, 0);
        let mut fences: Vec<Fence> = Vec::new();
        let mut lost = 0;
        let mut next = Some(first);
        let mut closed = false;
        let mut barrier = None;
        while let Some(item) = next.take() {
            let (row, fence) = match item {
                Item::Row { row, fence } => (row, fence),
                Item::Barrier(b) => {
                    barrier = Some(b);
                    break;
                }
            };
            match fence {
                Some(f) if !self.holds(&mut held, f) => lost += 1,
                _ => {
                    if let Some(f) = fence.filter(|f| !fences.contains(f)) {
                        fences.push(f);
                    }
                    lo = lo.min(row.time());
                    hi = hi.max(row.time());
                    row.encode(&mut buf);
                    if let Some(n) = notes.as_mut() {
                        n.add(row);
                    }
                }
            }
            if buf.rows() >= self.cfg.max_rows {
                break;
            }
            (next, closed) = if linger {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(row)) => (Some(row), false),
                    Ok(None) => (None, true),
                    Err(_) => (None, false),
                }
            } else {
                match rx.try_recv() {
                    Ok(row) => (Some(row), false),
                    Err(mpsc::error::TryRecvError::Empty) => (None, false),
                    Err(mpsc::error::TryRecvError::Disconnected) => (None, true),
                }
            };
        }
        self.metrics
            .queue_depth
            .with_label_values(&[self.table.name()])
            .set((self.cfg.queue - rx.capacity()) as i64);
        if lost > 0 {
            self.metrics
                .leases
                .fenced_rows
                .with_label_values(&[self.table.name()])
                .inc_by(lost);
        }
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let batch = Batch {
            id: format!("{}-{}-{seq}", self.cfg.instance, self.table.name()),
            rows: buf.rows(),
            first_ms: lo.min(hi),
            last_ms: hi,
            fences,
            bytes: buf.finish(),
        };
        Collected {
            batch,
            notes,
            closed,
            barrier,
        }
    }

    /// Whether `fence` is held: by `held` (the view as this batch last read it), else by the
    /// view as it stands now, which `held` then becomes. A lease may be taken while a batch
    /// is collected, and the symbols it promotes send their rows at once: judged by the view
    /// at the batch's start, they would be left out as if the lease were lost, silently.
    fn holds(&self, held: &mut Option<Held>, fence: Fence) -> bool {
        let Some(view) = &self.cfg.held else {
            return true;
        };
        if held.as_ref().is_some_and(|h| h.holds(fence)) {
            return true;
        }
        let now = view.borrow();
        if !now.holds(fence) {
            return false;
        }
        *held = Some(now.clone());
        true
    }

    async fn connect(&mut self) -> bool {
        if self.client.as_ref().is_some_and(|(c, _)| !c.is_closed()) {
            return true;
        }
        // Do not hammer a database that is down: one attempt per second per table.
        if self
            .last_connect_attempt
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return false;
        }
        self.last_connect_attempt = Some(Instant::now());
        let name = self.cfg.session_name.as_deref();
        match prepared(&self.cfg.database_url, self.table, name).await {
            Ok(connected) => {
                self.client = Some(connected);
                true
            }
            Err(e) => {
                tracing::warn!(table = self.table.name(), error = %e, "database unreachable; spooling");
                false
            }
        }
    }

    async fn write(&mut self, batch: Batch, notes: Option<Notes>) {
        if self.is_dead(&batch) {
            self.fenced(&batch, None);
            return;
        }
        if !self.spool.is_empty() {
            // Keep order: everything after a spooled batch goes through the spool too.
            self.spool_batch(&batch);
            self.drain_spool().await;
            return;
        }
        if self.connect().await {
            match self.commit(&batch, notes.as_ref(), false).await {
                Ok(()) => return,
                Err(CommitError::Fenced(shards)) => return self.fenced(&batch, Some(&shards)),
                Err(e) => {
                    tracing::warn!(table = self.table.name(), error = %e, "batch commit failed; spooling");
                    self.client = None;
                }
            }
        }
        self.spool_batch(&batch);
    }

    fn is_dead(&self, b: &Batch) -> bool {
        b.fences.iter().any(|f| self.dead.contains(f))
    }

    /// A batch that must never be written: its leases are dead for this table from now on, and
    /// (when the database refused it, `stale` = the shards that moved on) the leases of it this
    /// process still holds are taken again, so that no later batch continues past the rows
    /// dropped here.
    fn fenced(&mut self, b: &Batch, stale: Option<&[u32]>) {
        let name = self.table.name();
        self.dead.extend(b.fences.iter().copied());
        self.metrics
            .leases
            .fenced_batches
            .with_label_values(&[name])
            .inc();
        self.metrics
            .leases
            .fenced_rows
            .with_label_values(&[name])
            .inc_by(b.rows as u64);
        if let Some(stale) = stale {
            tracing::warn!(
                table = name,
                rows = b.rows,
                ?stale,
                "batch fenced: a lease was taken over"
            );
            // Rows of leases still held here were dropped with it: those leases are taken
            // again. Leases already known lost (a spool replayed after a takeover) change
            // nothing.
            if let Some(view) = &self.cfg.held {
                crate::lease::revoke(view, &b.fences);
            }
        }
    }

    /// Commits a batch with its ledger row. A replayed batch (`spooled`) announces nothing.
    async fn commit(
        &mut self,
        b: &Batch,
        notes: Option<&Notes>,
        spooled: bool,
    ) -> Result<(), CommitError> {
        let started = Instant::now();
        let table = self.table;
        let Some((client, copy)) = self.client.as_mut() else {
            return Ok(());
        };
        let fresh = if spooled {
            commit_spooled(client, copy, table, b).await?
        } else {
            commit_live(client, copy, table, b, notes).await?;
            true
        };
        self.observe(b, fresh, started);
        Ok(())
    }

    fn observe(&self, b: &Batch, fresh: bool, started: Instant) {
        let name = self.table.name();
        self.metrics
            .copy_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        if !fresh {
            return;
        }
        self.metrics
            .rows_written
            .with_label_values(&[name])
            .inc_by(b.rows as u64);
        self.metrics
            .batch_rows
            .with_label_values(&[name])
            .observe(b.rows as f64);
        // The oldest row of the batch waited longest: that is the latency to report.
        self.metrics
            .event_to_commit
            .observe(crate::now_ms().saturating_sub(b.first_ms) as f64 / 1000.0);
    }

    fn spool_batch(&mut self, b: &Batch) {
        let name = self.table.name();
        match self.spool.push(b, crate::now_ms()) {
            Ok(bytes) => {
                self.metrics
                    .spool_bytes
                    .with_label_values(&[name])
                    .add(bytes as i64);
                self.metrics
                    .spooled_batches
                    .with_label_values(&[name])
                    .inc();
            }
            Err(e) => {
                tracing::error!(table = name, error = %e, rows = b.rows, "cannot spool a batch: rows lost")
            }
        }
    }

    /// Replays spooled batches in order while the database takes them.
    async fn drain_spool(&mut self) {
        // The time range of the rows replayed: (earliest, latest) event time.
        let mut replayed: Option<(u64, u64)> = None;
        for path in self.spool.files() {
            if !self.connect().await {
                break;
            }
            let Some(batch) = Spool::read(&path).and_then(|b| self.current(b)) else {
                self.spool.set_aside(&path);
                continue;
            };
            let committed = if self.is_dead(&batch) {
                self.fenced(&batch, None);
                false
            } else {
                match self.commit(&batch, None, true).await {
                    Ok(()) => true,
                    Err(CommitError::Fenced(shards)) => {
                        self.fenced(&batch, Some(&shards));
                        false
                    }
                    Err(e) => {
                        tracing::warn!(table = self.table.name(), error = %e, "spool replay paused");
                        self.client = None;
                        break;
                    }
                }
            };
            let size = self.spool.remove(&path);
            self.metrics
                .spool_bytes
                .with_label_values(&[self.table.name()])
                .sub(size as i64);
            if !committed {
                continue;
            }
            replayed = Some(replayed.map_or((batch.first_ms, batch.last_ms), |(a, b)| {
                (a.min(batch.first_ms), b.max(batch.last_ms))
            }));
        }
        if let (Some((since, until)), Some((client, _))) = (replayed, self.client.as_ref()) {
            crate::aggregates::refresh_after_replay(client, self.table, since, until).await;
        }
    }
}

/// A connection with `table`'s COPY prepared on it, named `session`.
async fn prepared(
    url: &str,
    table: Table,
    session: Option<&str>,
) -> Result<(Client, Statement), String> {
    let (client, _conn) = pgconn::connect(url).await.map_err(|e| e.to_string())?;
    if let Some(name) = session {
        client
            .execute("SELECT set_config('application_name', $1, false)", &[&name])
            .await
            .map_err(|e| e.to_string())?;
    }
    let copy = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        table.name(),
        table.columns()
    );
    let statement = client.prepare(&copy).await.map_err(|e| e.to_string())?;
    Ok((client, statement))
}

/// A live batch (its id is new by construction) in two round trips: `BEGIN` goes with the
/// COPY's start, then the rows go with the ledger row, the announcements and `COMMIT` (a batch
/// under leases waits for the fence check's answer before it commits: three). Every round trip
/// is a wakeup of the connection and of this task: at Binance's rates each table commits every
/// few tens of milliseconds, so at ×1 they were a large share of ingest's CPU (bench/REPORT.md
/// §10).
///
/// Pipelined statements run in order on the one session; if one fails, the transaction is
/// aborted and the `COMMIT` behind it rolls back, and the error is returned, so the batch is
/// spooled and written again (its ledger id makes that idempotent). On any error the caller
/// drops the connection, which ends whatever transaction was open.
async fn commit_live(
    client: &Client,
    copy: &Statement,
    table: Table,
    b: &Batch,
    notes: Option<&Notes>,
) -> Result<(), CommitError> {
    let (begun, sink) = futures_util::join!(client.batch_execute("BEGIN"), client.copy_in(copy));
    begun?;
    let rows = copy_rows(sink?, b);
    if b.fences.is_empty() {
        let (copied, finished, committed) = futures_util::join!(
            rows,
            finish_batch(client, table, b, notes, false),
            client.batch_execute("COMMIT")
        );
        copied?;
        finished?;
        return Ok(committed?);
    }
    let (copied, stale) = futures_util::join!(rows, finish_batch(client, table, b, notes, false));
    copied?;
    let stale = stale?;
    if !stale.is_empty() {
        // Nothing of the batch is stored.
        client.batch_execute("ROLLBACK").await?;
        return Err(CommitError::Fenced(stale));
    }
    Ok(client.batch_execute("COMMIT").await?)
}

/// A batch replayed from the spool: it may have committed before the database went away, so
/// its ledger row goes first, and the rows only if it was not there. Returns whether they were
/// written. Rare, so plainly one statement after another.
async fn commit_spooled(
    client: &mut Client,
    copy: &Statement,
    table: Table,
    b: &Batch,
) -> Result<bool, CommitError> {
    let tx = client.transaction().await?;
    let sql =
        "INSERT INTO ingest_batches (batch_id, relation, rows, first_time, last_time, spooled)
               VALUES ($1, $2, $3, to_timestamp($4 / 1000), to_timestamp($5 / 1000), true)
               ON CONFLICT (batch_id) DO NOTHING";
    let fresh = ledger(tx.client(), sql, table, b).await? == 1;
    if fresh {
        copy_rows(tx.copy_in(copy).await?, b).await?;
        let stale = finish_batch(tx.client(), table, b, None, true).await?;
        if !stale.is_empty() {
            // Dropping the transaction rolls it back: nothing of the batch is stored.
            return Err(CommitError::Fenced(stale));
        }
    }
    tx.commit().await?;
    Ok(fresh)
}

/// The batch's rows into a started COPY (`copy_in` of the table's prepared statement).
async fn copy_rows(
    sink: tokio_postgres::CopyInSink<bytes::Bytes>,
    b: &Batch,
) -> Result<u64, tokio_postgres::Error> {
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::copy_from_slice(&b.bytes)).await?;
    sink.finish().await
}

/// Runs a ledger statement whose parameters are the batch's id, relation, rows, and first and
/// last event time in Unix ms; typed, so it goes without a prepare round trip.
async fn ledger(
    tx: &Client,
    sql: &str,
    table: Table,
    b: &Batch,
) -> Result<u64, tokio_postgres::Error> {
    let (relation, rows) = (table.name(), b.rows as i32);
    let (first, last) = (b.first_ms as f64, b.last_ms as f64);
    tx.execute_typed(
        sql,
        &[
            (&b.id, Type::TEXT),
            (&relation, Type::TEXT),
            (&rows, Type::INT4),
            (&first, Type::FLOAT8),
            (&last, Type::FLOAT8),
        ],
    )
    .await
}

/// After the COPY, in one round trip (the statements are pipelined): the announcements, the
/// ledger's commit time (a live batch's whole ledger row), and the fence check. The commit time
/// is taken after the COPY, not at the transaction's start (`now()`), so event→commit latency
/// can be read back exactly per row: each row shares its batch's `xmin` (bench/ does that).
/// Returns the shards whose lease moved on (the batch must then be rolled back).
async fn finish_batch(
    tx: &Client,
    table: Table,
    b: &Batch,
    notes: Option<&Notes>,
    spooled: bool,
) -> Result<Vec<u32>, tokio_postgres::Error> {
    let announce = async {
        let (Some(notes), Some(channel)) = (notes, crate::notify::channel(table)) else {
            return Ok(0);
        };
        let (channels, payloads) = notes.payloads(channel);
        if payloads.is_empty() {
            return Ok(0);
        }
        tx.execute_typed(
            "SELECT pg_notify(c, p) FROM unnest($1, $2) AS n(c, p)",
            &[(&channels, Type::TEXT_ARRAY), (&payloads, Type::TEXT_ARRAY)],
        )
        .await
    };
    let ledger = async {
        if spooled {
            tx.execute_typed(
                "UPDATE ingest_batches SET committed_at = clock_timestamp() WHERE batch_id = $1",
                &[(&b.id, Type::TEXT)],
            )
            .await
        } else {
            let sql = "INSERT INTO ingest_batches (batch_id, relation, rows, first_time, last_time, spooled, committed_at)
                       VALUES ($1, $2, $3, to_timestamp($4 / 1000), to_timestamp($5 / 1000), false, clock_timestamp())";
            ledger(tx, sql, table, b).await
        }
    };
    let (announced, ledgered, stale) = futures_util::join!(announce, ledger, stale_fences(tx, b));
    announced?;
    ledgered?;
    stale
}

/// The batch's shards whose lease is no longer at the batch's generation. The rows are locked
/// FOR KEY SHARE until the commit: a takeover (FOR UPDATE) waits for this batch, and once it
/// has committed, this check sees its new generation.
async fn stale_fences(tx: &Client, b: &Batch) -> Result<Vec<u32>, tokio_postgres::Error> {
    if b.fences.is_empty() {
        return Ok(Vec::new());
    }
    let shards: Vec<i32> = b.fences.iter().map(|f| f.shard as i32).collect();
    let rows = tx
        .query_typed(
            "SELECT shard, generation FROM collector_leases WHERE shard = ANY($1) FOR KEY SHARE",
            &[(&shards, Type::INT4_ARRAY)],
        )
        .await?;
    let current: Vec<(u32, i64)> = rows
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, i64>(1)))
        .collect();
    Ok(b.fences
        .iter()
        .filter(|f| !current.contains(&(f.shard, f.generation)))
        .map(|f| f.shard)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{SyncKind, SyncRow};

    fn writer(max_rows: usize, max_delay: Duration, dir: &std::path::Path) -> TableWriter {
        let cfg = WriterConfig {
            database_url: "postgres://nowhere.invalid/db".into(),
            max_rows,
            max_delay,
            queue: 16,
            spool_dir: dir.to_path_buf(),
            instance: "test".into(),
            held: None,
            session_name: None,
        };
        TableWriter::new(Table::SyncEvents, cfg, Metrics::new())
    }

    fn sync_row(time: u64) -> Row {
        Row::Sync(SyncRow {
            time,
            instrument_id: 1,
            epoch: None,
            kind: SyncKind::Resync,
            first_update_id: None,
            last_update_id: None,
            detail: None,
        })
    }

    fn fenced_row(time: u64, fence: Option<Fence>) -> Item {
        Item::Row {
            row: sync_row(time),
            fence,
        }
    }

    fn row(time: u64) -> Item {
        fenced_row(time, None)
    }

    /// A row produced under a lease this process no longer holds is left out of its batch, and
    /// the batch carries the leases of the rows it kept.
    #[tokio::test]
    async fn rows_of_a_lost_lease_are_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = writer(100, Duration::ZERO, dir.path());
        let view: HeldView = Arc::new(tokio::sync::watch::Sender::new(Held::default()));
        view.send_modify(|h| {
            h.shards.insert(0, 2);
        });
        w.cfg.held = Some(view);
        let (current, old) = (
            Fence {
                shard: 0,
                generation: 2,
            },
            Fence {
                shard: 0,
                generation: 1,
            },
        );
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(fenced_row(20, Some(old))).await.expect("queued");
        tx.send(fenced_row(30, Some(current)))
            .await
            .expect("queued");
        let c = w.collect(fenced_row(10, Some(old)), &mut rx).await;
        assert_eq!(
            (c.batch.rows, c.batch.first_ms, c.batch.last_ms),
            (1, 30, 30)
        );
        assert_eq!(c.batch.fences, vec![current]);
        let lost = w
            .metrics
            .leases
            .fenced_rows
            .with_label_values(&["sync_events"]);
        assert_eq!(lost.get(), 2);
    }

    /// A lease taken while a batch is being collected: the rows its symbols send at once
    /// (a promoted standby's kept rows) are in the batch, not left out as if the lease were
    /// lost.
    #[tokio::test(start_paused = true)]
    async fn rows_of_a_lease_taken_during_the_batch_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = writer(100, Duration::from_millis(50), dir.path());
        let view: HeldView = Arc::new(tokio::sync::watch::Sender::new(Held::default()));
        w.cfg.held = Some(view.clone());
        let taken = Fence {
            shard: 3,
            generation: 2,
        };
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            view.send_modify(|h| {
                h.shards.insert(taken.shard, taken.generation);
            });
            tx.send(fenced_row(20, Some(taken))).await.expect("queued");
        });
        let c = w.collect(row(10), &mut rx).await;
        assert_eq!((c.batch.rows, c.batch.last_ms), (2, 20));
        assert_eq!(c.batch.fences, vec![taken]);
    }

    /// A barrier ends the batch it follows and comes back with it; what was queued after it
    /// stays for the next batch.
    #[tokio::test]
    async fn a_barrier_ends_its_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = writer(100, Duration::ZERO, dir.path());
        let (tx, mut rx) = mpsc::channel(16);
        let (barrier, _ack) = oneshot::channel();
        tx.send(row(20)).await.expect("queued");
        tx.send(Item::Barrier(barrier)).await.expect("queued");
        tx.send(row(30)).await.expect("queued");
        let c = w.collect(row(10), &mut rx).await;
        assert_eq!((c.batch.rows, c.batch.last_ms), (2, 20));
        assert!(c.barrier.is_some());
        let next = w
            .collect(rx.recv().await.expect("the row after"), &mut rx)
            .await;
        assert_eq!((next.batch.rows, next.batch.first_ms), (1, 30));
        assert!(next.barrier.is_none());
    }

    /// `flush` returns once what was queued before it is written: here, with no database,
    /// spooled.
    #[tokio::test]
    async fn flush_waits_for_what_was_queued_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = writer(100, Duration::ZERO, dir.path()).cfg;
        let (w, handles) = start(cfg, Metrics::new());
        for t in 1..=3 {
            w.send(sync_row(t)).await;
        }
        w.flush().await;
        let spool = Spool::open(dir.path().join(Table::SyncEvents.name()));
        assert!(!spool.is_empty(), "the rows before the barrier are spooled");
        drop(w);
        for h in handles {
            h.await.expect("writer ends");
        }
    }

    /// Group commit: a batch is what is queued (up to the cap), taken without any wait.
    #[tokio::test(start_paused = true)]
    async fn group_commit_takes_what_is_queued_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = writer(2, Duration::ZERO, dir.path());
        let (tx, mut rx) = mpsc::channel(16);
        for t in [10, 30, 20] {
            tx.send(row(t)).await.expect("queued");
        }
        let start = tokio::time::Instant::now();
        let first = rx.recv().await.expect("a row");
        let c = w.collect(first, &mut rx).await;
        assert_eq!(
            (c.batch.rows, c.batch.first_ms, c.batch.last_ms),
            (2, 10, 30)
        );
        let first = rx.recv().await.expect("a row");
        let c = w.collect(first, &mut rx).await;
        assert_eq!(
            (c.batch.rows, c.closed),
            (1, false),
            "the sender is still open"
        );
        assert_eq!(tokio::time::Instant::now(), start, "no timer was waited on");
        drop(tx);
        let c = w.collect(row(40), &mut rx).await;
        assert!(c.closed, "a closed queue ends the writer after this batch");
    }

    /// With `max_delay`, a batch lingers for rows that come later, up to the delay.
    #[tokio::test(start_paused = true)]
    async fn a_batch_delay_lingers_for_later_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = writer(100, Duration::from_millis(50), dir.path());
        let (tx, mut rx) = mpsc::channel(16);
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(row(2)).await.expect("queued");
            // Kept open past the delay: the batch ends on time, not on a closed queue.
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let c = w.collect(row(1), &mut rx).await;
        assert_eq!((c.batch.rows, c.closed), (2, false));
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }
}
