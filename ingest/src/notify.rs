//! Live updates for the API over LISTEN/NOTIFY: the latest book sample and best bid/ask per
//! instrument, and the trades, of every committed batch. Sent inside the batch's transaction,
//! so a listener only ever sees committed data; a slow listener misses nothing it could not
//! read back from the tables.

use std::collections::BTreeMap;

use binance::units::format_e8;
use schema::live::{BookNote, TickerNote, TradeNote, TradesNote, MAX_PAYLOAD};
use serde::Serialize;

use crate::row::{Row, Table};

pub use schema::live::{BOOK_CHANNEL, TICKER_CHANNEL, TRADES_CHANNEL};

/// The NOTIFY channel a table's batches announce on, if any.
pub fn channel(table: Table) -> Option<&'static str> {
    match table {
        Table::BookTop => Some(BOOK_CHANNEL),
        Table::BookTicker => Some(TICKER_CHANNEL),
        Table::Trades => Some(TRADES_CHANNEL),
        _ => None,
    }
}

fn dec(v: i64) -> String {
    format_e8(v, 0)
}

fn levels(l: &[(i64, i64)]) -> Vec<(String, String)> {
    l.iter().map(|(p, q)| (dec(*p), dec(*q))).collect()
}

fn json<T: Serialize>(v: &T) -> String {
    // Strings, integers, options and vectors: serialization cannot fail.
    sonic_rs::to_string(v).expect("the NOTIFY payloads always serialize")
}

/// Collects what a batch will announce. Only the newest book sample and ticker of each
/// instrument is announced, so only that row is kept and serialized, once, when the batch
/// commits: under load a batch holds many rows of one instrument. (At nominal load a batch holds
/// about one per instrument, and formatting the decimals is still ≈ 4 % of ingest's CPU.)
#[derive(Debug, Default)]
pub struct Notes {
    latest: BTreeMap<i32, Row>,
    trades: BTreeMap<i32, Vec<TradeNote>>,
}

/// The payload of a book sample or ticker row.
fn latest_payload(row: &Row) -> Option<String> {
    match row {
        Row::Top(r) => {
            let mut note = BookNote {
                instrument_id: r.instrument_id,
                time: r.time,
                update_id: r.update_id,
                mid: r.features.mid.map(|d| mid_text(d.mantissa, d.scale)),
                bids: levels(&r.bids),
                asks: levels(&r.asks),
            };
            let mut p = json(&note);
            if p.len() > MAX_PAYLOAD {
                note.bids.truncate(5);
                note.asks.truncate(5);
                p = json(&note);
            }
            Some(p)
        }
        Row::Ticker(r) => Some(json(&TickerNote {
            instrument_id: r.instrument_id,
            time: r.time,
            update_id: r.update_id,
            bid: dec(r.bid_price),
            bid_qty: dec(r.bid_qty),
            ask: dec(r.ask_price),
            ask_qty: dec(r.ask_qty),
        })),
        _ => None,
    }
}

impl Notes {
    /// Takes the row once it is encoded: the newest book sample or ticker of an instrument is
    /// kept as it is, without a copy.
    pub fn add(&mut self, row: Row) {
        match row {
            Row::Top(ref r) => {
                self.latest.insert(r.instrument_id, row);
            }
            Row::Ticker(ref r) => {
                self.latest.insert(r.instrument_id, row);
            }
            Row::Trade(r) => self
                .trades
                .entry(r.instrument_id)
                .or_default()
                .push(TradeNote {
                    id: r.agg_trade_id,
                    time: r.time,
                    price: dec(r.price),
                    qty: dec(r.qty),
                    first: r.first_trade_id,
                    last: r.last_trade_id,
                    buyer_is_maker: r.buyer_is_maker,
                }),
            _ => {}
        }
    }

    /// (channel, payload) pairs, each payload under PostgreSQL's limit.
    pub fn payloads(&self, channel: &'static str) -> (Vec<String>, Vec<String>) {
        let mut channels = Vec::new();
        let mut payloads: Vec<String> = self.latest.values().filter_map(latest_payload).collect();
        channels.resize(payloads.len(), channel.to_owned());
        for (iid, trades) in &self.trades {
            for chunk in chunks(*iid, trades) {
                channels.push(TRADES_CHANNEL.to_owned());
                payloads.push(chunk);
            }
        }
        (channels, payloads)
    }
}

/// `trades` of one instrument as [`TradesNote`] payloads, each under [`MAX_PAYLOAD`]. Each
/// trade is serialized once: the payloads are the empty note with the trades spliced into its
/// list (so the shape stays the contract's, whatever serde makes of it).
fn chunks(iid: i32, trades: &[TradeNote]) -> Vec<String> {
    let empty = json(&TradesNote {
        instrument_id: iid,
        trades: Vec::new(),
    });
    let Some(at) = empty.find("[]") else {
        return Vec::new();
    };
    let (head, tail) = (&empty[..=at], &empty[at + 1..]);
    let mut out = Vec::new();
    let mut payload = String::from(head);
    for t in trades.iter().map(json) {
        let empty = payload.len() == head.len();
        if !empty && payload.len() + 1 + t.len() + tail.len() > MAX_PAYLOAD {
            payload.push_str(tail);
            out.push(std::mem::replace(&mut payload, String::from(head)));
        } else if !empty {
            payload.push(',');
        }
        payload.push_str(&t);
    }
    if payload.len() > head.len() {
        payload.push_str(tail);
        out.push(payload);
    }
    out
}

fn mid_text(mantissa: i128, scale: u32) -> String {
    let neg = mantissa < 0;
    let m = mantissa.unsigned_abs();
    let p = 10u128.pow(scale);
    let (i, f) = (m / p, m % p);
    let mut fs = format!("{f:0width$}", width = scale as usize);
    while fs.ends_with('0') {
        fs.pop();
    }
    let sign = if neg { "-" } else { "" };
    if fs.is_empty() {
        format!("{sign}{i}")
    } else {
        format!("{sign}{i}.{fs}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{TickerRow, TradeRow};

    #[test]
    fn only_the_newest_ticker_of_an_instrument_is_announced() {
        let mut n = Notes::default();
        for (iid, update_id) in [(1, 10), (2, 11), (1, 12), (1, 13)] {
            n.add(Row::Ticker(TickerRow {
                time: update_id,
                instrument_id: iid,
                update_id,
                bid_price: 100_000_000 * update_id as i64,
                bid_qty: 50_000_000,
                ask_price: 100_000_000 * update_id as i64 + 1_000_000,
                ask_qty: 1,
                received_at: 0,
            }));
        }
        let (ch, pl) = n.payloads(TICKER_CHANNEL);
        assert_eq!(ch, [TICKER_CHANNEL, TICKER_CHANNEL]);
        let notes: Vec<TickerNote> = pl
            .iter()
            .map(|p| sonic_rs::from_str(p).expect("the contract's payload"))
            .collect();
        assert_eq!(
            notes
                .iter()
                .map(|t| (t.instrument_id, t.update_id))
                .collect::<Vec<_>>(),
            [(1, 13), (2, 11)]
        );
        assert_eq!(
            (
                notes[0].bid.as_str(),
                notes[0].bid_qty.as_str(),
                notes[0].ask.as_str(),
                notes[0].ask_qty.as_str()
            ),
            ("13", "0.5", "13.01", "0.00000001")
        );
    }

    #[test]
    fn trades_are_chunked_under_the_payload_limit() {
        let mut n = Notes::default();
        for i in 0..500 {
            n.add(Row::Trade(TradeRow {
                time: 1,
                instrument_id: 7,
                agg_trade_id: i,
                price: 6_700_001_000_000,
                qty: 12_345,
                first_trade_id: i,
                last_trade_id: i,
                buyer_is_maker: true,
                event_time: 1,
                received_at: 1,
            }));
        }
        let (ch, pl) = n.payloads(BOOK_CHANNEL);
        assert!(pl.len() > 1);
        assert!(ch.iter().all(|c| c == TRADES_CHANNEL));
        let mut total = 0;
        for p in &pl {
            assert!(p.len() < 8000);
            let note: TradesNote = sonic_rs::from_str(p).expect("the contract's payload");
            assert_eq!(note.instrument_id, 7);
            total += note.trades.len();
        }
        assert_eq!(total, 500);
        assert_eq!(mid_text(100_005_000_000, 9), "100.005");
    }
}
