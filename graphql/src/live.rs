//! Live updates from ingest over LISTEN/NOTIFY, fanned out to subscribers. Books and tickers
//! are state: a subscriber always gets the latest one and a slow one skips intermediate states
//! (a `watch` per instrument), never buffering without bound. Trades are events: a bounded
//! broadcast per instrument; a subscriber that falls behind loses the oldest and goes on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_postgres::AsyncMessage;

use schema::live::{Addressed, BOOK_CHANNEL, TICKER_CHANNEL, TRADES_CHANNEL};

/// Trade notifications buffered per instrument for slow subscribers.
const TRADE_BUFFER: usize = 1024;

#[derive(Default)]
struct Topics {
    book: HashMap<i32, watch::Sender<Option<Arc<str>>>>,
    ticker: HashMap<i32, watch::Sender<Option<Arc<str>>>>,
    trades: HashMap<i32, broadcast::Sender<Arc<str>>>,
}

/// The fan-out hub; cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    topics: Arc<Mutex<Topics>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hub")
    }
}

impl Hub {
    pub fn book(&self, iid: i32) -> watch::Receiver<Option<Arc<str>>> {
        let mut t = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        t.book
            .entry(iid)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    pub fn ticker(&self, iid: i32) -> watch::Receiver<Option<Arc<str>>> {
        let mut t = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        t.ticker
            .entry(iid)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    pub fn trades(&self, iid: i32) -> broadcast::Receiver<Arc<str>> {
        let mut t = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        t.trades
            .entry(iid)
            .or_insert_with(|| broadcast::channel(TRADE_BUFFER).0)
            .subscribe()
    }

    fn publish(&self, channel: &str, payload: &str) {
        let Ok(Addressed { instrument_id: iid }) = sonic_rs::from_str(payload) else {
            return;
        };
        let p: Arc<str> = Arc::from(payload);
        let t = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        match channel {
            BOOK_CHANNEL => {
                if let Some(tx) = t.book.get(&iid) {
                    tx.send_replace(Some(p));
                }
            }
            TICKER_CHANNEL => {
                if let Some(tx) = t.ticker.get(&iid) {
                    tx.send_replace(Some(p));
                }
            }
            TRADES_CHANNEL => {
                if let Some(tx) = t.trades.get(&iid) {
                    let _ = tx.send(p);
                }
            }
            _ => {}
        }
    }

    /// Listens until the process ends, reconnecting after a lost connection.
    pub async fn run(self, database_url: String) {
        loop {
            let target = match pgconn::target(&database_url) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "live updates disabled: bad database URL");
                    return;
                }
            };
            match target.config.connect(target.tls).await {
                Ok((client, mut conn)) => {
                    let hub = self.clone();
                    let reader = tokio::spawn(async move {
                        let mut messages =
                            futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                        while let Some(Ok(m)) = messages.next().await {
                            if let AsyncMessage::Notification(n) = m {
                                hub.publish(n.channel(), n.payload());
                            }
                        }
                    });
                    let listen = format!(
                        "LISTEN {BOOK_CHANNEL}; LISTEN {TICKER_CHANNEL}; LISTEN {TRADES_CHANNEL}"
                    );
                    if let Err(e) = client.batch_execute(&listen).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    }
                    let _ = reader.await;
                    tracing::warn!("live-update connection lost; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "live-update connection failed"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
