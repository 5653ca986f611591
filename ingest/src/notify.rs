//! Live updates for the API over LISTEN/NOTIFY: the latest book sample and best bid/ask per
//! instrument, and the trades, of every committed batch. Sent inside the batch's transaction,
//! so a listener only ever sees committed data; a slow listener misses nothing it could not
//! read back from the tables.

use std::collections::BTreeMap;

use binance::units::format_e8;
use schema::live::{BookNote, TickerNote, TradeNote, TradesNote, MAX_PAYLOAD};
use serde::Serialize;

use crate::writer::Row;

pub use schema::live::{BOOK_CHANNEL, TICKER_CHANNEL, TRADES_CHANNEL};

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

/// Collects what a batch will announce.
#[derive(Debug, Default)]
pub struct Notes {
    latest: BTreeMap<i32, String>,
    trades: BTreeMap<i32, Vec<TradeNote>>,
}

impl Notes {
    pub fn add(&mut self, row: &Row) {
        match row {
            Row::Top {
                time,
                iid,
                update_id,
                bids,
                asks,
                f,
            } => {
                let mut note = BookNote {
                    instrument_id: *iid,
                    time: *time,
                    update_id: *update_id,
                    mid: f.mid.map(|d| mid_text(d.mantissa, d.scale)),
                    bids: levels(bids),
                    asks: levels(asks),
                };
                let mut p = json(&note);
                if p.len() > MAX_PAYLOAD {
                    note.bids.truncate(5);
                    note.asks.truncate(5);
                    p = json(&note);
                }
                self.latest.insert(*iid, p);
            }
            Row::Ticker {
                time,
                iid,
                update_id,
                bid,
                bid_qty,
                ask,
                ask_qty,
                ..
            } => {
                let note = TickerNote {
                    instrument_id: *iid,
                    time: *time,
                    update_id: *update_id,
                    bid: dec(*bid),
                    bid_qty: dec(*bid_qty),
                    ask: dec(*ask),
                    ask_qty: dec(*ask_qty),
                };
                self.latest.insert(*iid, json(&note));
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
                ..
            } => self.trades.entry(*iid).or_default().push(TradeNote {
                id: *agg_id,
                time: *time,
                price: dec(*price),
                qty: dec(*qty),
                first: *first,
                last: *last,
                buyer_is_maker: *maker,
            }),
            _ => {}
        }
    }

    /// (channel, payload) pairs, each payload under PostgreSQL's limit.
    pub fn payloads(&self, channel: &'static str) -> (Vec<String>, Vec<String>) {
        let mut channels = Vec::new();
        let mut payloads: Vec<String> = self.latest.values().cloned().collect();
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

/// `trades` of one instrument as [`TradesNote`] payloads, each under [`MAX_PAYLOAD`].
fn chunks(iid: i32, trades: &[TradeNote]) -> Vec<String> {
    let note = |trades: &[TradeNote]| {
        json(&TradesNote {
            instrument_id: iid,
            trades: trades.to_vec(),
        })
    };
    let empty = note(&[]).len();
    let mut out = Vec::new();
    let (mut start, mut len) = (0, empty);
    for (i, t) in trades.iter().enumerate() {
        let size = json(t).len();
        if i > start && len + 1 + size > MAX_PAYLOAD {
            out.push(note(&trades[start..i]));
            (start, len) = (i, empty);
        }
        len += size + usize::from(i > start);
    }
    if start < trades.len() {
        out.push(note(&trades[start..]));
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

    #[test]
    fn trades_are_chunked_under_the_payload_limit() {
        let mut n = Notes::default();
        for i in 0..500 {
            n.add(&Row::Trade {
                time: 1,
                iid: 7,
                agg_id: i,
                price: 6_700_001_000_000,
                qty: 12_345,
                first: i,
                last: i,
                maker: true,
                event: 1,
                recv: 1,
            });
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
