//! Depth-message decode + book apply, messages per second on one core, on combined-stream
//! frames of realistic messages made by the simulator's market generator: `ingest::decode`
//! (what the feed runs: sonic-rs into `binance::e8wire`, decimals read in place), serde_json
//! into the same types, and round 1's path (sonic-rs into `binance::wire`'s owned strings,
//! then `parse_levels`).
//! `cargo bench -p ingest --bench parse`; `cargo test -p ingest --benches` runs each once.

use binance::e8wire;
use binance::units::parse_levels;
use binance::wire::{Combined, DepthUpdate};
use book::sync::{DepthEvent, Rules, Snapshot, SyncMachine};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ingest::decode::{self, Event};
use sim::book::wire_levels;
use sim::market::{Activity, Generator};

/// Criterion's names for them (`bench/` reads the results under these names).
const PARSERS: [&str; 3] = ["sonic-rs", "serde_json", "owned-strings"];

/// Serialized depth events of one busy symbol, and the snapshot they continue.
fn messages(n: usize) -> (Snapshot, Vec<String>) {
    let spec = &sim::universe::generate(1)[0];
    let (mut g, mut book) = Generator::new(spec, 1, 1000);
    let start_id = 1_000;
    let (b, a) = book.top(usize::MAX);
    let snap = Snapshot {
        last_update_id: start_id,
        bids: b,
        asks: a,
    };
    let act = Activity {
        changes_per_event: 20.0,
        multiplier: 1.0,
        levels: 1000,
        max_id_step: 1,
    };
    let mut id = start_id;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let prev = id;
        let step = g.step(&mut book, &mut id, &act);
        if step.changes.is_empty() {
            continue;
        }
        let mut bids = Vec::new();
        let mut asks = Vec::new();
        for c in &step.changes {
            match c.side {
                sim::book::Side::Bid => bids.push((c.price, c.qty)),
                sim::book::Side::Ask => asks.push((c.price, c.qty)),
            }
        }
        let msg = DepthUpdate {
            event_type: "depthUpdate".into(),
            event_time: 1_700_000_000_000 + out.len() as u64,
            transaction_time: None,
            symbol: spec.symbol.clone(),
            first_update_id: prev + 1,
            final_update_id: id,
            prev_final_update_id: None,
            bids: wire_levels(&bids, 8, 8),
            asks: wire_levels(&asks, 8, 8),
        };
        let frame = Combined {
            stream: format!("{}@depth@100ms", spec.symbol.to_lowercase()),
            data: msg,
        };
        out.push(sonic_rs::to_string(&frame).expect("json"));
    }
    (snap, out)
}

/// The depth event of a frame, by each of the parsers compared.
fn to_event(parser: &str, text: &str) -> DepthEvent {
    match parser {
        "serde_json" => {
            let f: Combined<e8wire::DepthUpdate> = serde_json::from_str(text).expect("parse");
            DepthEvent {
                event_time_ms: f.data.event_time,
                first_update_id: f.data.first_update_id,
                final_update_id: f.data.final_update_id,
                prev_final_update_id: f.data.prev_final_update_id,
                bids: f.data.bids.0,
                asks: f.data.asks.0,
            }
        }
        "owned-strings" => {
            let f: Combined<DepthUpdate> = sonic_rs::from_str(text).expect("parse");
            DepthEvent {
                event_time_ms: f.data.event_time,
                first_update_id: f.data.first_update_id,
                final_update_id: f.data.final_update_id,
                prev_final_update_id: f.data.prev_final_update_id,
                bids: parse_levels(&f.data.bids).expect("exact decimals"),
                asks: parse_levels(&f.data.asks).expect("exact decimals"),
            }
        }
        _ => match decode::decode(text).expect("decodes") {
            Some((_, Event::Depth(ev))) => ev,
            other => panic!("a depth event expected, got {other:?}"),
        },
    }
}

fn bench(c: &mut Criterion) {
    let (snap, msgs) = messages(2_000);
    let mut group = c.benchmark_group("depth_parse_apply");
    group.throughput(Throughput::Elements(msgs.len() as u64));
    for parser in PARSERS {
        group.bench_with_input(BenchmarkId::from_parameter(parser), &msgs, |b, msgs| {
            b.iter(|| {
                let mut m = SyncMachine::new(Rules::Spot, 10);
                m.on_event(DepthEvent {
                    event_time_ms: 0,
                    first_update_id: snap.last_update_id,
                    final_update_id: snap.last_update_id + 1,
                    prev_final_update_id: None,
                    bids: vec![],
                    asks: vec![],
                });
                m.on_snapshot(snap.clone()).expect("sync");
                for text in msgs {
                    std::hint::black_box(m.on_event(to_event(parser, text)));
                }
                m.book_id()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
