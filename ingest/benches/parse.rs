//! Depth-message parse + book apply, messages per second on one core: sonic-rs (what ingest
//! uses) against serde_json, on realistic messages made by the simulator's market generator.
//! `cargo bench -p ingest --bench parse`; `cargo test -p ingest --benches` runs each once.

use binance::units::parse_levels;
use binance::wire::DepthUpdate;
use book::sync::{DepthEvent, Rules, Snapshot, SyncMachine};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sim::book::wire_levels;
use sim::market::{Activity, Generator};

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
        out.push(sonic_rs::to_string(&msg).expect("json"));
    }
    (snap, out)
}

fn to_event(d: DepthUpdate) -> DepthEvent {
    // The conversion ingest runs (binance::units::parse_levels), so this measures its cost.
    let conv = |v: &[binance::wire::Level]| parse_levels(v).expect("exact decimals");
    DepthEvent {
        event_time_ms: d.event_time,
        first_update_id: d.first_update_id,
        final_update_id: d.final_update_id,
        prev_final_update_id: d.prev_final_update_id,
        bids: conv(&d.bids),
        asks: conv(&d.asks),
    }
}

fn bench(c: &mut Criterion) {
    let (snap, msgs) = messages(2_000);
    let mut group = c.benchmark_group("depth_parse_apply");
    group.throughput(Throughput::Elements(msgs.len() as u64));
    for parser in ["sonic-rs", "serde_json"] {
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
                    let d: DepthUpdate = match parser {
                        "sonic-rs" => sonic_rs::from_str(text).expect("parse"),
                        _ => serde_json::from_str(text).expect("parse"),
                    };
                    std::hint::black_box(m.on_event(to_event(d)));
                }
                m.book_id()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
