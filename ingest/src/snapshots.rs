//! The venue-wide snapshot queue: every symbol task of a venue asks here for its REST depth
//! snapshot, and requests are served one at a time (the venue's weight budget in `rest` paces
//! them), the most important tier first, then the oldest request.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use binance::wire::DepthSnapshot;
use binance::Venue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::rest_client::{Rest, RestError};
use crate::universe::Tier;

/// What a symbol task gets back: the snapshot, or why there is none.
pub type SnapshotResult = Result<DepthSnapshot, RestError>;
type SnapshotReply = oneshot::Sender<SnapshotResult>;

struct Request {
    tier: Tier,
    seq: u64,
    symbol: String,
    reply: SnapshotReply,
}

impl PartialEq for Request {
    fn eq(&self, o: &Self) -> bool {
        (self.tier, self.seq) == (o.tier, o.seq)
    }
}
impl Eq for Request {}
impl PartialOrd for Request {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Request {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Max-heap: the most important tier, then the oldest request, first.
        Reverse((self.tier, self.seq)).cmp(&Reverse((o.tier, o.seq)))
    }
}

/// Snapshot requests of a venue, served one at a time by priority of tier.
#[derive(Debug, Clone)]
pub struct SnapshotQueue {
    tx: mpsc::UnboundedSender<(Tier, String, SnapshotReply)>,
}

impl SnapshotQueue {
    /// `limit_for(tier)`: how many levels to ask for.
    pub fn start(
        rest: Arc<Rest>,
        limit_for: fn(Venue, Tier) -> u32,
        shutdown: CancellationToken,
    ) -> SnapshotQueue {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(serve(rest, limit_for, rx, shutdown));
        SnapshotQueue { tx }
    }

    /// Queues a request; the answer comes on the receiver (which fails if the queue stopped).
    pub fn request(&self, tier: Tier, symbol: &str) -> oneshot::Receiver<SnapshotResult> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send((tier, symbol.to_owned(), tx));
        rx
    }
}

async fn serve(
    rest: Arc<Rest>,
    limit_for: fn(Venue, Tier) -> u32,
    mut rx: mpsc::UnboundedReceiver<(Tier, String, SnapshotReply)>,
    shutdown: CancellationToken,
) {
    let mut heap = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<Request>, (tier, symbol, reply)| {
        heap.push(Request {
            tier,
            seq,
            symbol,
            reply,
        });
        seq += 1;
    };
    loop {
        if heap.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r {
                    Some(r) => push(&mut heap, r),
                    None => return,
                }
            }
        }
        while let Ok(r) = rx.try_recv() {
            push(&mut heap, r);
        }
        let Some(req) = heap.pop() else { continue };
        // The symbol gave up waiting (resync, delisting, shutdown).
        if req.reply.is_closed() {
            continue;
        }
        let res = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rest.depth(&req.symbol, limit_for(rest.venue, req.tier)) => r,
        };
        let _ = req.reply.send(res);
    }
}
