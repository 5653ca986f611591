//! The rows ingest writes: one struct per table, fields named as the table's columns, and each
//! row's binary COPY encoding in the column order of [`Table::columns`]. Times are Unix
//! milliseconds; prices and quantities e8 (`binance::units`).

use book::features::{Dec, Features};
use book::{Levels, Side};

use crate::copy::CopyBuf;

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

    /// How many columns a batch's COPY fills: the fields of each encoded row.
    pub fn fields(self) -> usize {
        self.columns().split(", ").count()
    }

    /// The columns a batch's COPY fills, in the order its rows are encoded.
    pub fn columns(self) -> &'static str {
        match self {
            Table::DepthUpdates => "time, instrument_id, first_update_id, update_id, prev_update_id, side, price, qty, received_at",
            Table::BookCheckpoints => "time, instrument_id, epoch, update_id, kind, bid_prices, bid_qtys, ask_prices, ask_qtys, received_at, levels",
            Table::BookTop => "time, instrument_id, update_id, bid_prices, bid_qtys, ask_prices, ask_qtys, mid, spread, microprice, imbalance_1, imbalance_5, imbalance_10, bid_depth_10bps, ask_depth_10bps, bid_depth_50bps, ask_depth_50bps, bid_wall_price, bid_wall_qty, bid_wall_bps, ask_wall_price, ask_wall_qty, ask_wall_bps",
            Table::BookTicker => "time, instrument_id, update_id, bid_price, bid_qty, ask_price, ask_qty, received_at",
            Table::Trades => "time, instrument_id, agg_trade_id, price, qty, first_trade_id, last_trade_id, buyer_is_maker, event_time, received_at",
            Table::MarkPrices => "time, instrument_id, mark_price, index_price, estimated_settle_price, funding_rate, next_funding_time, received_at",
            Table::SyncEvents => "time, instrument_id, epoch, kind, first_update_id, last_update_id, detail",
        }
    }
}

/// `book_checkpoints.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// The book right after a sync: the start of an epoch.
    Snapshot,
    /// The book stored again on the way, so `book_at` replays little.
    Periodic,
}

impl CheckpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Snapshot => "snapshot",
            CheckpointKind::Periodic => "periodic",
        }
    }
}

/// `sync_events.kind` (the values `sql/0001_core.sql` allows that ingest writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// A snapshot was applied: an epoch starts.
    Synced,
    /// Update ids are missing: the epoch ends.
    Gap,
    /// Collection stopped: the epoch ends.
    Stopped,
    /// A new snapshot was requested.
    Resync,
    /// The connection carrying the stream dropped.
    Disconnect,
    /// A snapshot request was delayed by 429/418.
    RateLimited,
}

impl SyncKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Synced => "synced",
            SyncKind::Gap => "gap",
            SyncKind::Stopped => "stopped",
            SyncKind::Resync => "resync",
            SyncKind::Disconnect => "disconnect",
            SyncKind::RateLimited => "rate_limited",
        }
    }
}

/// A `depth_updates` row: one level change of one event.
#[derive(Debug, Clone)]
pub struct DepthRow {
    pub time: u64,
    pub instrument_id: i32,
    pub first_update_id: u64,
    pub update_id: u64,
    pub prev_update_id: Option<u64>,
    pub side: Side,
    pub price: i64,
    pub qty: i64,
    pub received_at: u64,
}

/// A `book_checkpoints` row: the whole book at an update id.
#[derive(Debug, Clone)]
pub struct CheckpointRow {
    pub time: u64,
    pub instrument_id: i32,
    pub epoch: i64,
    pub update_id: u64,
    pub kind: CheckpointKind,
    pub bids: Levels,
    pub asks: Levels,
    pub received_at: u64,
    /// The book holds only its best `levels` per side (the symbol's depth window); `None`:
    /// every level.
    pub levels: Option<u32>,
}

/// A `book_top` row: the top levels and the features computed from them.
#[derive(Debug, Clone)]
pub struct TopRow {
    pub time: u64,
    pub instrument_id: i32,
    pub update_id: u64,
    pub bids: Levels,
    pub asks: Levels,
    pub features: Box<Features>,
}

/// A `book_ticker` row (bookTicker).
#[derive(Debug, Clone)]
pub struct TickerRow {
    pub time: u64,
    pub instrument_id: i32,
    pub update_id: u64,
    pub bid_price: i64,
    pub bid_qty: i64,
    pub ask_price: i64,
    pub ask_qty: i64,
    pub received_at: u64,
}

/// A `trades` row (aggTrade).
#[derive(Debug, Clone)]
pub struct TradeRow {
    pub time: u64,
    pub instrument_id: i32,
    pub agg_trade_id: u64,
    pub price: i64,
    pub qty: i64,
    pub first_trade_id: u64,
    pub last_trade_id: u64,
    pub buyer_is_maker: bool,
    pub event_time: u64,
    pub received_at: u64,
}

/// A `mark_prices` row (markPrice@1s).
#[derive(Debug, Clone)]
pub struct MarkRow {
    pub time: u64,
    pub instrument_id: i32,
    pub mark_price: i64,
    pub index_price: Option<i64>,
    pub estimated_settle_price: Option<i64>,
    pub funding_rate: Option<i64>,
    pub next_funding_time: Option<u64>,
    pub received_at: u64,
}

/// A `sync_events` row.
#[derive(Debug, Clone)]
pub struct SyncRow {
    pub time: u64,
    pub instrument_id: i32,
    pub epoch: Option<i64>,
    pub kind: SyncKind,
    pub first_update_id: Option<u64>,
    pub last_update_id: Option<u64>,
    pub detail: Option<String>,
}

/// One row for one table.
#[derive(Debug, Clone)]
pub enum Row {
    Depth(DepthRow),
    Checkpoint(CheckpointRow),
    Top(TopRow),
    Ticker(TickerRow),
    Trade(TradeRow),
    Mark(MarkRow),
    Sync(SyncRow),
}

impl Row {
    pub fn table(&self) -> Table {
        match self {
            Row::Depth(_) => Table::DepthUpdates,
            Row::Checkpoint(_) => Table::BookCheckpoints,
            Row::Top(_) => Table::BookTop,
            Row::Ticker(_) => Table::BookTicker,
            Row::Trade(_) => Table::Trades,
            Row::Mark(_) => Table::MarkPrices,
            Row::Sync(_) => Table::SyncEvents,
        }
    }

    /// The exchange time of the row (for the event→commit latency and the ledger).
    pub fn time(&self) -> u64 {
        match self {
            Row::Depth(r) => r.time,
            Row::Checkpoint(r) => r.time,
            Row::Top(r) => r.time,
            Row::Ticker(r) => r.time,
            Row::Trade(r) => r.time,
            Row::Mark(r) => r.time,
            Row::Sync(r) => r.time,
        }
    }

    /// Appends the row to a batch of its table.
    pub fn encode(&self, b: &mut CopyBuf) {
        match self {
            Row::Depth(r) => r.encode(b),
            Row::Checkpoint(r) => r.encode(b),
            Row::Top(r) => r.encode(b),
            Row::Ticker(r) => r.encode(b),
            Row::Trade(r) => r.encode(b),
            Row::Mark(r) => r.encode(b),
            Row::Sync(r) => r.encode(b),
        }
    }
}

/// Binance's ids are u64 but stay far below 2^63; the columns are `bigint`.
fn id(v: u64) -> i64 {
    v as i64
}

fn levels(b: &mut CopyBuf, bids: &Levels, asks: &Levels) {
    b.e8_array(bids.iter().map(|l| l.0))
        .e8_array(bids.iter().map(|l| l.1))
        .e8_array(asks.iter().map(|l| l.0))
        .e8_array(asks.iter().map(|l| l.1));
}

fn dec(d: Option<Dec>) -> Option<(i128, u32)> {
    d.map(|d| (d.mantissa, d.scale))
}

impl DepthRow {
    fn encode(&self, b: &mut CopyBuf) {
        b.row(9)
            .ts_ms(self.time)
            .int4(self.instrument_id)
            .int8(id(self.first_update_id))
            .int8(id(self.update_id))
            .opt_int8(self.prev_update_id.map(id))
            .text(self.side.as_str())
            .e8(self.price)
            .e8(self.qty)
            .ts_ms(self.received_at);
    }
}

impl CheckpointRow {
    fn encode(&self, b: &mut CopyBuf) {
        b.row(11)
            .ts_ms(self.time)
            .int4(self.instrument_id)
            .int8(self.epoch)
            .int8(id(self.update_id))
            .text(self.kind.as_str());
        levels(b, &self.bids, &self.asks);
        b.ts_ms(self.received_at)
            .opt_int4(self.levels.map(|n| i32::try_from(n).unwrap_or(i32::MAX)));
    }
}

impl TopRow {
    fn encode(&self, b: &mut CopyBuf) {
        let f = &self.features;
        b.row(23)
            .ts_ms(self.time)
            .int4(self.instrument_id)
            .int8(id(self.update_id));
        levels(b, &self.bids, &self.asks);
        b.opt_numeric(dec(f.mid))
            .opt_e8(f.spread_e8)
            .opt_numeric(dec(f.microprice))
            .opt_float8(f.imbalance[0])
            .opt_float8(f.imbalance[1])
            .opt_float8(f.imbalance[2])
            .e8(f.bid_depth_bps[0])
            .e8(f.ask_depth_bps[0])
            .e8(f.bid_depth_bps[1])
            .e8(f.ask_depth_bps[1]);
        for wall in [f.bid_wall, f.ask_wall] {
            match wall {
                Some((price, qty, bps)) => b.e8(price).e8(qty).float8(bps),
                None => b.null().null().null(),
            };
        }
    }
}

impl TickerRow {
    fn encode(&self, b: &mut CopyBuf) {
        b.row(8)
            .ts_ms(self.time)
            .int4(self.instrument_id)
            .int8(id(self.update_id))
            .e8(self.bid_price)
            .e8(self.bid_qty)
            .e8(self.ask_price)
            .e8(self.ask_qty)
            .ts_ms(self.received_at);
    }
}

impl TradeRow {
    fn encode(&self, b: &mut CopyBuf) {
        b.row(10)
            .ts_ms(self.time)
            .int4(self.instrument_id)
            .int8(id(self.agg_trade_id))
            .e8(self.price)
            .e8(self.qty)
            .int8(id(self.first_trade_id))
            .int8(id(self.last_trade_id))
            .bool(self.buyer_is_maker)
            .ts_ms(self.event_time)
            .ts_ms(self.received_at);
    }
}

impl MarkRow {
    fn encode(&self, b: &mut CopyBuf) {
        b.row(8)
            .ts_ms(self.time)
            .int4(self.instrument_id)
            .e8(self.mark_price)
            .opt_e8(self.index_price)
            .opt_e8(self.estimated_settle_price)
            .opt_e8(self.funding_rate)
            .opt_ts_ms(self.next_funding_time)
            .ts_ms(self.received_at);
    }
}

impl SyncRow {
    fn encode(&self, b: &mut CopyBuf) {
        b.row(7)
            .ts_ms(self.time)
            .int4(self.instrument_id)
            .opt_int8(self.epoch)
            .text(self.kind.as_str())
            .opt_int8(self.first_update_id.map(id))
            .opt_int8(self.last_update_id.map(id))
            .opt_text(self.detail.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (declared, encoded) fields of a one-row COPY payload.
    fn fields(bytes: &[u8]) -> (usize, usize) {
        let be16 = |at: usize| i16::from_be_bytes([bytes[at], bytes[at + 1]]);
        // 11-byte signature, 4-byte flags, 4-byte extension length, then the row.
        let declared = be16(19) as usize;
        let (mut at, mut encoded) = (21, 0);
        while at + 2 < bytes.len() {
            let len = i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
            at += 4 + usize::try_from(len).unwrap_or(0);
            encoded += 1;
        }
        assert_eq!(be16(at), -1, "the trailer follows the last field");
        (declared, encoded)
    }

    /// Each row encodes as many fields as its table's COPY names columns: a column added to
    /// one and not the other would fail every batch of that table.
    #[test]
    #[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
    fn every_row_encodes_its_tables_column_count() {
        let levels = vec![(100_000_000, 2), (99_000_000, 3)];
        let rows = [
            Row::Depth(DepthRow {
                time: 1,
                instrument_id: 1,
                first_update_id: 1,
                update_id: 2,
                prev_update_id: None,
                side: Side::Bid,
                price: 1,
                qty: 0,
                received_at: 1,
            }),
            Row::Checkpoint(CheckpointRow {
                time: 1,
                instrument_id: 1,
                epoch: 1,
                update_id: 2,
                kind: CheckpointKind::Periodic,
                bids: levels.clone(),
                asks: levels.clone(),
                received_at: 1,
                levels: Some(5),
            }),
            Row::Top(TopRow {
                time: 1,
                instrument_id: 1,
                update_id: 2,
                features: Box::new(book::features::compute(&levels, &levels)),
                bids: levels.clone(),
                asks: levels,
            }),
            Row::Ticker(TickerRow {
                time: 1,
                instrument_id: 1,
                update_id: 2,
                bid_price: 1,
                bid_qty: 1,
                ask_price: 2,
                ask_qty: 1,
                received_at: 1,
            }),
            Row::Trade(TradeRow {
                time: 1,
                instrument_id: 1,
                agg_trade_id: 1,
                price: 1,
                qty: 1,
                first_trade_id: 1,
                last_trade_id: 1,
                buyer_is_maker: true,
                event_time: 1,
                received_at: 1,
            }),
            Row::Mark(MarkRow {
                time: 1,
                instrument_id: 1,
                mark_price: 1,
                index_price: None,
                estimated_settle_price: Some(1),
                funding_rate: Some(-1),
                next_funding_time: None,
                received_at: 1,
            }),
            Row::Sync(SyncRow {
                time: 1,
                instrument_id: 1,
                epoch: None,
                kind: SyncKind::Resync,
                first_update_id: None,
                last_update_id: None,
                detail: None,
            }),
        ];
        for row in rows {
            let mut b = CopyBuf::new();
            row.encode(&mut b);
            let columns = row.table().fields();
            assert_eq!(
                fields(&b.finish()),
                (columns, columns),
                "{}",
                row.table().name()
            );
        }
    }
}
