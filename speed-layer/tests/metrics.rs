//! The speed layer's metrics: consumed, applied and rejected counts per source and reason, and
//! live cells per view. A recorder is process-wide, so this file holds one test.

mod common;

use std::time::Duration;

use braid_speed::SpeedLayer;
use common::*;
use metrics_util::debugging::DebuggingRecorder;
use tokio_util::sync::CancellationToken;

#[test]
fn counts_and_gauges_match_what_was_consumed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let world = fixture(2, "");
    let (cluster, config, topic) = (&world.cluster, world.config.clone(), world.topic.clone());
    let messages = payments(21, 1500, 2);
    produce(&producer(&cluster.bootstrap_servers()), &topic, &messages);
    let partitions = by_partition(&messages, 2);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();

    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_caught_up(&layer.handle(), &topic, &counts, Duration::from_secs(60));
    let decoder = braid_shared::Decoder::new(config.source("payments").unwrap());
    let mut rejected_by_reason = std::collections::BTreeMap::<String, u64>::new();
    for bytes in partitions.iter().flatten() {
        if let Err(reason) = decoder.decode(bytes) {
            *rejected_by_reason
                .entry(reason.code().to_owned())
                .or_default() += 1;
        }
    }
    let rejected: u64 = rejected_by_reason.values().sum();
    // Cells are stored per partition and offset segment (100 offsets in the test config).
    let view = std::sync::Arc::clone(config.view("card_minute").unwrap());
    let expected_cells: usize = partitions
        .iter()
        .flat_map(|messages| messages.chunks(100))
        .map(|segment| {
            let events: Vec<_> = segment
                .iter()
                .filter_map(|b| decoder.decode(b).ok())
                .collect();
            braid_shared::ViewState::recompute(std::sync::Arc::clone(&view), &events).len()
        })
        .sum();

    let mut seen = SeenMetrics::default();
    let live_cells = "braid_speed_live_cells{view=card_minute}";
    wait_for("the live-cells gauge", Duration::from_secs(10), || {
        seen.refresh(&snapshotter);
        seen.value(live_cells) as usize == expected_cells
    });
    seen.refresh(&snapshotter);
    let value = |key: &str| seen.value(key) as u64;
    assert_eq!(
        value("braid_speed_events_consumed_total{source=payments}"),
        messages.len() as u64
    );
    assert_eq!(
        value("braid_speed_events_applied_total{source=payments}"),
        messages.len() as u64 - rejected
    );
    assert!(rejected > 0);
    for (reason, n) in &rejected_by_reason {
        let key = format!("braid_speed_events_rejected_total{{reason={reason},source=payments}}");
        assert_eq!(value(&key), *n, "{key} in {seen:?}");
    }
    assert!(
        seen.samples("braid_speed_checkpoint_duration_seconds{}") > 0,
        "{seen:?}"
    );
    cancel.cancel();
    layer.join().unwrap();
}
