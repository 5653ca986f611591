//! What a depth window keeps of a real book: each recording's symbols synced from their
//! snapshot (`book::sync`, as ingest does) and every event's changes counted in full and as
//! the rows a window of N levels writes (`book::window`, the same rule ingest applies).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use binance::units::parse_levels;
use binance::Venue;
use book::sync::{DepthEvent, Outcome, Rules, Snapshot, SyncMachine};

/// The windows measured, levels per side.
pub const WINDOWS: [usize; 4] = [20, 100, 500, 1000];

/// One symbol of one recording: level changes applied, and the rows each window writes.
#[derive(Debug, Clone)]
pub struct Kept {
    pub recording: String,
    pub symbol: String,
    pub changes: u64,
    pub rows: [u64; WINDOWS.len()],
}

/// Every symbol of the recording in `dir` that syncs.
pub fn measure(dir: &Path, venue: Venue) -> Result<Vec<Kept>> {
    let data = sim::replay::load(&sim::replay::ReplayConfig {
        dir: dir.to_owned(),
        speed: 0.0,
    })?;
    let rules = match venue {
        Venue::Spot => Rules::Spot,
        Venue::Usdm => Rules::Usdm,
    };
    let recording = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut books: BTreeMap<String, (SyncMachine, Kept)> = BTreeMap::new();
    for (symbol, d) in data.messages.iter().filter_map(|m| m.depth.as_ref()) {
        let Some(snap) = data.snapshots.get(symbol) else {
            continue;
        };
        let (m, kept) = books.entry(symbol.clone()).or_insert_with(|| {
            let kept = Kept {
                recording: recording.clone(),
                symbol: symbol.clone(),
                changes: 0,
                rows: [0; WINDOWS.len()],
            };
            (SyncMachine::new(rules, usize::MAX), kept)
        });
        let ev = DepthEvent {
            event_time_ms: d.event_time,
            first_update_id: d.first_update_id,
            final_update_id: d.final_update_id,
            prev_final_update_id: d.prev_final_update_id,
            bids: parse_levels(&d.bids)?,
            asks: parse_levels(&d.asks)?,
        };
        let synced = m.is_synced();
        let before: Vec<_> = WINDOWS.iter().map(|&n| m.book().top(n)).collect();
        match m.on_event(ev.clone()) {
            Outcome::Applied if synced => {
                kept.changes += (ev.bids.len() + ev.asks.len()) as u64;
                for (i, &n) in WINDOWS.iter().enumerate() {
                    let (bids, asks) = m.book().top(n);
                    let rows = book::window::changes(&before[i].0, &bids, true).len()
                        + book::window::changes(&before[i].1, &asks, false).len();
                    kept.rows[i] += rows as u64;
                }
            }
            Outcome::Buffered if m.wants_snapshot() => {
                let snapshot = Snapshot {
                    last_update_id: snap.last_update_id,
                    bids: parse_levels(&snap.bids)?,
                    asks: parse_levels(&snap.asks)?,
                };
                let _ = m.on_snapshot(snapshot);
            }
            _ => {}
        }
    }
    Ok(books
        .into_values()
        .map(|(_, k)| k)
        .filter(|k| k.changes > 0)
        .collect())
}

/// The report's table: per symbol, the share of level changes each window writes.
pub fn render(kept: &[Kept], o: &mut String) {
    let _ = writeln!(o, "\nWhat a depth window keeps (`ingest --depth-levels TIER=N`): every recorded event applied to the book synced from the recording's snapshot, and the rows a window of the best N levels per side writes (changes inside it, levels pushed out or pulled in), as a share of every level change. Above 100 %, the window writes more rows than the stream had changes: each level that goes from inside the window pulls the next one in, and each new one pushes the last one out.\n");
    let heads: Vec<String> = WINDOWS.iter().map(|n| format!("top {n}")).collect();
    let _ = writeln!(
        o,
        "| recording | symbol | level changes | {} |\n|---|---|---|{}",
        heads.join(" | "),
        "---|".repeat(WINDOWS.len())
    );
    for k in kept {
        let shares: Vec<String> = k
            .rows
            .iter()
            .map(|r| format!("{:.1} %", *r as f64 / k.changes as f64 * 100.0))
            .collect();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            k.recording,
            k.symbol,
            k.changes,
            shares.join(" | ")
        );
    }
}
