//! Decoding throughput: Braid's typed decoder against raw `serde_json::Value` parsing of the
//! same payment events, and decode + apply to the example config's views.
//!
//! `cargo bench -p braid-shared --bench decode`

use std::hint::black_box;

use braid_shared::generator::{Payments, PaymentsShape};
use braid_shared::{Config, Decoder, ViewState};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const EXAMPLE: &str = include_str!("../../deploy/config/example.toml");
const EVENTS: usize = 10_000;

/// Realistic payments from the shared generator (skewed keys, late events, RFC 3339 times).
fn payments() -> Vec<Vec<u8>> {
    let mut generator = Payments::new(7, 1_790_000_000_000, PaymentsShape::default());
    (0..EVENTS).map(|_| generator.next_event()).collect()
}

fn bench(c: &mut Criterion) {
    let config = Config::from_toml(EXAMPLE).unwrap();
    let source = config.source("payments").unwrap();
    let decoder = Decoder::new(source);
    let messages = payments();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    assert!(messages.iter().all(|m| decoder.decode(m).is_ok()));

    for (unit, throughput) in [
        ("events", Throughput::Elements(EVENTS as u64)),
        ("bytes", Throughput::Bytes(bytes as u64)),
    ] {
        let mut group = c.benchmark_group(format!("decode_{unit}"));
        group.throughput(throughput);
        group.bench_function("serde_json_value", |b| {
            b.iter(|| {
                for m in &messages {
                    black_box(serde_json::from_slice::<serde_json::Value>(m).unwrap());
                }
            })
        });
        group.bench_function("braid_typed", |b| {
            b.iter(|| {
                for m in &messages {
                    black_box(decoder.decode(m).unwrap());
                }
            })
        });
        group.finish();
    }

    // Apply alone, per view, into a state that persists across iterations (cells mostly exist).
    let mut group = c.benchmark_group("apply_events");
    group.throughput(Throughput::Elements(EVENTS as u64));
    let events: Vec<_> = messages
        .iter()
        .map(|m| decoder.decode(m).unwrap())
        .collect();
    for view in &config.views {
        let mut state = ViewState::new(view.clone());
        group.bench_function(view.name.as_str(), |b| b.iter(|| state.apply(&events)));
    }
    group.finish();

    let mut group = c.benchmark_group("decode_apply_events");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("example_views", |b| {
        b.iter(|| {
            let events: Vec<_> = messages
                .iter()
                .map(|m| decoder.decode(m).unwrap())
                .collect();
            for view in &config.views {
                let mut state = ViewState::new(view.clone());
                state.apply(&events);
                black_box(state.len());
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
