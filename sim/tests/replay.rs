//! Replay serves recorded messages byte for byte and keeps REST and the truth in step.

mod common;

use binance::Venue;
use common::*;

#[tokio::test]
async fn replays_a_recording() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("snapshots")).expect("mkdir");
    std::fs::write(
        dir.path().join("snapshots/BTCUSDT.json"),
        r#"{"lastUpdateId":100,"bids":[["67000.01000000","1.00000000"],["67000.00000000","2.00000000"]],"asks":[["67000.02000000","0.50000000"]]}"#,
    )
    .expect("write");
    let depth = [
        r#"{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT","U":95,"u":100,"b":[["1.00000000","1.00000000"]],"a":[]}"#,
        r#"{"e":"depthUpdate","E":1700000000100,"s":"BTCUSDT","U":101,"u":103,"b":[["67000.01000000","0.00000000"]],"a":[["67000.03000000","4.00000000"]]}"#,
        r#"{"e":"depthUpdate","E":1700000000200,"s":"BTCUSDT","U":104,"u":104,"b":[["66999.99000000","3.00000000"]],"a":[]}"#,
    ];
    let ticker = r#"{"u":104,"s":"BTCUSDT","b":"67000.00000000","B":"2.00000000","a":"67000.02000000","A":"0.50000000"}"#;
    let mut lines: Vec<String> = depth
        .iter()
        .map(|d| format!(r#"{{"stream":"btcusdt@depth@100ms","data":{d}}}"#))
        .collect();
    lines.push(ticker.to_owned());
    std::fs::write(dir.path().join("messages.jsonl"), lines.join("\n")).expect("write");

    let mut cfg = fast(Venue::Spot);
    cfg.replay = Some(sim::replay::ReplayConfig {
        dir: dir.path().to_owned(),
        speed: 0.0,
    });
    let sim = start(Some(cfg), None).await;
    let h = sim.spot.as_ref().expect("spot");
    assert_eq!(h.symbols(), vec!["BTCUSDT".to_owned()]);

    let mut ws = connect(&format!(
        "{}/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker",
        h.ws_url()
    ))
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_text(&mut ws).await.expect("open"));
    }
    let mut expected = lines.clone();
    expected[3] = format!(r#"{{"stream":"btcusdt@bookTicker","data":{ticker}}}"#);
    assert_eq!(got, expected, "byte for byte, combined-wrapped");

    let truth = h.truth("BTCUSDT", None, 10).expect("truth");
    assert_eq!(truth.last_update_id, 104);
    let snap = get_snapshot(&format!("{}/api/v3/depth?symbol=BTCUSDT", h.rest_url())).await;
    assert_eq!(snap.last_update_id, 104);
    let want = vec![
        ["67000.00000000".to_owned(), "2.00000000".to_owned()],
        ["66999.99000000".to_owned(), "3.00000000".to_owned()],
    ];
    assert_eq!(
        snap.bids, want,
        "the event before the snapshot was skipped, the rest applied"
    );
    assert_eq!(snap.asks.len(), 2);
    assert_eq!(truth.bids, snap.bids);
}

#[tokio::test]
async fn a_bad_replay_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = fast(Venue::Spot);
    cfg.replay = Some(sim::replay::ReplayConfig {
        dir: dir.path().to_owned(),
        speed: 0.0,
    });
    let err = sim::Sim::start(sim::SimConfig {
        seed: 1,
        spot: Some(cfg.clone()),
        usdm: None,
    })
    .await
    .expect_err("no snapshots");
    assert!(err.to_string().contains("snapshots"), "{err}");
    std::fs::create_dir(dir.path().join("snapshots")).expect("mkdir");
    std::fs::write(
        dir.path().join("snapshots/BTCUSDT.json"),
        r#"{"lastUpdateId":1,"bids":[],"asks":[]}"#,
    )
    .expect("write");
    std::fs::write(
        dir.path().join("messages.jsonl"),
        "{\"stream\":\"btcusdt@depth@100ms\",\"data\":{\"e\":\"depthUpdate\"}}\n",
    )
    .expect("write");
    let err = sim::Sim::start(sim::SimConfig {
        seed: 1,
        spot: Some(cfg),
        usdm: None,
    })
    .await
    .expect_err("bad line");
    assert!(err.to_string().contains("line 1"), "{err}");
}

/// Flat out (`speed` 0), the replay goes as fast as its slowest subscriber reads: one that
/// reads slower than the replay could send gets every frame, in order, and is never cut, though
/// the recording is many times the broadcast buffer.
#[tokio::test]
async fn flat_out_waits_for_the_slowest_reader() {
    let lines: Vec<String> = (0..2_000)
        .map(|u| {
            format!(r#"{{"u":{u},"s":"BTCUSDT","b":"1.00","B":"1.00","a":"2.00","A":"1.00"}}"#)
        })
        .collect();
    let snapshot = r#"{"lastUpdateId":1,"bids":[["1.00","1.00"]],"asks":[["2.00","1.00"]]}"#;
    let (_dir, sim) = flat_out(snapshot, &lines, 64).await;
    let h = sim.spot.as_ref().expect("spot");
    let mut ws = connect(&format!("{}/stream?streams=btcusdt@bookTicker", h.ws_url())).await;
    for (i, line) in lines.iter().enumerate() {
        let got = next_text(&mut ws).await.expect("the connection stays open");
        assert_eq!(
            got,
            format!(r#"{{"stream":"btcusdt@bookTicker","data":{line}}}"#)
        );
        // Slower than the replay can send: without waiting for this reader it would be cut.
        if i % 50 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    assert_eq!(h.state().slow_consumers_cut, 0);
}

/// Flat out, a symbol's first depth event waits for its first snapshot: a book keeper that asks
/// for one after buffering that event gets the book at that event, not at the recording's end,
/// and syncs on the events that follow.
#[tokio::test]
async fn flat_out_waits_for_each_book_s_first_snapshot() {
    let lines: Vec<String> = (101..=600)
        .map(|u| {
            format!(
                r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":{u},"s":"BTCUSDT","U":{u},"u":{u},"b":[["2.00","{u}.00"]],"a":[]}}}}"#
            )
        })
        .collect();
    let snapshot = r#"{"lastUpdateId":100,"bids":[["1.00","1.00"]],"asks":[["9.00","1.00"]]}"#;
    let (_dir, sim) = flat_out(snapshot, &lines, 1 << 16).await;
    let h = sim.spot.as_ref().expect("spot");
    let mut ws = connect(&format!(
        "{}/stream?streams=btcusdt@depth@100ms",
        h.ws_url()
    ))
    .await;
    assert_eq!(next_text(&mut ws).await.as_ref(), Some(&lines[0]));
    let snap = get_snapshot(&format!("{}/api/v3/depth?symbol=BTCUSDT", h.rest_url())).await;
    assert_eq!(snap.last_update_id, 101, "the book at the first event");
    for line in &lines[1..] {
        assert_eq!(next_text(&mut ws).await.as_ref(), Some(line));
    }
}

/// A recording of BTCUSDT (`snapshot`, then `lines`), served flat out by a spot venue whose
/// broadcast buffer holds `capacity` frames.
async fn flat_out(
    snapshot: &str,
    lines: &[String],
    capacity: usize,
) -> (tempfile::TempDir, sim::Sim) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("snapshots")).expect("mkdir");
    std::fs::write(dir.path().join("snapshots/BTCUSDT.json"), snapshot).expect("write");
    std::fs::write(dir.path().join("messages.jsonl"), lines.join("\n")).expect("write");
    let mut cfg = fast(Venue::Spot);
    cfg.broadcast_capacity = capacity;
    cfg.replay = Some(sim::replay::ReplayConfig {
        dir: dir.path().to_owned(),
        speed: 0.0,
    });
    let sim = start(Some(cfg), None).await;
    (dir, sim)
}
