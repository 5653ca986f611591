//! Protocol conformance independent of `sim`: `sim` and `ingest` share these types, so a field
//! misread here would pass every end-to-end test. Binance's own documented example payloads
//! (spot and USD-M, every stream and REST response the collector uses) are parsed through the
//! shared types and each field is asserted against the literal; then every line of the real
//! recordings (`../shared/real-binance/`) is parsed both through the shared types and with
//! serde_json, and the fields compared; the hot-path types (`e8wire`, decimals read in place)
//! must read each the same as `wire` plus `units`.

use binance::e8wire;
use binance::units::{parse_e8, parse_levels};
use binance::wire::{AggTrade, BookTicker, DepthSnapshot, DepthUpdate, MarkPrice};
use serde_json::Value;

fn lv(p: &str, q: &str) -> [String; 2] {
    [p.to_owned(), q.to_owned()]
}

#[test]
fn spot_diff_depth_as_documented() {
    let d: DepthUpdate = sonic_rs::from_str(r#"{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}"#).expect("parses");
    assert_eq!(d.event_type, "depthUpdate");
    assert_eq!(d.event_time, 1672515782136);
    assert_eq!(d.symbol, "BNBBTC");
    assert_eq!((d.first_update_id, d.final_update_id), (157, 160));
    assert_eq!((d.prev_final_update_id, d.transaction_time), (None, None));
    assert_eq!(d.bids, vec![lv("0.0024", "10")]);
    assert_eq!(d.asks, vec![lv("0.0026", "100")]);
}

#[test]
fn usdm_diff_depth_as_documented() {
    let d: DepthUpdate = sonic_rs::from_str(r#"{"e":"depthUpdate","E":123456789,"T":123456788,"s":"BTCUSDT","U":157,"u":160,"pu":149,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}"#).expect("parses");
    assert_eq!(
        (d.event_time, d.transaction_time),
        (123456789, Some(123456788))
    );
    assert_eq!(
        (d.first_update_id, d.final_update_id, d.prev_final_update_id),
        (157, 160, Some(149))
    );
    assert_eq!(d.symbol, "BTCUSDT");
    assert_eq!(d.bids, vec![lv("0.0024", "10")]);
    assert_eq!(d.asks, vec![lv("0.0026", "100")]);
}

#[test]
fn book_tickers_as_documented() {
    let s: BookTicker = sonic_rs::from_str(r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#).expect("spot");
    assert_eq!(
        (s.update_id, s.event_time, s.event_type.as_deref()),
        (400900217, None, None)
    );
    assert_eq!(s.symbol, "BNBUSDT");
    assert_eq!(
        (s.bid_price.as_str(), s.bid_qty.as_str()),
        ("25.35190000", "31.21000000")
    );
    assert_eq!(
        (s.ask_price.as_str(), s.ask_qty.as_str()),
        ("25.36520000", "40.66000000")
    );
    let u: BookTicker = sonic_rs::from_str(r#"{"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#).expect("usdm");
    assert_eq!(u.event_type.as_deref(), Some("bookTicker"));
    assert_eq!(
        (u.event_time, u.transaction_time),
        (Some(1568014460893), Some(1568014460891))
    );
    assert_eq!(
        (u.update_id, u.ask_qty.as_str()),
        (400900217, "40.66000000")
    );
}

#[test]
fn agg_trades_as_documented() {
    let s: AggTrade = sonic_rs::from_str(r#"{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":1672515782136,"m":true,"M":true}"#).expect("spot");
    assert_eq!(
        (s.event_time, s.trade_time, s.agg_trade_id),
        (1672515782136, 1672515782136, 12345)
    );
    assert_eq!((s.price.as_str(), s.qty.as_str()), ("0.001", "100"));
    assert_eq!(
        (s.first_trade_id, s.last_trade_id, s.buyer_is_maker),
        (100, 105, true)
    );
    assert_eq!(s.ignore, Some(true));
    let u: AggTrade = sonic_rs::from_str(r#"{"e":"aggTrade","E":123456789,"s":"BTCUSDT","a":5933014,"p":"0.001","q":"100","f":100,"l":105,"T":123456785,"m":true}"#).expect("usdm");
    assert_eq!(
        (u.event_time, u.trade_time, u.agg_trade_id),
        (123456789, 123456785, 5933014)
    );
    assert_eq!((u.symbol.as_str(), u.ignore), ("BTCUSDT", None));
}

#[test]
fn mark_price_as_documented() {
    let m: MarkPrice = sonic_rs::from_str(r#"{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"0.00038167","T":1562306400000}"#).expect("parses");
    assert_eq!(
        (m.event_type.as_str(), m.event_time),
        ("markPriceUpdate", 1562305380000)
    );
    assert_eq!(
        (m.mark_price.as_str(), m.index_price.as_str()),
        ("11794.15000000", "11784.62659091")
    );
    assert_eq!(
        (m.estimated_settle_price.as_str(), m.funding_rate.as_str()),
        ("11784.25641265", "0.00038167")
    );
    assert_eq!(m.next_funding_time, 1562306400000);
}

#[test]
fn depth_snapshots_as_documented() {
    let s: DepthSnapshot = sonic_rs::from_str(r#"{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}"#).expect("spot");
    assert_eq!((s.last_update_id, s.event_time), (1027024, None));
    assert_eq!(s.bids, vec![lv("4.00000000", "431.00000000")]);
    assert_eq!(s.asks, vec![lv("4.00000200", "12.00000000")]);
    let u: DepthSnapshot = sonic_rs::from_str(r#"{"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}"#).expect("usdm");
    assert_eq!(
        (u.event_time, u.transaction_time),
        (Some(1589436922972), Some(1589436922959))
    );
}

fn corpora() -> Vec<std::path::PathBuf> {
    let root = std::env::var_os("DEPTHBOOK_REAL_BINANCE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/real-binance")
        });
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("messages.jsonl").is_file())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .to_owned()
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn levels(v: &Value, k: &str) -> Vec<[String; 2]> {
    v[k].as_array()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .iter()
        .map(|l| lv(l[0].as_str().expect("price"), l[1].as_str().expect("qty")))
        .collect()
}

fn e8(s: &str) -> i64 {
    parse_e8(s).unwrap_or_else(|e| panic!("{e}"))
}

/// One recorded payload through the shared types, its fields against serde_json's reading.
fn check_payload(raw: &str, v: &Value) {
    match v.get("e").and_then(Value::as_str) {
        Some("depthUpdate") => {
            let d: DepthUpdate = sonic_rs::from_str(raw).expect("depth");
            let e: e8wire::DepthUpdate = sonic_rs::from_str(raw).expect("depth in e8");
            assert_eq!(e.bids.0, parse_levels(&d.bids).expect("exact"));
            assert_eq!(e.asks.0, parse_levels(&d.asks).expect("exact"));
            assert_eq!(
                (e.event_time, e.first_update_id, e.final_update_id),
                (d.event_time, d.first_update_id, d.final_update_id)
            );
            assert_eq!(e.prev_final_update_id, d.prev_final_update_id);
            assert_eq!(d.event_time, n(v, "E"));
            assert_eq!(d.symbol, s(v, "s"));
            assert_eq!(
                (d.first_update_id, d.final_update_id),
                (n(v, "U"), n(v, "u"))
            );
            assert_eq!(d.prev_final_update_id, v.get("pu").and_then(Value::as_u64));
            assert_eq!(d.transaction_time, v.get("T").and_then(Value::as_u64));
            assert_eq!((d.bids, d.asks), (levels(v, "b"), levels(v, "a")));
        }
        Some("aggTrade") => {
            let t: AggTrade = sonic_rs::from_str(raw).expect("aggTrade");
            let e: e8wire::AggTrade = sonic_rs::from_str(raw).expect("aggTrade in e8");
            assert_eq!((e.price.0, e.qty.0), (e8(&t.price), e8(&t.qty)));
            assert_eq!(
                (e.agg_trade_id, e.first_trade_id, e.last_trade_id),
                (t.agg_trade_id, t.first_trade_id, t.last_trade_id)
            );
            assert_eq!(
                (e.trade_time, e.event_time, e.buyer_is_maker),
                (t.trade_time, t.event_time, t.buyer_is_maker)
            );
            assert_eq!(
                (t.agg_trade_id, t.first_trade_id, t.last_trade_id),
                (n(v, "a"), n(v, "f"), n(v, "l"))
            );
            assert_eq!((t.price, t.qty), (s(v, "p"), s(v, "q")));
            assert_eq!((t.trade_time, t.event_time), (n(v, "T"), n(v, "E")));
            assert_eq!(t.buyer_is_maker, v["m"].as_bool().expect("m"));
        }
        Some("bookTicker") | None => {
            let b: BookTicker = sonic_rs::from_str(raw).expect("bookTicker");
            let e: e8wire::BookTicker = sonic_rs::from_str(raw).expect("bookTicker in e8");
            assert_eq!(
                (e.bid_price.0, e.bid_qty.0, e.ask_price.0, e.ask_qty.0),
                (
                    e8(&b.bid_price),
                    e8(&b.bid_qty),
                    e8(&b.ask_price),
                    e8(&b.ask_qty)
                )
            );
            assert_eq!((e.update_id, e.event_time), (b.update_id, b.event_time));
            assert_eq!((b.update_id, b.symbol.clone()), (n(v, "u"), s(v, "s")));
            assert_eq!((b.bid_price, b.bid_qty), (s(v, "b"), s(v, "B")));
            assert_eq!((b.ask_price, b.ask_qty), (s(v, "a"), s(v, "A")));
            assert_eq!(b.event_time, v.get("E").and_then(Value::as_u64));
        }
        Some(other) => panic!("unexpected event type {other}"),
    }
}

#[test]
fn every_recorded_message_and_snapshot_reads_as_serde_json_reads_it() {
    let dirs = corpora();
    if dirs.is_empty() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"skipped: no real Binance recordings at ../shared/real-binance (every_recorded_message_and_snapshot_reads_as_serde_json_reads_it)\n",
        );
        return;
    }
    let mut lines = 0;
    for dir in dirs {
        let body = std::fs::read_to_string(dir.join("messages.jsonl")).expect("messages");
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("json");
            match v.get("data") {
                Some(data) => check_payload(&serde_json::to_string(data).expect("re-encode"), data),
                None => check_payload(line, &v),
            }
            lines += 1;
        }
        for snap in std::fs::read_dir(dir.join("snapshots"))
            .expect("snapshots")
            .flatten()
        {
            let raw = std::fs::read_to_string(snap.path()).expect("snapshot");
            let v: Value = serde_json::from_str(&raw).expect("json");
            let d: DepthSnapshot = sonic_rs::from_str(&raw).expect("snapshot parses");
            assert_eq!(d.last_update_id, n(&v, "lastUpdateId"));
            assert_eq!(d.event_time, v.get("E").and_then(Value::as_u64));
            assert_eq!((d.bids, d.asks), (levels(&v, "bids"), levels(&v, "asks")));
        }
    }
    assert!(lines > 250_000, "{lines} lines read");
}
