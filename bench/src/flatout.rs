//! The real recordings replayed flat out: each recording of `../shared/real-binance/` sent as
//! fast as ingest reads it (the simulator waits for its slowest reader, so no frame is lost),
//! with Binance's real message shapes — `@depth@0ms` bursts, snapshots of thousands of levels.
//! The frames are the recorded bytes, serialized once in advance, so the feed costs the
//! harness little. Per recording: messages and rows per second, ingest's CPU per message and
//! per row beside PostgreSQL's for the same rows.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use binance::Venue;

use schema::PolicyChange;

use crate::sizing::{self, Played};
use crate::stack::Server;
use crate::Plan;

/// One recording, replayed flat out.
#[derive(Debug, Clone)]
pub struct Flat {
    pub recording: String,
    pub venue: Venue,
    pub symbols: usize,
    /// Depth events and their levels in the recording.
    pub depth_events: u64,
    pub levels: u64,
    pub played: Played,
}

impl Flat {
    /// Every depth event stored (the replay waited for it), no gap, no row dropped, no frame
    /// lost.
    pub fn complete(&self) -> bool {
        self.played.gaps == 0.0 && self.played.dropped_rows == 0.0 && self.played.sim_cut == 0
    }

    /// Ingest's CPU seconds per million messages received.
    pub fn cpu_seconds_per_million(&self) -> f64 {
        self.played.cpu_ingest / self.played.messages.max(1.0) * 1e6
    }

    /// Ingest's CPU ÷ PostgreSQL's for the same rows.
    pub fn ratio(&self) -> Option<f64> {
        self.played
            .cpu_postgres
            .filter(|pg| *pg > 0.0)
            .map(|pg| self.played.cpu_ingest / pg)
    }
}

/// Every recording (the smallest alone in a smoke run), each in a database of its own;
/// `None` where the recordings are absent.
pub async fn run(
    server: &Server,
    plan: &Plan,
    bin_dir: &Path,
    work: &Path,
) -> Result<Option<Vec<Flat>>> {
    let Some(root) = sizing::corpus() else {
        println!("skipped: flatout: no real Binance recordings at ../shared/real-binance");
        return Ok(None);
    };
    let mut dirs = sizing::recordings(&root)?;
    if plan.smoke {
        dirs.sort_by_key(|d| std::fs::metadata(d.join("messages.jsonl")).map_or(0, |m| m.len()));
        dirs.truncate(1);
    }
    let mut out = Vec::new();
    for (i, dir) in dirs.into_iter().enumerate() {
        let name = &format!("bench_flatout_{i}");
        let url = server.fresh_database(name).await?;
        let mut db = crate::stack::connect(&url).await?;
        // The recordings are years old: nothing may count as past retention, and no chunk
        // may be compressed while it is written (a live collector's chunks are hours old
        // before they are).
        let relations: Vec<String> = db
            .query("SELECT relation FROM storage_policies", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let changes: Vec<PolicyChange> = relations
            .into_iter()
            .flat_map(|relation| {
                [
                    PolicyChange::Retention {
                        relation: relation.clone(),
                        after: None,
                    },
                    PolicyChange::Compression {
                        relation,
                        after: None,
                    },
                ]
            })
            .collect();
        schema::set_policies(&mut db, &changes).await?;
        drop(db);
        let (by, _, _) = sizing::count(&dir)?;
        tracing::info!(recording = %dir.display(), "replaying flat out");
        let played =
            sizing::replay(&dir, &by, &url, (bin_dir, work, server.postmaster_pid), 0.0).await?;
        if !plan.keep {
            server.drop_database(name).await?;
        }
        out.push(Flat {
            recording: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            venue: sizing::venue_of(&dir),
            symbols: sizing::depth_symbols(&by).len(),
            depth_events: by.values().map(|c| c.events).sum(),
            levels: by.values().map(|c| c.levels).sum(),
            played,
        });
    }
    Ok(Some(out))
}

/// Renders the section.
pub fn render(flats: &[Flat], o: &mut String) {
    let _ = writeln!(o, "## 12. Real recordings, flat out\n");
    let _ = writeln!(
        o,
        "Each recording of `../shared/real-binance/` replayed by `sim` as fast as ingest reads it (the simulator \
         sends the recorded bytes and waits for its slowest reader, so it drops nothing), into a fresh database. \
         The simulator holds each book's first depth event until its snapshot is fetched, so every book syncs \
         near the start. Timed from every book synced to the last batch committed, with every depth event and \
         ticker stored (messages and rows counted in that time). CPU in seconds from the same start to the moment \
         the harness saw everything stored (up to 0.2 s later; the percentages are over that window); \
         PostgreSQL's includes its backends and background workers.\n"
    );
    let _ = writeln!(
        o,
        "| recording | venue | symbols | messages | levels / depth event | seconds | messages/s | rows/s | \
         ingest CPU-s per 1M messages | ingest CPU | PostgreSQL CPU | ingest ÷ PostgreSQL | harness CPU | complete |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for f in flats {
        let p = &f.played;
        let (secs, cpu_secs) = (p.secs.max(1e-9), p.cpu_secs.max(1e-9));
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.1} | {:.2} s ({:.0} %) | {} | {} | {:.2} s | {} |",
            f.recording,
            f.venue.as_str(),
            f.symbols,
            p.messages,
            f.levels as f64 / (f.depth_events.max(1)) as f64,
            p.secs,
            p.messages / secs,
            p.rows as f64 / secs,
            f.cpu_seconds_per_million(),
            p.cpu_ingest,
            100.0 * p.cpu_ingest / cpu_secs,
            p.cpu_postgres
                .map_or("n/a".into(), |c| format!("{c:.2} s ({:.0} %)", 100.0 * c / cpu_secs)),
            f.ratio().map_or("n/a".into(), |r| format!("{r:.2}")),
            p.cpu_sim,
            if f.complete() {
                "yes".to_owned()
            } else {
                format!(
                    "**no**: {} gaps, {} rows dropped, {} consumers cut",
                    p.gaps, p.dropped_rows, p.sim_cut
                )
            },
        );
    }
    let _ = writeln!(o);
}
