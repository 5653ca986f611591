//! GraphQL subscriptions at scale: many graphql-ws clients on one symbol's trades, each
//! delivery timed against the moment the same trade's NOTIFY reached a plain LISTEN connection
//! (what the API itself waits for), and against the trade's exchange time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use tokio_postgres::AsyncMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken as Stop;

use crate::procstat::percentile;

/// Unix time in milliseconds, fractional.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// One graphql-ws (graphql-transport-ws) subscription; returns once the server acknowledged
/// the connection, then records `(aggTradeId, received at)` for every delivery until stopped.
pub async fn subscribe(
    ws_url: &str,
    query: &str,
    stop: Stop,
) -> Result<tokio::task::JoinHandle<Vec<(i64, f64)>>> {
    let mut req = ws_url.into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().context("header")?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    ws.send(Message::Text(r#"{"type":"connection_init"}"#.into()))
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("connection_ack") => break,
            Ok(Some(Ok(_))) => continue,
            other => bail!("no connection_ack: {other:?}"),
        }
    }
    let sub = sonic_rs::to_string(&sonic_rs::json!({
        "id": "1", "type": "subscribe", "payload": {"query": query}
    }))?;
    ws.send(Message::Text(sub.into())).await?;
    Ok(tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => break,
                m = ws.next() => match m {
                    Some(Ok(m)) => m,
                    _ => break,
                },
            };
            let at = now_ms();
            if let Message::Text(t) = msg {
                if let Some(id) = agg_trade_id(t.as_str()) {
                    got.push((id, at));
                }
            }
        }
        let _ = ws.close(None).await;
        got
    }))
}

/// The `aggTradeId` of a `next` message of the trades subscription.
fn agg_trade_id(text: &str) -> Option<i64> {
    let v: sonic_rs::Value = sonic_rs::from_str(text).ok()?;
    let id = v
        .pointer(&sonic_rs::pointer![
            "payload",
            "data",
            "trades",
            "aggTradeId"
        ])?
        .as_str()?
        .parse()
        .ok()?;
    Some(id)
}

/// What a plain LISTEN saw: trade id → (NOTIFY received, exchange time), Unix ms.
type Seen = Arc<Mutex<HashMap<i64, (f64, f64)>>>;

async fn listen(url: &str, instrument_id: i32) -> Result<(tokio_postgres::Client, Seen)> {
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            let AsyncMessage::Notification(n) = m else {
                continue;
            };
            let at = now_ms();
            let Ok(v) = sonic_rs::from_str::<sonic_rs::Value>(n.payload()) else {
                continue;
            };
            if v.get("instrument_id").and_then(|i| i.as_i64()) != Some(i64::from(instrument_id)) {
                continue;
            }
            let Some(trades) = v.get("trades").and_then(|t| t.as_array()) else {
                continue;
            };
            let Ok(mut seen) = sink.lock() else { return };
            for t in trades.iter() {
                if let (Some(id), Some(time)) = (
                    t.get("id").and_then(|i| i.as_i64()),
                    t.get("time").and_then(|i| i.as_f64()),
                ) {
                    seen.insert(id, (at, time));
                }
            }
        }
    });
    client.batch_execute("LISTEN depthbook_trades").await?;
    Ok((client, seen))
}

#[derive(Debug, Clone, Default)]
pub struct Fanout {
    pub clients: usize,
    pub window_secs: f64,
    pub trades_notified: usize,
    /// Deliveries received / (trades notified × clients).
    pub delivered_share: f64,
    pub deliveries: usize,
    /// NOTIFY seen by a plain LISTEN → the client has the message (ms).
    pub fanout_p50: f64,
    pub fanout_p99: f64,
    pub fanout_max: f64,
    /// Exchange event time → the client has the message (ms).
    pub end_to_end_p50: f64,
    pub end_to_end_p99: f64,
    pub cpu_graphql: f64,
    pub peak_rss_graphql: u64,
}

/// `clients` subscribers to `symbol`'s trades for `window`.
pub async fn run(
    db_url: &str,
    api: std::net::SocketAddr,
    graphql_pid: i32,
    instrument_id: i32,
    symbol: &str,
    clients: usize,
    window: Duration,
) -> Result<Fanout> {
    let ws_url = format!("ws://{api}/graphql/ws");
    let query = format!("subscription {{ trades(symbol: \"{symbol}\") {{ aggTradeId }} }}");
    let stop = Stop::default();
    let mut handles = Vec::with_capacity(clients);
    // A few at a time: a burst of 1000 handshakes is a connection storm, not steady fan-out.
    for chunk in (0..clients).collect::<Vec<_>>().chunks(50) {
        let batch = chunk
            .iter()
            .map(|_| subscribe(&ws_url, &query, stop.clone()));
        for h in futures_util::future::join_all(batch).await {
            handles.push(h.context("subscribing")?);
        }
    }
    // Every subscription has reached the server's hub once a delivery arrives after this.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_listener, seen) = listen(db_url, instrument_id).await?;
    let cpu = crate::procstat::CpuWindow::start(graphql_pid, false)?;
    let started = now_ms();
    tokio::time::sleep(window).await;
    let ended = now_ms();
    let cpu_graphql = cpu.percent()?;
    // Let deliveries of the last notified trades arrive before stopping the clients.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let mut fan = Vec::new();
    let mut e2e = Vec::new();
    let seen: HashMap<i64, (f64, f64)> = seen
        .lock()
        .map(|s| s.clone())
        .map_err(|_| anyhow::anyhow!("listener poisoned"))?;
    let in_window: HashMap<i64, (f64, f64)> = seen
        .into_iter()
        .filter(|(_, (at, _))| *at >= started && *at < ended)
        .collect();
    for h in handles {
        for (id, at) in h.await? {
            if let Some((notified, time)) = in_window.get(&id) {
                fan.push(at - notified);
                e2e.push(at - time);
            }
        }
    }
    fan.sort_by(f64::total_cmp);
    e2e.sort_by(f64::total_cmp);
    let p = |v: &[f64], q| percentile(v, q).unwrap_or(0.0);
    Ok(Fanout {
        clients,
        window_secs: (ended - started) / 1000.0,
        trades_notified: in_window.len(),
        delivered_share: fan.len() as f64 / (in_window.len() * clients).max(1) as f64,
        deliveries: fan.len(),
        fanout_p50: p(&fan, 50.0),
        fanout_p99: p(&fan, 99.0),
        fanout_max: fan.last().copied().unwrap_or(0.0),
        end_to_end_p50: p(&e2e, 50.0),
        end_to_end_p99: p(&e2e, 99.0),
        cpu_graphql,
        peak_rss_graphql: crate::procstat::peak_rss(graphql_pid)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trade_id_is_read_from_next_messages_only() {
        let next = r#"{"id":"1","type":"next","payload":{"data":{"trades":{"aggTradeId":"1234567890123"}}}}"#;
        assert_eq!(agg_trade_id(next), Some(1_234_567_890_123));
        assert_eq!(agg_trade_id(r#"{"type":"ping"}"#), None);
        assert_eq!(agg_trade_id("not json"), None);
    }
}
