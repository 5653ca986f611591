//! Binance's protocol rules, checked through real WebSocket and HTTP clients.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use binance::units::parse_e8;
use binance::wire::{DepthSnapshot, DepthUpdate, ExchangeInfo};
use binance::Venue;
use common::*;
use sonic_rs::JsonValueTrait;

#[tokio::test]
async fn combined_streams_wrap_payloads_and_spot_depth_has_spot_fields() {
    let sim = start(Some(fast(Venue::Spot)), None).await;
    let h = sim.spot.as_ref().expect("spot");
    let mut ws = connect(&format!(
        "{}/stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade/btcusdt@bookTicker",
        h.ws_url()
    ))
    .await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 3 {
        let text = next_text(&mut ws).await.expect("open");
        let v: sonic_rs::Value = sonic_rs::from_str(&text).expect("json");
        let stream = v
            .get("stream")
            .and_then(|s| s.as_str())
            .expect("stream")
            .to_owned();
        let data = v.get("data").expect("data");
        match stream.as_str() {
            "btcusdt@depth@100ms" => {
                let d: DepthUpdate = sonic_rs::from_str(&data.to_string()).expect("depth");
                assert_eq!(d.event_type, "depthUpdate");
                assert!(
                    d.transaction_time.is_none() && d.prev_final_update_id.is_none(),
                    "spot has no T/pu"
                );
                assert!(d.first_update_id <= d.final_update_id);
                for [p, q] in d.bids.iter().chain(&d.asks) {
                    assert_eq!(
                        p.split('.').nth(1).map(str::len),
                        Some(8),
                        "spot prints 8 decimals: {p}"
                    );
                    parse_e8(p).expect("price");
                    parse_e8(q).expect("qty");
                }
            }
            "btcusdt@aggTrade" => {
                assert_eq!(data.get("e").and_then(|e| e.as_str()), Some("aggTrade"));
                for k in ["E", "a", "f", "l", "T"] {
                    get_u64(data, k);
                }
                assert!(data.get("m").and_then(|m| m.as_bool()).is_some());
            }
            "btcusdt@bookTicker" => {
                assert!(data.get("e").is_none(), "spot bookTicker has no event type");
                get_u64(data, "u");
                for k in ["b", "B", "a", "A"] {
                    assert!(data.get(k).and_then(|x| x.as_str()).is_some(), "{k}");
                }
            }
            other => panic!("unexpected stream {other}"),
        }
        seen.insert(stream);
    }
}

#[tokio::test]
async fn raw_streams_send_bare_payloads() {
    let sim = start(Some(fast(Venue::Spot)), None).await;
    let h = sim.spot.as_ref().expect("spot");
    let mut ws = connect(&format!("{}/ws/ethusdt@depth@100ms", h.ws_url())).await;
    let text = next_text(&mut ws).await.expect("open");
    let d: DepthUpdate = sonic_rs::from_str(&text).expect("a bare depth payload");
    assert_eq!(d.symbol, "ETHUSDT");
}

#[tokio::test]
async fn usdm_depth_chains_pu_to_the_previous_u() {
    let sim = start(None, Some(fast(Venue::Usdm))).await;
    let h = sim.usdm.as_ref().expect("usdm");
    let mut ws = connect(&format!("{}/public/ws/btcusdt@depth@100ms", h.ws_url())).await;
    let mut prev: Option<u64> = None;
    let mut jumps = 0;
    for _ in 0..30 {
        let d: DepthUpdate =
            sonic_rs::from_str(&next_text(&mut ws).await.expect("open")).expect("depth");
        assert!(d.transaction_time.is_some());
        let pu = d.prev_final_update_id.expect("USD-M depth has pu");
        if let Some(p) = prev {
            assert_eq!(pu, p, "pu is the previous event's u");
            if d.first_update_id != p + 1 {
                jumps += 1;
            }
        }
        prev = Some(d.final_update_id);
    }
    assert!(
        jumps > 0,
        "USD-M update ids are not contiguous, so only pu proves continuity"
    );
}

#[tokio::test]
async fn a_usdm_stream_on_the_wrong_path_stays_silent() {
    let sim = start(None, Some(fast(Venue::Usdm))).await;
    let h = sim.usdm.as_ref().expect("usdm");
    // /market carries aggTrade and markPrice; depth asked there must never arrive.
    let mut ws = connect(&format!(
        "{}/market/stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade/btcusdt@markPrice@1s",
        h.ws_url()
    ))
    .await;
    let (mut trades, mut marks) = (0, 0);
    while trades < 10 || marks < 1 {
        let text = next_text(&mut ws).await.expect("open");
        assert!(!text.contains("depthUpdate"), "depth on /market: {text}");
        if text.contains("\"aggTrade\"") {
            trades += 1;
        }
        if text.contains("markPriceUpdate") {
            marks += 1;
        }
    }
    // And /public serves depth but not aggTrade.
    let mut ws = connect(&format!(
        "{}/public/stream?streams=btcusdt@aggTrade/btcusdt@depth@100ms",
        h.ws_url()
    ))
    .await;
    for _ in 0..20 {
        let text = next_text(&mut ws).await.expect("open");
        assert!(
            text.contains("depthUpdate"),
            "only depth on /public: {text}"
        );
    }
}

#[tokio::test]
async fn live_subscriptions_reply_with_their_id() {
    let sim = start(Some(fast(Venue::Spot)), None).await;
    let h = sim.spot.as_ref().expect("spot");
    let mut ws = connect(&format!("{}/ws", h.ws_url())).await;
    send(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@aggTrade","btcusdt@bookTicker"],"id":1}"#,
    )
    .await;
    let mut got_reply = false;
    let mut got_data = false;
    while !(got_reply && got_data) {
        let t = next_text(&mut ws).await.expect("open");
        if t == r#"{"result":null,"id":1}"# {
            got_reply = true;
        } else if t.contains("\"s\":\"BTCUSDT\"") {
            got_data = true;
        }
    }
    send(
        &mut ws,
        r#"{"method":"UNSUBSCRIBE","params":["btcusdt@bookTicker"],"id":2}"#,
    )
    .await;
    send(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#).await;
    let mut replies = Vec::new();
    while replies.len() < 2 {
        let t = next_text(&mut ws).await.expect("open");
        if t.contains("\"id\":") {
            replies.push(t);
        }
    }
    assert_eq!(
        replies,
        vec![
            r#"{"result":null,"id":2}"#.to_owned(),
            r#"{"result":["btcusdt@aggTrade"],"id":3}"#.to_owned()
        ]
    );
}

#[tokio::test]
async fn too_many_incoming_messages_close_the_connection() {
    let sim = start(Some(fast(Venue::Spot)), None).await;
    let h = sim.spot.as_ref().expect("spot");
    let mut ws = connect(&format!("{}/ws", h.ws_url())).await;
    for i in 0..=binance::rules::SPOT_MAX_INCOMING_PER_SECOND {
        send(
            &mut ws,
            &format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}"#),
        )
        .await;
    }
    assert_eq!(close_code(&mut ws).await, Some(1008));
}

#[tokio::test]
async fn more_than_1024_streams_close_the_connection() {
    let sim = start(Some(fast(Venue::Spot)), None).await;
    let h = sim.spot.as_ref().expect("spot");
    let mut ws = connect(&format!("{}/ws", h.ws_url())).await;
    let names: Vec<String> = (0..=binance::rules::MAX_STREAMS_PER_CONNECTION)
        .map(|i| format!("s{i}usdt@aggTrade"))
        .collect();
    send(
        &mut ws,
        &format!(
            r#"{{"method":"SUBSCRIBE","params":{},"id":1}}"#,
            sonic_rs::to_string(&names).expect("json")
        ),
    )
    .await;
    assert_eq!(close_code(&mut ws).await, Some(1008));
    // 1024 exactly is fine.
    let mut ws = connect(&format!("{}/ws", h.ws_url())).await;
    send(
        &mut ws,
        &format!(
            r#"{{"method":"SUBSCRIBE","params":{},"id":1}}"#,
            sonic_rs::to_string(&names[..1024]).expect("json")
        ),
    )
    .await;
    loop {
        let t = next_text(&mut ws).await.expect("still open");
        if t.contains("\"id\":1") {
            assert_eq!(t, r#"{"result":null,"id":1}"#);
            break;
        }
    }
}

#[tokio::test]
async fn server_pings_and_a_client_that_never_pongs_is_dropped() {
    let mut cfg = fast(Venue::Spot);
    // Pongs count against the incoming-message limit too, so keep pings under 5/s.
    cfg.ping_interval = Duration::from_millis(250);
    cfg.pong_timeout = Duration::from_millis(600);
    let sim = start(Some(cfg), None).await;
    let h = sim.spot.as_ref().expect("spot");

    // A client that reads (tungstenite answers pings while reading) stays connected past
    // several pong timeouts.
    let mut alive = connect(&format!("{}/ws/btcusdt@depth@100ms", h.ws_url())).await;
    let mut pings = 0;
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        match tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(&mut alive))
            .await
            .expect("message")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None | Some(Err(_)) => {
                panic!("a ponging client was dropped")
            }
            _ => {}
        }
    }
    assert!(pings >= 3, "server pings on its interval ({pings})");

    // A client that never reads never pongs: the server drops it.
    let _silent = connect(&format!("{}/ws/btcusdt@depth@100ms", h.ws_url())).await;
    wait_for("two connections", || h.state().connections == 2).await;
    wait_for("the silent client to be dropped", || {
        h.state().connections == 1
    })
    .await;
}

#[tokio::test]
async fn connections_end_at_their_maximum_lifetime() {
    let mut cfg = fast(Venue::Usdm);
    cfg.max_connection_lifetime = Duration::from_millis(300);
    let sim = start(None, Some(cfg)).await;
    let h = sim.usdm.as_ref().expect("usdm");
    let mut ws = connect(&format!("{}/public/ws/btcusdt@depth@100ms", h.ws_url())).await;
    assert_eq!(close_code(&mut ws).await, Some(1000));
}

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn rest_endpoints_weights_and_errors() {
    let mut spot = fast(Venue::Spot);
    spot.weight_limit = 400;
    let sim = start(Some(spot), Some(fast(Venue::Usdm))).await;
    let h = sim.spot.as_ref().expect("spot");
    let http = reqwest::Client::new();
    let used = |r: &reqwest::Response| -> u32 {
        r.headers()
            .get("X-MBX-USED-WEIGHT-1M")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("weight header")
    };

    let r = http
        .get(format!("{}/api/v3/exchangeInfo", h.rest_url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(used(&r), 20);
    let info: ExchangeInfo =
        sonic_rs::from_str(&r.text().await.expect("body")).expect("exchangeInfo");
    assert_eq!(info.symbols.len(), 3);
    assert_eq!(info.symbols[0].tick_size(), Some("0.01000000"));
    assert_eq!(info.rate_limits[0].limit, 400);

    let r = http
        .get(format!(
            "{}/api/v3/depth?symbol=BTCUSDT&limit=5000",
            h.rest_url()
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(used(&r), 20 + 250);
    let snap: DepthSnapshot = sonic_rs::from_str(&r.text().await.expect("body")).expect("snapshot");
    assert!(snap.bids.len() >= 100 && snap.asks.len() >= 100);
    let best_bid = parse_e8(&snap.bids[0][0]).expect("price");
    let best_ask = parse_e8(&snap.asks[0][0]).expect("price");
    assert!(best_bid < best_ask);
    assert!(
        snap.bids
            .windows(2)
            .all(|w| parse_e8(&w[0][0]).ok() > parse_e8(&w[1][0]).ok()),
        "bids best first"
    );

    let r = http
        .get(format!("{}/api/v3/depth?symbol=NOPE", h.rest_url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"code":-1121,"msg":"Invalid symbol."}"#
    );
    let r = http
        .get(format!("{}/api/v3/depth", h.rest_url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("body").contains("-1102"));
    let r = http
        .get(format!(
            "{}/api/v3/ticker/24hr?symbol=ETHUSDT",
            h.rest_url()
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);

    // 20 + 250 + 5 (NOPE, limit 100) + 2 = 277; another 5000-level snapshot would need 250.
    let r = http
        .get(format!(
            "{}/api/v3/depth?symbol=BTCUSDT&limit=5000",
            h.rest_url()
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 429);
    let retry: u64 = r
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry));
    assert!(r.text().await.expect("body").contains("-1003"));
    // Ignoring the 429 earns a ban.
    let r = http
        .get(format!("{}/api/v3/ping", h.rest_url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 418);
    assert!(r.headers().get("Retry-After").is_some());

    // USD-M has its own paths, weights and shapes.
    let u = sim.usdm.as_ref().expect("usdm");
    let r = http
        .get(format!(
            "{}/fapi/v1/depth?symbol=BTCUSDT&limit=1000",
            u.rest_url()
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(used(&r), 20);
    let snap: DepthSnapshot = sonic_rs::from_str(&r.text().await.expect("body")).expect("snapshot");
    assert!(snap.event_time.is_some() && snap.transaction_time.is_some());
    assert!(snap.bids.len() <= 1000);
    let r = http
        .get(format!("{}/fapi/v1/exchangeInfo", u.rest_url()))
        .send()
        .await
        .expect("get");
    let info: ExchangeInfo =
        sonic_rs::from_str(&r.text().await.expect("body")).expect("exchangeInfo");
    assert_eq!(info.symbols[0].contract_type.as_deref(), Some("PERPETUAL"));
    assert_eq!(
        info.symbols[0].tick_size(),
        Some("0.01"),
        "USD-M prints the tick's precision"
    );
}

/// Binance's documented procedure, as a collector runs it, against the simulator's truth.
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn sync_and_compare(sim: &sim::Sim, venue: Venue) {
    let h = sim.venue(venue).expect("venue");
    let (ws_path, rest) = match venue {
        Venue::Spot => (
            "/ws/bnbusdt@depth@100ms",
            "/api/v3/depth?symbol=BNBUSDT&limit=5000",
        ),
        Venue::Usdm => (
            "/public/ws/bnbusdt@depth@100ms",
            "/fapi/v1/depth?symbol=BNBUSDT&limit=1000",
        ),
    };
    let mut ws = connect(&format!("{}{}", h.ws_url(), ws_path)).await;
    let first: DepthUpdate =
        sonic_rs::from_str(&next_text(&mut ws).await.expect("open")).expect("depth");
    let mut buffered = vec![first];
    let snap = get_snapshot(&format!("{}{}", h.rest_url(), rest)).await;
    assert!(
        snap.last_update_id >= buffered[0].first_update_id,
        "snapshot is not older than the first buffered event"
    );
    let mut bids: BTreeMap<i64, i64> = snap
        .bids
        .iter()
        .map(|[p, q]| (parse_e8(p).expect("p"), parse_e8(q).expect("q")))
        .collect();
    let mut asks: BTreeMap<i64, i64> = snap
        .asks
        .iter()
        .map(|[p, q]| (parse_e8(p).expect("p"), parse_e8(q).expect("q")))
        .collect();
    let mut book_id = snap.last_update_id;
    let mut applied = 0;
    while applied < 40 {
        let d = match buffered.pop() {
            Some(d) => d,
            None => sonic_rs::from_str(&next_text(&mut ws).await.expect("open")).expect("depth"),
        };
        if d.final_update_id <= book_id {
            continue;
        }
        match venue {
            Venue::Spot => assert!(d.first_update_id <= book_id + 1, "no gap"),
            Venue::Usdm if applied == 0 => assert!(
                d.first_update_id <= book_id && book_id <= d.final_update_id
                    || d.prev_final_update_id == Some(book_id)
            ),
            Venue::Usdm => assert_eq!(d.prev_final_update_id, Some(book_id), "pu chains"),
        }
        for [p, q] in &d.bids {
            let (p, q) = (parse_e8(p).expect("p"), parse_e8(q).expect("q"));
            if q == 0 {
                bids.remove(&p);
            } else {
                bids.insert(p, q);
            }
        }
        for [p, q] in &d.asks {
            let (p, q) = (parse_e8(p).expect("p"), parse_e8(q).expect("q"));
            if q == 0 {
                asks.remove(&p);
            } else {
                asks.insert(p, q);
            }
        }
        book_id = d.final_update_id;
        applied += 1;
    }
    // The snapshot was cut at its limit; compare the levels a collector can know: the top 100.
    let truth = h
        .truth("BNBUSDT", Some(book_id), 100)
        .expect("truth in window");
    assert_eq!(truth.last_update_id, book_id);
    let mine: Vec<(i64, i64)> = bids.iter().rev().take(100).map(|(p, q)| (*p, *q)).collect();
    let theirs: Vec<(i64, i64)> = truth
        .bids
        .iter()
        .map(|[p, q]| (parse_e8(p).expect("p"), parse_e8(q).expect("q")))
        .collect();
    assert_eq!(mine, theirs, "bids equal the truth");
    let mine: Vec<(i64, i64)> = asks.iter().take(100).map(|(p, q)| (*p, *q)).collect();
    let theirs: Vec<(i64, i64)> = truth
        .asks
        .iter()
        .map(|[p, q]| (parse_e8(p).expect("p"), parse_e8(q).expect("q")))
        .collect();
    assert_eq!(mine, theirs, "asks equal the truth");
}

#[tokio::test]
async fn snapshot_plus_diffs_reproduce_the_true_book_on_both_venues() {
    let sim = start(Some(fast(Venue::Spot)), Some(fast(Venue::Usdm))).await;
    sync_and_compare(&sim, Venue::Spot).await;
    sync_and_compare(&sim, Venue::Usdm).await;
}

/// Tickers and trades happen through a step's interval: within one depth step they carry
/// increasing event times, not all the step's end.
#[tokio::test]
async fn tickers_and_trades_of_one_step_carry_their_own_event_times() {
    let mut cfg = fast(Venue::Usdm);
    cfg.depth_interval = Duration::from_millis(100);
    let sim = start(None, Some(cfg)).await;
    let h = sim.usdm.as_ref().expect("usdm");
    let mut ws = connect(&format!(
        "{}/public/stream?streams=btcusdt@bookTicker",
        h.ws_url()
    ))
    .await;
    let mut times = Vec::new();
    while times.len() < 200 {
        let text = next_text(&mut ws).await.expect("open");
        let v: sonic_rs::Value = sonic_rs::from_str(&text).expect("json");
        times.push(get_u64(v.get("data").expect("data"), "E"));
    }
    let distinct: std::collections::BTreeSet<u64> = times.iter().copied().collect();
    assert!(
        distinct.len() * 10 >= times.len() * 9,
        "{} distinct event times in {} tickers",
        distinct.len(),
        times.len()
    );
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
}

/// Trades and ticker changes are sent as they happen, in slices of a depth interval, not held
/// for the depth event: a message reaches its client soon after its own event time.
#[tokio::test]
async fn tickers_and_trades_are_sent_when_they_happen() {
    let interval = Duration::from_millis(100);
    let mut cfg = fast(Venue::Usdm);
    cfg.depth_interval = interval;
    let sim = start(None, Some(cfg)).await;
    let h = sim.usdm.as_ref().expect("usdm");
    let mut ws = connect(&format!(
        "{}/public/stream?streams=btcusdt@bookTicker/btcusdt@aggTrade",
        h.ws_url()
    ))
    .await;
    let mut lags = Vec::new();
    while lags.len() < 200 {
        let text = next_text(&mut ws).await.expect("open");
        let received = sim::venue::now_ms();
        let v: sonic_rs::Value = sonic_rs::from_str(&text).expect("json");
        let event = get_u64(v.get("data").expect("data"), "E");
        lags.push(received.saturating_sub(event));
    }
    lags.sort_unstable();
    let median = lags[lags.len() / 2];
    // Held to the depth event's end, the median message would wait half an interval.
    assert!(
        median * 4 <= interval.as_millis() as u64,
        "median wait from event time to client {median} ms (all: {lags:?})"
    );
}

/// A consumer that stops reading is cut once it falls the buffer behind, and the cut is
/// counted: the one way the simulator loses frames without an injected fault.
#[tokio::test]
async fn a_consumer_that_stops_reading_is_cut_and_counted() {
    let mut cfg = fast(Venue::Spot);
    cfg.symbols = 50;
    cfg.rate_multiplier = 20.0;
    cfg.broadcast_capacity = 64;
    let sim = start(Some(cfg), None).await;
    let h = sim.spot.as_ref().expect("spot");
    let streams: Vec<String> = h
        .symbols()
        .iter()
        .map(|s| format!("{}@depth@100ms", s.to_ascii_lowercase()))
        .collect();
    let reader = connect(&format!(
        "{}/stream?streams={}",
        h.ws_url(),
        streams.join("/")
    ))
    .await;
    assert_eq!(h.state().slow_consumers_cut, 0, "nobody cut yet");
    // `reader` is never read: the socket's buffers fill, then its broadcast queue.
    wait_for("the idle consumer to be cut", || {
        h.state().slow_consumers_cut >= 1
    })
    .await;
    drop(reader);
}
