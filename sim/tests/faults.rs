//! Every fault, observed the way a collector would observe it.

mod common;

use std::time::{Duration, Instant};

use binance::units::parse_e8;
use binance::wire::{DepthSnapshot, DepthUpdate};
use binance::Venue;
use common::*;
use sim::Fault;

async fn depth(ws: &mut Ws) -> Result<DepthUpdate, String> {
    let t = next_text(ws).await.expect("open");
    sonic_rs::from_str(&t).map_err(|_| t)
}

async fn spot_btc() -> (sim::Sim, Ws) {
    let sim = start(Some(fast(Venue::Spot)), None).await;
    let url = format!(
        "{}/ws/btcusdt@depth@100ms",
        sim.spot.as_ref().expect("spot").ws_url()
    );
    let mut ws = connect(&url).await;
    depth(&mut ws).await.expect("first event");
    (sim, ws)
}

#[tokio::test]
async fn dropped_depth_events_leave_a_gap_of_exactly_those_events() {
    let (sim, mut ws) = spot_btc().await;
    let h = sim.spot.as_ref().expect("spot");
    let mut prev = depth(&mut ws).await.expect("event").final_update_id;
    h.inject(Fault::DropDepth {
        symbol: Some("BTCUSDT".into()),
        count: 3,
    });
    let mut seen = 0;
    let gap = loop {
        seen += 1;
        assert!(seen < 500, "no gap seen");
        let d = depth(&mut ws).await.expect("event");
        if d.first_update_id != prev + 1 {
            break (prev + 1, d.first_update_id - 1);
        }
        prev = d.final_update_id;
    };
    assert!(gap.1 >= gap.0 + 2, "three events' ids are missing: {gap:?}");
    assert_eq!(h.state().dropped_depth_events, 3);
    // The truth still knows the book inside the gap.
    h.truth("BTCUSDT", Some(gap.1), 10)
        .expect("truth inside the gap");
    // Only one gap: the stream is contiguous afterwards.
    let mut prev = depth(&mut ws).await.expect("event").final_update_id;
    for _ in 0..20 {
        let d = depth(&mut ws).await.expect("event");
        assert_eq!(d.first_update_id, prev + 1);
        prev = d.final_update_id;
    }
}

#[tokio::test]
async fn duplicated_and_reordered_events() {
    let (sim, mut ws) = spot_btc().await;
    let h = sim.spot.as_ref().expect("spot");
    h.inject(Fault::DuplicateDepth {
        symbol: Some("BTCUSDT".into()),
        count: 1,
    });
    let mut prev = depth(&mut ws).await.expect("event");
    for i in 0.. {
        assert!(i < 500, "no duplicate seen");
        let d = depth(&mut ws).await.expect("event");
        if d == prev {
            break;
        }
        prev = d;
    }
    h.inject(Fault::ReorderDepth {
        symbol: Some("BTCUSDT".into()),
        count: 1,
    });
    let mut prev = depth(&mut ws).await.expect("event").final_update_id;
    let mut seen = 0;
    let (late, early) = loop {
        seen += 1;
        assert!(seen < 500, "no reordering seen");
        let d = depth(&mut ws).await.expect("event");
        if d.final_update_id < prev {
            break (d.final_update_id, prev);
        }
        prev = d.final_update_id;
    };
    assert!(late < early, "the held event arrives after its successor");
}

#[tokio::test]
async fn malformed_and_truncated_frames() {
    let (sim, mut ws) = spot_btc().await;
    let h = sim.spot.as_ref().expect("spot");
    h.inject(Fault::MalformedFrames {
        symbol: Some("BTCUSDT".into()),
        count: 1,
    });
    h.inject(Fault::TruncatedFrames {
        symbol: Some("BTCUSDT".into()),
        count: 1,
    });
    let mut bad = Vec::new();
    for i in 0.. {
        if bad.len() == 2 {
            break;
        }
        assert!(i < 500, "no bad frames seen");
        if let Err(text) = depth(&mut ws).await {
            assert!(
                sonic_rs::from_str::<sonic_rs::Value>(&text).is_err(),
                "not JSON: {text}"
            );
            bad.push(text);
        }
    }
    // Good frames follow.
    depth(&mut ws).await.expect("parses again");
}

#[tokio::test]
async fn stale_and_slow_snapshots() {
    let (sim, mut ws) = spot_btc().await;
    let h = sim.spot.as_ref().expect("spot");
    let url = format!("{}/api/v3/depth?symbol=BTCUSDT&limit=50", h.rest_url());
    // Let some history build up.
    for _ in 0..20 {
        depth(&mut ws).await.expect("event");
    }
    h.inject(Fault::StaleSnapshots {
        count: 1,
        behind_events: 10,
    });
    let stale = get_snapshot(&url).await;
    let latest = h.truth("BTCUSDT", None, 1).expect("truth").last_update_id;
    assert!(
        stale.last_update_id < latest,
        "lastUpdateId behind the stream"
    );
    let truth = h
        .truth("BTCUSDT", Some(stale.last_update_id), 50)
        .expect("truth");
    assert_eq!(
        (stale.bids, stale.asks),
        (truth.bids, truth.asks),
        "a stale snapshot is a true older book"
    );

    h.inject(Fault::SlowSnapshots {
        count: 1,
        delay_ms: 300,
    });
    let t = Instant::now();
    let r = reqwest::get(&url).await.expect("get");
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "answered after the delay"
    );
}

#[tokio::test]
async fn disconnects_and_refused_connections() {
    let sim = start(Some(fast(Venue::Spot)), None).await;
    let h = sim.spot.as_ref().expect("spot");
    let url = format!("{}/ws/btcusdt@depth@100ms", h.ws_url());
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    let _c = connect(&url).await;
    wait_for("three connections", || h.state().connections == 3).await;
    assert_eq!(h.inject(Fault::Disconnect { count: Some(2) }), 2);
    assert!(close_code(&mut a).await.is_some());
    assert!(close_code(&mut b).await.is_some());
    wait_for("one connection left", || h.state().connections == 1).await;
    assert_eq!(h.inject(Fault::Disconnect { count: None }), 1);
    wait_for("none left", || h.state().connections == 0).await;

    h.inject(Fault::RefuseConnections { for_ms: 400 });
    let err = tokio_tungstenite::connect_async(&url)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("503"), "{err}");
    // Accepted again once the window is over.
    let start = Instant::now();
    loop {
        if tokio_tungstenite::connect_async(&url).await.is_ok() {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "connections stay refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn forced_rest_errors_in_order() {
    let sim = start(None, Some(fast(Venue::Usdm))).await;
    let h = sim.usdm.as_ref().expect("usdm");
    for status in [503, 429, 418] {
        h.inject(Fault::RestErrors { status, count: 1 });
    }
    let url = format!("{}/fapi/v1/depth?symbol=BTCUSDT&limit=100", h.rest_url());
    let mut got = Vec::new();
    for _ in 0..4 {
        let r = reqwest::get(&url).await.expect("get");
        if matches!(r.status().as_u16(), 429 | 418) {
            assert!(r.headers().get("Retry-After").is_some());
        }
        got.push(r.status().as_u16());
    }
    assert_eq!(got, vec![503, 429, 418, 200]);
}

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn the_control_endpoint_over_http() {
    let sim = start(Some(fast(Venue::Spot)), None).await;
    let h = sim.spot.as_ref().expect("spot");
    let http = reqwest::Client::new();
    let base = h.rest_url();
    let r = http
        .post(format!("{base}/_control/faults"))
        .body(r#"{"kind":"drop_depth","symbol":"ETHUSDT","count":2}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/_control/faults"))
        .body(r#"{"kind":"set_fire"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let r = http
        .delete(format!("{base}/_control/faults"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);

    let r = http
        .get(format!("{base}/_control/truth?symbol=BTCUSDT&limit=5"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let t: DepthSnapshot = sonic_rs::from_str(&r.text().await.expect("body")).expect("truth");
    assert_eq!(t.bids.len(), 5);
    assert!(parse_e8(&t.bids[0][0]).expect("p") < parse_e8(&t.asks[0][0]).expect("p"));
    let r = http
        .get(format!("{base}/_control/truth?symbol=BTCUSDT&update_id=1"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 422, "outside the retained window");
    let r = http
        .get(format!("{base}/_control/truth?symbol=NOPE"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!("{base}/_control/truth?symbol=BTCUSDT&update_id=x"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{base}/_control/state"))
        .send()
        .await
        .expect("get");
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("\"symbol\":\"BTCUSDT\""));

    // Delisting: exchangeInfo says so and the symbol falls silent.
    let r = http
        .post(format!(
            "{base}/_control/status?symbol=BNBUSDT&status=BREAK"
        ))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 204);
    let info = http
        .get(format!("{base}/api/v3/exchangeInfo"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(
        info.contains(r#""symbol":"BNBUSDT","status":"BREAK""#),
        "{info}"
    );
    let frozen = h.truth("BNBUSDT", None, 1).expect("truth").last_update_id;
    let mut ws = connect(&format!("{}/ws/ethusdt@depth@100ms", h.ws_url())).await;
    for _ in 0..20 {
        depth(&mut ws).await.expect("other symbols go on");
    }
    assert_eq!(
        h.truth("BNBUSDT", None, 1).expect("truth").last_update_id,
        frozen
    );
}
