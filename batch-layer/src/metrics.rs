//! The batch layer's metrics, recorded through the `metrics` facade (exported by the binary).

use metrics::{counter, gauge, histogram};

pub fn archive_lag(topic: &str, partition: i32, messages: i64) {
    gauge!("braid_batch_archive_lag_messages", "topic" => topic.to_owned(), "partition" => partition.to_string())
        .set(messages as f64);
}

pub fn archived(source: &str, files: u64, rows: u64, rejected: u64) {
    counter!("braid_batch_archive_files_total", "source" => source.to_owned()).increment(files);
    counter!("braid_batch_archive_rows_total", "source" => source.to_owned()).increment(rows);
    counter!("braid_batch_archive_rejected_total", "source" => source.to_owned())
        .increment(rejected);
}

pub fn flushed(seconds: f64, bytes: u64) {
    histogram!("braid_batch_archive_flush_duration_seconds").record(seconds);
    counter!("braid_batch_archive_bytes_total").increment(bytes);
}

pub fn compacted(files: u64) {
    counter!("braid_batch_archive_compacted_files_total").increment(files);
}

pub fn run_finished(state: &'static str, seconds: f64, rows: u64) {
    counter!("braid_batch_runs_total", "state" => state).increment(1);
    if state == "succeeded" {
        last_success(unix_now());
    }
    histogram!("braid_batch_run_duration_seconds").record(seconds);
    counter!("braid_batch_run_rows_read_total").increment(rows);
    if seconds > 0.0 {
        gauge!("braid_batch_run_rows_per_second").set(rows as f64 / seconds);
    }
}

pub fn snapshot_cells(view: &str, cells: u64) {
    gauge!("braid_batch_snapshot_cells", "view" => view.to_owned()).set(cells as f64);
}

/// The scheduler started: its interval (none when `off`), when it started, and the last run
/// that succeeded before, so "no successful run for 2x the interval" holds across restarts.
/// Run counters start at zero, so the first failure is an increase a rule can see.
pub fn scheduler_started(interval: Option<std::time::Duration>, last_succeeded: Option<f64>) {
    if let Some(interval) = interval {
        gauge!("braid_batch_interval_seconds").set(interval.as_secs_f64());
    }
    gauge!("braid_batch_scheduler_start_timestamp_seconds").set(unix_now());
    if let Some(at) = last_succeeded {
        last_success(at);
    }
    for state in ["succeeded", "failed"] {
        counter!("braid_batch_runs_total", "state" => state).increment(0);
    }
}

fn last_success(unix_seconds: f64) {
    gauge!("braid_batch_last_success_timestamp_seconds").set(unix_seconds);
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
