//! The speed layer's metrics, recorded through the `metrics` facade (exported by the binary).

use metrics::{counter, gauge, histogram};

pub fn consumed(source: &str, n: u64) {
    counter!("braid_speed_events_consumed_total", "source" => source.to_owned()).increment(n);
}

pub fn applied(source: &str, n: u64) {
    counter!("braid_speed_events_applied_total", "source" => source.to_owned()).increment(n);
}

pub fn rejected(source: &str, reason: &'static str) {
    counter!("braid_speed_events_rejected_total", "source" => source.to_owned(), "reason" => reason)
        .increment(1);
}

pub fn lag(topic: &str, partition: i32, messages: i64) {
    gauge!("braid_speed_partition_lag_messages", "topic" => topic.to_owned(), "partition" => partition.to_string())
        .set(messages as f64);
}

pub fn checkpoint(seconds: f64, bytes: usize) {
    histogram!("braid_speed_checkpoint_duration_seconds").record(seconds);
    histogram!("braid_speed_checkpoint_bytes").record(bytes as f64);
}

pub fn live_cells(view: &str, cells: usize) {
    gauge!("braid_speed_live_cells", "view" => view.to_owned()).set(cells as f64);
}

/// Every source's event counters at zero from the start (each rejection reason too), so rates
/// and the rejected share exist before the first event and the first rejection is an increase.
pub fn register_sources<'a>(sources: impl IntoIterator<Item = &'a str>) {
    for source in sources {
        consumed(source, 0);
        applied(source, 0);
        for reason in braid_shared::RejectReason::CODES {
            counter!("braid_speed_events_rejected_total", "source" => source.to_owned(), "reason" => reason)
                .increment(0);
        }
    }
}
