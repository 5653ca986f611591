//! A collector following its leases: the venues start the symbols of shards taken and stop
//! those of shards lost or being handed over. A shard handed over is drained before the lease
//! task lets it go: its symbol tasks end (each queues its epoch's 'stopped' event), then every
//! table's queue is written through a barrier, and only then is the shard marked drained
//! ([`Held::drained`]). So a handover loses no row: the new holder starts where this one's
//! epochs visibly stopped.

use std::collections::BTreeSet;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::lease::{Held, HeldView};
use crate::venue::Assignment;
use crate::writer::Writer;

/// The lease view as the venues follow it, and the writer a drain waits on.
#[derive(Debug)]
pub struct LeaseFollow {
    count: u32,
    rx: watch::Receiver<Held>,
    view: HeldView,
    writer: Writer,
    /// Leaving shards whose drain has started.
    draining: BTreeSet<u32>,
}

impl LeaseFollow {
    pub fn new(count: u32, view: HeldView, writer: Writer) -> LeaseFollow {
        LeaseFollow {
            count,
            rx: view.subscribe(),
            view,
            writer,
            draining: BTreeSet::new(),
        }
    }

    /// Until the leases change (`false`: the lease task is gone).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    /// What to collect now, and the shards newly leaving: the caller stops their symbols (the
    /// assignment leaves them out) and hands the stopped tasks to [`LeaseFollow::drain`].
    pub fn assignment(&mut self) -> (Assignment, BTreeSet<u32>) {
        let held = self.rx.borrow_and_update().clone();
        self.draining.retain(|s| held.leaving.contains(s));
        let new: BTreeSet<u32> = held
            .leaving
            .difference(&self.draining)
            .filter(|s| !held.drained.contains(s))
            .copied()
            .collect();
        self.draining.extend(new.iter().copied());
        let assignment = Assignment::Shards {
            count: self.count,
            held,
        };
        (assignment, new)
    }

    /// Marks `shards` drained once the `stopped` symbol tasks have ended and every row queued
    /// before that is written.
    pub fn drain(&self, shards: BTreeSet<u32>, stopped: Vec<CancellationToken>) {
        if shards.is_empty() {
            return;
        }
        let (view, writer) = (self.view.clone(), self.writer.clone());
        tokio::spawn(async move {
            for task in stopped {
                task.cancelled().await;
            }
            writer.flush().await;
            view.send_if_modified(|h| {
                let before = h.drained.len();
                h.drained
                    .extend(shards.iter().filter(|s| h.leaving.contains(s)));
                h.drained.len() != before
            });
        });
    }
}
