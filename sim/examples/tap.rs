//! Connects to a venue's combined stream for the first N symbols and prints message and byte
//! rates every second: a quick look at what the simulator (or Binance) sends.
//! `cargo run --release -p sim --example tap -- ws://127.0.0.1:18080 200 10`
//! (base URL, symbols, seconds; streams: depth@100ms, bookTicker, aggTrade).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "ws://127.0.0.1:18080".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let rest = base.replacen("ws://", "http://", 1);
    let info = reqwest::get(format!("{rest}/api/v3/exchangeInfo"))
        .await?
        .text()
        .await?;
    let info: binance::wire::ExchangeInfo = sonic_rs::from_str(&info)?;
    let names: Vec<String> = info
        .symbols
        .iter()
        .take(n)
        .flat_map(|s| {
            let l = s.symbol.to_ascii_lowercase();
            [
                format!("{l}@depth@100ms"),
                format!("{l}@bookTicker"),
                format!("{l}@aggTrade"),
            ]
        })
        .collect();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{base}/stream")).await?;
    // Subscribe in chunks, paced under the 5 messages/s limit.
    for (i, chunk) in names.chunks(200).enumerate() {
        let req = format!(
            r#"{{"method":"SUBSCRIBE","params":{},"id":{i}}}"#,
            sonic_rs::to_string(chunk)?
        );
        ws.send(Message::Text(req.into())).await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let start = Instant::now();
    let (mut msgs, mut bytes, mut last) = (0u64, 0u64, Instant::now());
    while start.elapsed() < Duration::from_secs(secs) {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                msgs += 1;
                bytes += t.len() as u64;
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
        if last.elapsed() >= Duration::from_secs(1) {
            println!("{msgs} msg/s, {:.1} KiB/s", bytes as f64 / 1024.0);
            (msgs, bytes, last) = (0, 0, Instant::now());
        }
    }
    Ok(())
}
