//! Live updates for the API over LISTEN/NOTIFY: the latest book sample and best bid/ask per
//! instrument, and the trades, of every committed batch. Sent inside the batch's transaction,
//! so a listener only ever sees committed data; a slow listener misses nothing it could not
//! read back from the tables.

use std::collections::BTreeMap;

use binance::units::format_e8;

use crate::writer::Row;

/// Channel of `book_top` samples: `{"instrument_id","time","update_id","mid","bids","asks"}`.
pub const BOOK_CHANNEL: &str = "depthbook_book";
/// Channel of best bid/ask: `{"instrument_id","time","update_id","bid","bid_qty","ask","ask_qty"}`.
pub const TICKER_CHANNEL: &str = "depthbook_book_ticker";
/// Channel of trades: `{"instrument_id","trades":[{"id","time","price","qty","first","last","buyer_is_maker"}]}`.
pub const TRADES_CHANNEL: &str = "depthbook_trades";
/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7_900;

fn dec(v: i64) -> String {
    format_e8(v, 0)
}

fn levels(l: &[(i64, i64)]) -> String {
    let inner: Vec<String> = l
        .iter()
        .map(|(p, q)| format!("[\"{}\",\"{}\"]", dec(*p), dec(*q)))
        .collect();
    format!("[{}]", inner.join(","))
}

/// Collects what a batch will announce.
#[derive(Debug, Default)]
pub struct Notes {
    latest: BTreeMap<i32, String>,
    trades: BTreeMap<i32, Vec<String>>,
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
                let mid = f
                    .mid
                    .map(|d| format!("\"{}\"", mid_text(d.mantissa, d.scale)))
                    .unwrap_or_else(|| "null".into());
                let mut p = format!(
                    "{{\"instrument_id\":{iid},\"time\":{time},\"update_id\":{update_id},\"mid\":{mid},\"bids\":{},\"asks\":{}}}",
                    levels(bids),
                    levels(asks)
                );
                if p.len() > MAX_PAYLOAD {
                    let n = 5.min(bids.len()).min(asks.len());
                    p = format!("{{\"instrument_id\":{iid},\"time\":{time},\"update_id\":{update_id},\"mid\":{mid},\"bids\":{},\"asks\":{}}}", levels(&bids[..n]), levels(&asks[..n]));
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
                self.latest.insert(
                    *iid,
                    format!(
                        "{{\"instrument_id\":{iid},\"time\":{time},\"update_id\":{update_id},\"bid\":\"{}\",\"bid_qty\":\"{}\",\"ask\":\"{}\",\"ask_qty\":\"{}\"}}",
                        dec(*bid),
                        dec(*bid_qty),
                        dec(*ask),
                        dec(*ask_qty)
                    ),
                );
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
            } => {
                self.trades.entry(*iid).or_default().push(format!(
                    "{{\"id\":{agg_id},\"time\":{time},\"price\":\"{}\",\"qty\":\"{}\",\"first\":{first},\"last\":{last},\"buyer_is_maker\":{maker}}}",
                    dec(*price),
                    dec(*qty)
                ));
            }
            _ => {}
        }
    }

    /// (channel, payload) pairs, each payload under PostgreSQL's limit.
    pub fn payloads(&self, channel: &'static str) -> (Vec<String>, Vec<String>) {
        let mut channels = Vec::new();
        let mut payloads = Vec::new();
        for p in self.latest.values() {
            channels.push(channel.to_owned());
            payloads.push(p.clone());
        }
        for (iid, trades) in &self.trades {
            let head = format!("{{\"instrument_id\":{iid},\"trades\":[");
            let mut cur = head.clone();
            for t in trades {
                if cur.len() + t.len() + 2 > MAX_PAYLOAD && cur.len() > head.len() {
                    cur.push_str("]}");
                    channels.push(TRADES_CHANNEL.to_owned());
                    payloads.push(std::mem::replace(&mut cur, head.clone()));
                }
                if cur.len() > head.len() {
                    cur.push(',');
                }
                cur.push_str(t);
            }
            if cur.len() > head.len() {
                cur.push_str("]}");
                channels.push(TRADES_CHANNEL.to_owned());
                payloads.push(cur);
            }
        }
        (channels, payloads)
    }
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
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};

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
            let v: sonic_rs::Value = sonic_rs::from_str(p).expect("valid JSON");
            total += v
                .get("trades")
                .and_then(|t| t.as_array())
                .map(|a| a.len())
                .unwrap_or(0);
        }
        assert_eq!(total, 500);
        assert_eq!(mid_text(100_005_000_000, 9), "100.005");
    }
}
