//! Real clients for the simulator tests: tokio-tungstenite and reqwest, every wait bounded.
#![allow(dead_code)]

use std::time::Duration;

use binance::Venue;
use futures_util::{SinkExt, StreamExt};
use sim::{Sim, SimConfig, VenueConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const DEADLINE: Duration = Duration::from_secs(15);

/// A small, fast venue config for tests.
pub fn fast(venue: Venue) -> VenueConfig {
    let mut v = VenueConfig::for_venue(venue);
    v.symbols = 3;
    v.levels = 300;
    v.depth_interval = Duration::from_millis(20);
    v.changes_per_event = 6.0;
    v.truth_checkpoint_every = 50;
    v.truth_checkpoints = 20;
    v
}

pub async fn start(spot: Option<VenueConfig>, usdm: Option<VenueConfig>) -> Sim {
    Sim::start(SimConfig {
        seed: 7,
        spot,
        usdm,
    })
    .await
    .expect("sim starts")
}

pub async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

/// The next text frame, or None when the connection closed. Panics past the deadline.
pub async fn next_text(ws: &mut Ws) -> Option<String> {
    let fut = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) => return Some(t.to_string()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("a message within the deadline")
}

/// Reads until the server closes; returns the close code. Panics past the deadline.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    let fut = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("closed within the deadline")
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.expect("send");
}

/// Waits until `cond` holds, polling; panics past the deadline with `what`.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn get_u64(v: &sonic_rs::Value, key: &str) -> u64 {
    use sonic_rs::JsonValueTrait;
    v.get(key)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("{key} in {v:?}"))
}

/// GETs `url` and reads the body as a REST depth snapshot. Panics on any failure.
pub async fn get_snapshot(url: &str) -> binance::wire::DepthSnapshot {
    let body = reqwest::get(url)
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    sonic_rs::from_str(&body).expect("snapshot")
}
