//! The open WebSocket connections of a venue and what each is subscribed to, so faults and
//! tests can close them and a replay can wait for its audience.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// The open connections, so faults and tests can close them.
#[derive(Debug, Default)]
pub struct Registry {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, (CancellationToken, Instant)>>,
    /// The streams each connection is subscribed to (a replay waits for its audience).
    streams: Mutex<HashMap<u64, HashSet<String>>>,
}

impl Registry {
    pub(crate) fn add(&self) -> (u64, CancellationToken) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        if let Ok(mut c) = self.conns.lock() {
            c.insert(id, (token.clone(), Instant::now()));
        }
        (id, token)
    }

    pub(crate) fn remove(&self, id: u64) {
        if let Ok(mut c) = self.conns.lock() {
            c.remove(&id);
        }
        if let Ok(mut s) = self.streams.lock() {
            s.remove(&id);
        }
    }

    pub(crate) fn set_streams(&self, id: u64, subs: &HashSet<String>) {
        if let Ok(mut s) = self.streams.lock() {
            s.insert(id, subs.clone());
        }
    }

    /// Whether some open connection is subscribed to `stream`.
    pub fn subscribed(&self, stream: &str) -> bool {
        self.streams
            .lock()
            .map(|s| s.values().any(|subs| subs.contains(stream)))
            .unwrap_or(false)
    }

    /// Open connections now.
    pub fn count(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Closes `n` connections (the oldest first), or all; returns how many.
    pub fn disconnect(&self, n: Option<usize>) -> usize {
        let Ok(c) = self.conns.lock() else { return 0 };
        let mut all: Vec<&(CancellationToken, Instant)> = c.values().collect();
        all.sort_by_key(|(_, t)| *t);
        let take = n.unwrap_or(all.len()).min(all.len());
        for (token, _) in all.into_iter().take(take) {
            token.cancel();
        }
        take
    }
}
