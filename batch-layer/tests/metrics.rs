//! The batch layer's metrics: files, rows and rejections archived per source, archive lag per
//! partition, run duration and rows per second, and when the last run succeeded (also across a
//! restart, from the run history). A recorder is process-wide: one test here.

mod common;

use std::time::Duration;

use braid_batch::{Archiver, BatchRunner, BatchScheduler, RunState, Trigger};
use common::*;
use metrics_util::debugging::DebuggingRecorder;
use tokio_util::sync::CancellationToken;

#[test]
fn archive_and_run_metrics_match_what_happened() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let world = fixture(2, "");
    let (config, topic) = (world.config.clone(), world.topic.clone());
    let messages = payments(51, 2_000, 2);
    world.produce(&messages);
    let partitions = by_partition(&messages, 2);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();
    let decoder = braid_shared::Decoder::new(config.source("payments").unwrap());
    let rejected = messages
        .iter()
        .filter(|m| decoder.decode(&m.payload).is_err())
        .count() as u64;
    assert!(rejected > 0);

    let mut seen = SeenMetrics::default();

    let cancel = CancellationToken::new();
    let archiver = Archiver::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_archived(&archiver.handle(), &topic, &counts, Duration::from_secs(60));
    // Lag comes from librdkafka's statistics, once a second.
    let lag = |p: i32| format!("braid_batch_archive_lag_messages{{partition={p},topic={topic}}}");
    wait_for(
        "archive lag gauges at zero",
        Duration::from_secs(10),
        || {
            seen.refresh(&snapshotter);
            (0..2).all(|p| seen.samples(&lag(p)) > 0 && seen.value(&lag(p)) == 0.0)
        },
    );
    cancel.cancel();
    archiver.join().unwrap();
    let record = BatchRunner::new(&config, braid_store::open(&config.storage).unwrap())
        .unwrap()
        .run(Trigger::Command, false, &CancellationToken::new())
        .unwrap();
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    seen.refresh(&snapshotter);
    let value = |key: &str| seen.value(key);
    assert_eq!(
        value("braid_batch_archive_rows_total{source=payments}") as u64,
        messages.len() as u64 - rejected
    );
    assert_eq!(
        value("braid_batch_archive_rejected_total{source=payments}") as u64,
        rejected
    );
    assert!(value("braid_batch_archive_files_total{source=payments}") >= 2.0);
    assert_eq!(
        value("braid_batch_run_rows_read_total{}") as u64,
        record.rows_read
    );
    assert_eq!(value("braid_batch_runs_total{state=succeeded}"), 1.0);
    assert!(value("braid_batch_run_rows_per_second{}") > 0.0, "{seen:?}");
    assert_eq!(
        seen.samples("braid_batch_run_duration_seconds{}"),
        1,
        "{seen:?}"
    );
    assert!(value("braid_batch_snapshot_cells{view=card_minute}") > 0.0);
    let now = || chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let last_success = value("braid_batch_last_success_timestamp_seconds{}");
    assert!((now() - last_success).abs() < 60.0, "{last_success}");

    // A scheduler started later (a restart) takes the last success from the run history, and
    // reports its interval and start; the run counters exist at zero for a failure.
    let finished = chrono::DateTime::parse_from_rfc3339(record.finished_at.as_deref().unwrap())
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0;
    let mut scheduled = config.clone();
    scheduled.batch.interval = braid_shared::config::Interval(Some(Duration::from_secs(900)));
    let cancel = CancellationToken::new();
    let scheduler = BatchScheduler::start(
        &scheduled,
        braid_store::open(&scheduled.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    seen.refresh(&snapshotter);
    assert_eq!(
        seen.value("braid_batch_last_success_timestamp_seconds{}"),
        finished
    );
    assert_eq!(seen.value("braid_batch_interval_seconds{}"), 900.0);
    assert!((now() - seen.value("braid_batch_scheduler_start_timestamp_seconds{}")).abs() < 60.0);
    cancel.cancel();
    scheduler.join();
}
