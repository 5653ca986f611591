//! The write path: one task per table batches rows, flushes on size or a short
//! deadline with binary COPY, and commits each batch together with its `ingest_batches` row.
//! While the database is unreachable, batches go to an on-disk spool (the exact COPY bytes) and
//! are replayed in order once it is back; a replayed batch already in the ledger writes nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use book::features::Features;
use book::{Levels, Side};
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::copy::CopyBuf;
use crate::metrics::Metrics;

/// The tables ingest writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    DepthUpdates,
    BookCheckpoints,
    BookTop,
    BookTicker,
    Trades,
    MarkPrices,
    SyncEvents,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::DepthUpdates,
        Table::BookCheckpoints,
        Table::BookTop,
        Table::BookTicker,
        Table::Trades,
        Table::MarkPrices,
        Table::SyncEvents,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::DepthUpdates => "depth_updates",
            Table::BookCheckpoints => "book_checkpoints",
            Table::BookTop => "book_top",
            Table::BookTicker => "book_ticker",
            Table::Trades => "trades",
            Table::MarkPrices => "mark_prices",
            Table::SyncEvents => "sync_events",
        }
    }

    fn columns(self) -> &'static str {
        match self {
            Table::DepthUpdates => "time, instrument_id, first_update_id, update_id, prev_update_id, side, price, qty, received_at",
            Table::BookCheckpoints => "time, instrument_id, epoch, update_id, kind, bid_prices, bid_qtys, ask_prices, ask_qtys, received_at",
            Table::BookTop => "time, instrument_id, update_id, bid_prices, bid_qtys, ask_prices, ask_qtys, mid, spread, microprice, imbalance_1, imbalance_5, imbalance_10, bid_depth_10bps, ask_depth_10bps, bid_depth_50bps, ask_depth_50bps, bid_wall_price, bid_wall_qty, bid_wall_bps, ask_wall_price, ask_wall_qty, ask_wall_bps",
            Table::BookTicker => "time, instrument_id, update_id, bid_price, bid_qty, ask_price, ask_qty, received_at",
            Table::Trades => "time, instrument_id, agg_trade_id, price, qty, first_trade_id, last_trade_id, buyer_is_maker, event_time, received_at",
            Table::MarkPrices => "time, instrument_id, mark_price, index_price, estimated_settle_price, funding_rate, next_funding_time, received_at",
            Table::SyncEvents => "time, instrument_id, epoch, kind, first_update_id, last_update_id, detail",
        }
    }
}

/// One row for one table. Times are Unix milliseconds; prices and quantities e8.
#[derive(Debug, Clone)]
pub enum Row {
    Depth {
        time: u64,
        iid: i32,
        first: u64,
        last: u64,
        prev: Option<u64>,
        side: Side,
        price: i64,
        qty: i64,
        recv: u64,
    },
    Checkpoint {
        time: u64,
        iid: i32,
        epoch: i64,
        update_id: u64,
        periodic: bool,
        bids: Levels,
        asks: Levels,
        recv: u64,
    },
    Top {
        time: u64,
        iid: i32,
        update_id: u64,
        bids: Levels,
        asks: Levels,
        f: Box<Features>,
    },
    Ticker {
        time: u64,
        iid: i32,
        update_id: u64,
        bid: i64,
        bid_qty: i64,
        ask: i64,
        ask_qty: i64,
        recv: u64,
    },
    Trade {
        time: u64,
        iid: i32,
        agg_id: u64,
        price: i64,
        qty: i64,
        first: u64,
        last: u64,
        maker: bool,
        event: u64,
        recv: u64,
    },
    Mark {
        time: u64,
        iid: i32,
        mark: i64,
        index: Option<i64>,
        settle: Option<i64>,
        funding: Option<i64>,
        next_funding: Option<u64>,
        recv: u64,
    },
    Sync {
        time: u64,
        iid: i32,
        epoch: Option<i64>,
        kind: &'static str,
        first: Option<u64>,
        last: Option<u64>,
        detail: Option<String>,
    },
}

impl Row {
    pub fn table(&self) -> Table {
        match self {
            Row::Depth { .. } => Table::DepthUpdates,
            Row::Checkpoint { .. } => Table::BookCheckpoints,
            Row::Top { .. } => Table::BookTop,
            Row::Ticker { .. } => Table::BookTicker,
            Row::Trade { .. } => Table::Trades,
            Row::Mark { .. } => Table::MarkPrices,
            Row::Sync { .. } => Table::SyncEvents,
        }
    }

    /// The exchange time of the row (for the event→commit latency and the ledger).
    pub fn time(&self) -> u64 {
        match self {
            Row::Depth { time, .. }
            | Row::Checkpoint { time, .. }
            | Row::Top { time, .. }
            | Row::Ticker { time, .. }
            | Row::Trade { time, .. }
            | Row::Mark { time, .. }
            | Row::Sync { time, .. } => *time,
        }
    }

    fn encode(&self, b: &mut CopyBuf) {
        let id = |v: u64| v as i64;
        let dec = |b: &mut CopyBuf, d: Option<book::features::Dec>| {
            match d {
                Some(d) => b.numeric(d.mantissa, d.scale),
                None => b.null(),
            };
        };
        match self {
            Row::Depth {
                time,
                iid,
                first,
                last,
                prev,
                side,
                price,
                qty,
                recv,
            } => {
                b.row(9)
                    .ts_ms(*time)
                    .int4(*iid)
                    .int8(id(*first))
                    .int8(id(*last))
                    .opt_int8(prev.map(id))
                    .text(side.as_str())
                    .e8(*price)
                    .e8(*qty)
                    .ts_ms(*recv);
            }
            Row::Checkpoint {
                time,
                iid,
                epoch,
                update_id,
                periodic,
                bids,
                asks,
                recv,
            } => {
                b.row(10)
                    .ts_ms(*time)
                    .int4(*iid)
                    .int8(*epoch)
                    .int8(id(*update_id))
                    .text(if *periodic { "periodic" } else { "snapshot" })
                    .e8_array(bids.iter().map(|l| l.0))
                    .e8_array(bids.iter().map(|l| l.1))
                    .e8_array(asks.iter().map(|l| l.0))
                    .e8_array(asks.iter().map(|l| l.1))
                    .ts_ms(*recv);
            }
            Row::Top {
                time,
                iid,
                update_id,
                bids,
                asks,
                f,
            } => {
                b.row(23)
                    .ts_ms(*time)
                    .int4(*iid)
                    .int8(id(*update_id))
                    .e8_array(bids.iter().map(|l| l.0))
                    .e8_array(bids.iter().map(|l| l.1))
                    .e8_array(asks.iter().map(|l| l.0))
                    .e8_array(asks.iter().map(|l| l.1));
                dec(b, f.mid);
                b.opt_e8(f.spread_e8);
                dec(b, f.microprice);
                b.opt_float8(f.imbalance[0])
                    .opt_float8(f.imbalance[1])
                    .opt_float8(f.imbalance[2]);
                b.e8(f.bid_depth_bps[0])
                    .e8(f.ask_depth_bps[0])
                    .e8(f.bid_depth_bps[1])
                    .e8(f.ask_depth_bps[1]);
                for w in [f.bid_wall, f.ask_wall] {
                    match w {
                        Some((p, q, bps)) => b.e8(p).e8(q).float8(bps),
                        None => b.null().null().null(),
                    };
                }
            }
            Row::Ticker {
                time,
                iid,
                update_id,
                bid,
                bid_qty,
                ask,
                ask_qty,
                recv,
            } => {
                b.row(8)
                    .ts_ms(*time)
                    .int4(*iid)
                    .int8(id(*update_id))
                    .e8(*bid)
                    .e8(*bid_qty)
                    .e8(*ask)
                    .e8(*ask_qty)
                    .ts_ms(*recv);
            }
            Row::Trade {
                time,
                iid,
                agg_id,
                price,
                qty,
                first,
                last,
                maker,
                event,
                recv,
            } => {
                b.row(10)
                    .ts_ms(*time)
                    .int4(*iid)
                    .int8(id(*agg_id))
                    .e8(*price)
                    .e8(*qty)
                    .int8(id(*first))
                    .int8(id(*last))
                    .bool(*maker)
                    .ts_ms(*event)
                    .ts_ms(*recv);
            }
            Row::Mark {
                time,
                iid,
                mark,
                index,
                settle,
                funding,
                next_funding,
                recv,
            } => {
                b.row(8)
                    .ts_ms(*time)
                    .int4(*iid)
                    .e8(*mark)
                    .opt_e8(*index)
                    .opt_e8(*settle)
                    .opt_e8(*funding);
                match next_funding {
                    Some(t) => b.ts_ms(*t),
                    None => b.null(),
                };
                b.ts_ms(*recv);
            }
            Row::Sync {
                time,
                iid,
                epoch,
                kind,
                first,
                last,
                detail,
            } => {
                b.row(7)
                    .ts_ms(*time)
                    .int4(*iid)
                    .opt_int8(*epoch)
                    .text(kind)
                    .opt_int8(first.map(id))
                    .opt_int8(last.map(id));
                match detail {
                    Some(d) => b.text(d),
                    None => b.null(),
                };
            }
        }
    }
}

/// Batching and spool settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub database_url: String,
    /// Flush when a batch reaches this many rows.
    pub max_rows: usize,
    /// ... or when its first row has waited this long (100 ms by default).
    pub max_delay: Duration,
    /// Rows queued per table before producers wait (backpressure).
    pub queue: usize,
    pub spool_dir: PathBuf,
    /// Identifies this process's batches in the ledger.
    pub instance: String,
}

/// Senders to the table writers; dropping every clone flushes and stops them.
#[derive(Debug, Clone)]
pub struct Writer {
    txs: Arc<Vec<(Table, mpsc::Sender<Row>)>>,
}

impl Writer {
    /// Queues a row; waits when the table's queue is full (backpressure).
    pub async fn send(&self, row: Row) {
        let t = row.table();
        if let Some((_, tx)) = self.txs.iter().find(|(tt, _)| *tt == t) {
            // A closed writer means shutdown is under way; the row is dropped with it.
            let _ = tx.send(row).await;
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
    (Writer { txs: Arc::new(txs) }, handles)
}

/// Replays every table's spool left by a previous run, before anything new is written.
/// Returns the batches still spooled (0 unless the database went away meanwhile): the
/// caller must not judge what is stored (e.g. close open epochs) until that is 0.
pub async fn replay_spool(cfg: &WriterConfig, metrics: &Arc<Metrics>) -> usize {
    let mut left = 0;
    for table in Table::ALL {
        let mut w = TableWriter::new(table, cfg.clone(), metrics.clone());
        w.spooled = w.spool_files().len();
        if w.spooled > 0 {
            tracing::info!(
                table = table.name(),
                batches = w.spooled,
                "replaying the spool of a previous run"
            );
            w.drain_spool().await;
        }
        left += w.spooled;
    }
    left
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Refreshes continuous aggregates `views` (finest first: 1 s, 1 m, 1 h) over replayed rows
/// from `since_ms` to `until_ms`. Only whole buckets up to the last replayed row: rows after it
/// may still be arriving (a backlog after an outage is written late), and a bucket materialized
/// before they land would miss them, while unmaterialized buckets above the watermark are
/// aggregated in real time. Rows replayed into a still-open bucket below a watermark are taken
/// up by the view's refresh job, whose window covers recent buckets.
async fn refresh_continuous(
    client: &Client,
    views: &[&str],
    since_ms: u64,
    until_ms: u64,
) -> Result<(), tokio_postgres::Error> {
    let mut res = Ok(());
    for (v, (bucket, bucket_ms)) in views.iter().zip([
        ("1 second", 1_000u64),
        ("1 minute", 60_000),
        ("1 hour", 3_600_000),
    ]) {
        // TimescaleDB rounds the window to whole buckets and refuses one that holds none.
        if until_ms / bucket_ms <= since_ms / bucket_ms {
            continue;
        }
        // CALL cannot take bind parameters for its procedure arguments here: the values are
        // our own numbers, formatted, never user input.
        let sql = format!(
            "CALL refresh_continuous_aggregate('{v}', to_timestamp({}) - interval '{bucket}', to_timestamp({}))",
            since_ms as f64 / 1000.0,
            until_ms as f64 / 1000.0,
        );
        if let Err(e) = client.batch_execute(&sql).await {
            res = Err(e);
        }
    }
    res
}

struct Batch {
    id: String,
    rows: usize,
    first_ms: u64,
    last_ms: u64,
    bytes: Vec<u8>,
    /// LISTEN/NOTIFY announcements (live batches only; a replayed batch is history).
    notes: Option<crate::notify::Notes>,
}

struct TableWriter {
    table: Table,
    cfg: WriterConfig,
    metrics: Arc<Metrics>,
    client: Option<Client>,
    spool: PathBuf,
    /// Batches in the spool; counted here so the write path never lists the directory.
    spooled: usize,
    last_connect_attempt: Option<Instant>,
}

impl TableWriter {
    fn new(table: Table, cfg: WriterConfig, metrics: Arc<Metrics>) -> TableWriter {
        let spool = cfg.spool_dir.join(table.name());
        TableWriter {
            table,
            cfg,
            metrics,
            client: None,
            spool,
            spooled: 0,
            last_connect_attempt: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Row>) {
        if let Err(e) = std::fs::create_dir_all(&self.spool) {
            tracing::error!(table = self.table.name(), error = %e, "cannot create the spool directory");
        }
        // A previous run may have left batches behind: they go first.
        self.spooled = self.spool_files().len();
        loop {
            let first = match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(_) => {
                    // Idle: a good moment to replay what the spool holds.
                    if self.spool_len() > 0 {
                        self.drain_spool().await;
                    }
                    continue;
                }
            };
            let deadline = tokio::time::Instant::now() + self.cfg.max_delay;
            let mut buf = CopyBuf::new();
            let (mut lo, mut hi) = (first.time(), first.time());
            first.encode(&mut buf);
            let mut notes = self.channel().map(|_| crate::notify::Notes::default());
            if let Some(n) = notes.as_mut() {
                n.add(&first);
            }
            let mut closed = false;
            while buf.rows() < self.cfg.max_rows {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(row)) => {
                        lo = lo.min(row.time());
                        hi = hi.max(row.time());
                        row.encode(&mut buf);
                        if let Some(n) = notes.as_mut() {
                            n.add(&row);
                        }
                    }
                    Ok(None) => {
                        closed = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.metrics
                .queue_depth
                .with_label_values(&[self.table.name()])
                .set((self.cfg.queue - rx.capacity()) as i64);
            let rows = buf.rows();
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let batch = Batch {
                id: format!("{}-{}-{seq}", self.cfg.instance, self.table.name()),
                rows,
                first_ms: lo,
                last_ms: hi,
                bytes: buf.finish(),
                notes,
            };
            self.write(batch).await;
            if closed {
                break;
            }
        }
        // Final attempt at an outstanding spool before exiting.
        self.drain_spool().await;
    }

    /// The NOTIFY channel of this table, if it has one.
    fn channel(&self) -> Option<&'static str> {
        match self.table {
            Table::BookTop => Some(crate::notify::BOOK_CHANNEL),
            Table::BookTicker => Some(crate::notify::TICKER_CHANNEL),
            Table::Trades => Some(crate::notify::TRADES_CHANNEL),
            _ => None,
        }
    }

    async fn connect(&mut self) -> bool {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
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
        match pgconn::connect(&self.cfg.database_url).await {
            Ok((client, _conn)) => {
                self.client = Some(client);
                true
            }
            Err(e) => {
                tracing::warn!(table = self.table.name(), error = %e, "database unreachable; spooling");
                false
            }
        }
    }

    async fn write(&mut self, batch: Batch) {
        if self.spool_len() > 0 {
            // Keep order: everything after a spooled batch goes through the spool too.
            self.spool_batch(&batch);
            self.drain_spool().await;
            return;
        }
        if self.connect().await {
            match self.commit(&batch, false).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(table = self.table.name(), error = %e, "batch commit failed; spooling");
                    self.client = None;
                }
            }
        }
        self.spool_batch(&batch);
    }

    async fn commit(&mut self, b: &Batch, spooled: bool) -> Result<(), tokio_postgres::Error> {
        let started = Instant::now();
        let channel = self.channel();
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        let tx = client.transaction().await?;
        let fresh = tx
            .execute(
                "INSERT INTO ingest_batches (batch_id, relation, rows, first_time, last_time, spooled)
                 VALUES ($1, $2, $3, to_timestamp($4::float8 / 1000), to_timestamp($5::float8 / 1000), $6)
                 ON CONFLICT (batch_id) DO NOTHING",
                &[&b.id, &self.table.name(), &(b.rows as i32), &(b.first_ms as f64), &(b.last_ms as f64), &spooled],
            )
            .await?;
        if fresh == 1 {
            let sink = tx
                .copy_in(&format!(
                    "COPY {} ({}) FROM STDIN (FORMAT binary)",
                    self.table.name(),
                    self.table.columns()
                ))
                .await?;
            futures_util::pin_mut!(sink);
            sink.send(bytes::Bytes::copy_from_slice(&b.bytes)).await?;
            sink.finish().await?;
            if let (false, Some(notes), Some(channel)) = (spooled, b.notes.as_ref(), channel) {
                let (channels, payloads) = notes.payloads(channel);
                if !payloads.is_empty() {
                    tx.execute(
                        "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)",
                        &[&channels, &payloads],
                    )
                    .await?;
                }
            }
            // The ledger's commit time is taken after the COPY, not at the transaction's start
            // (`now()`), so event→commit latency can be read back exactly per row: each row
            // shares its batch's `xmin` (bench/ does that).
            tx.execute(
                "UPDATE ingest_batches SET committed_at = clock_timestamp() WHERE batch_id = $1",
                &[&b.id],
            )
            .await?;
        }
        tx.commit().await?;
        let name = self.table.name();
        self.metrics
            .copy_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        if fresh == 1 {
            self.metrics
                .rows_written
                .with_label_values(&[name])
                .inc_by(b.rows as u64);
            self.metrics
                .batch_rows
                .with_label_values(&[name])
                .observe(b.rows as f64);
            let now = crate::now_ms();
            // The oldest row of the batch waited longest: that is the latency to report.
            self.metrics
                .event_to_commit
                .observe(now.saturating_sub(b.first_ms) as f64 / 1000.0);
        }
        Ok(())
    }

    fn spool_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.spool)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "copy"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    fn spool_len(&self) -> usize {
        self.spooled
    }

    fn spool_batch(&mut self, b: &Batch) {
        // <time-ordered seq>.copy: a text header line, then the COPY bytes.
        let name = format!(
            "{:020}-{:012}.copy",
            crate::now_ms(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.spool.join(name);
        let mut data = format!("{} {} {} {}\n", b.id, b.rows, b.first_ms, b.last_ms).into_bytes();
        data.extend_from_slice(&b.bytes);
        let tmp = path.with_extension("tmp");
        let res = std::fs::write(&tmp, &data).and_then(|_| std::fs::rename(&tmp, &path));
        match res {
            Ok(()) => {
                self.spooled += 1;
                self.metrics
                    .spool_bytes
                    .with_label_values(&[self.table.name()])
                    .add(data.len() as i64);
                self.metrics
                    .spooled_batches
                    .with_label_values(&[self.table.name()])
                    .inc();
            }
            Err(e) => {
                tracing::error!(table = self.table.name(), error = %e, rows = b.rows, "cannot spool a batch: rows lost")
            }
        }
    }

    fn read_spooled(path: &Path) -> Option<Batch> {
        let data = std::fs::read(path).ok()?;
        let nl = data.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&data[..nl]).ok()?;
        let mut it = header.split(' ');
        let id = it.next()?.to_owned();
        let rows = it.next()?.parse().ok()?;
        let first_ms = it.next()?.parse().ok()?;
        let last_ms = it.next()?.parse().ok()?;
        Some(Batch {
            id,
            rows,
            first_ms,
            last_ms,
            bytes: data[nl + 1..].to_vec(),
            notes: None,
        })
    }

    /// Replays spooled batches in order while the database takes them.
    async fn drain_spool(&mut self) {
        // The time range of the rows replayed: (earliest, latest) event time.
        let mut replayed: Option<(u64, u64)> = None;
        for path in self.spool_files() {
            if !self.connect().await {
                break;
            }
            let Some(batch) = Self::read_spooled(&path) else {
                tracing::error!(path = %path.display(), "unreadable spool file kept aside");
                let _ = std::fs::rename(&path, path.with_extension("bad"));
                self.spooled = self.spooled.saturating_sub(1);
                continue;
            };
            match self.commit(&batch, true).await {
                Ok(()) => {
                    replayed = Some(replayed.map_or((batch.first_ms, batch.last_ms), |(a, b)| {
                        (a.min(batch.first_ms), b.max(batch.last_ms))
                    }));
                    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    let _ = std::fs::remove_file(&path);
                    self.spooled = self.spooled.saturating_sub(1);
                    self.metrics
                        .spool_bytes
                        .with_label_values(&[self.table.name()])
                        .sub(size as i64);
                }
                Err(e) => {
                    tracing::warn!(table = self.table.name(), error = %e, "spool replay paused");
                    self.client = None;
                    break;
                }
            }
        }
        if let Some((since, until)) = replayed {
            self.refresh_aggregates(since, until).await;
        }
    }

    /// Rows replayed late may fall into aggregate buckets already materialized, or below a
    /// continuous aggregate's watermark where real-time aggregation does not look: have them
    /// recomputed (plain PostgreSQL and the Apache edition: lower the rollup watermarks;
    /// TimescaleDB: refresh every level over the replayed range, finest first, since a
    /// coarser level's policy window may not reach back that far).
    async fn refresh_aggregates(&mut self, since_ms: u64, until_ms: u64) {
        let views: &[&str] = match self.table {
            Table::BookTicker => &["ticker_1s", "ticker_1m", "ticker_1h"],
            Table::Trades => &["trades_1s", "trades_1m", "trades_1h"],
            _ => return,
        };
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let plain = client
            .query_one(
                "SELECT to_regproc('invalidate_aggregates') IS NOT NULL",
                &[],
            )
            .await
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false);
        let res = if plain {
            client
                .execute(
                    "SELECT invalidate_aggregates(to_timestamp($1::float8))",
                    &[&(since_ms as f64 / 1000.0)],
                )
                .await
                .map(|_| ())
        } else {
            refresh_continuous(client, views, since_ms, until_ms).await
        };
        if let Err(e) = res {
            let error = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned());
            tracing::warn!(
                table = self.table.name(),
                error,
                "could not refresh aggregates after a spool replay"
            );
        }
    }
}
