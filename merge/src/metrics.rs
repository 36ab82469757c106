//! The merge core's metrics: snapshot swaps and merge retries (`braid_serve_*`, as the serving
//! layer that reads them reports them) and the scoring of applied events (`braid_fraud_*`).

use std::time::Duration;

/// A snapshot swapped in, taking `elapsed` to load; `published_ms` is when its run published it
/// (the snapshot's age is `time() - braid_serve_snapshot_published_timestamp_seconds`).
pub fn snapshot_loaded(elapsed: Duration, published_ms: Option<i64>) {
    metrics::counter!("braid_serve_snapshot_swaps_total").increment(1);
    metrics::histogram!("braid_serve_snapshot_load_duration_seconds").record(elapsed.as_secs_f64());
    if let Some(ms) = published_ms {
        metrics::gauge!("braid_serve_snapshot_published_timestamp_seconds").set(ms as f64 / 1000.0);
    }
}

/// A read retried over a newer snapshot (the speed layer had moved past the one in hand).
pub fn merge_retry() {
    metrics::counter!("braid_serve_merge_retries_total").increment(1);
}

/// The series of scoring applied events, looked up once for a run of events.
pub struct AppliedScoring {
    queue_depth: metrics::Gauge,
    scored: metrics::Counter,
    duration: metrics::Histogram,
}

impl AppliedScoring {
    pub fn new() -> Self {
        Self {
            queue_depth: metrics::gauge!("braid_fraud_queue_depth"),
            scored: metrics::counter!("braid_fraud_scored_total", "mode" => "applied"),
            duration: metrics::histogram!(
                "braid_fraud_scoring_duration_seconds",
                "mode" => "applied"
            ),
        }
    }

    /// Events handed to the scorer and not yet scored.
    pub fn queue_depth(&self, events: usize) {
        self.queue_depth.set(events as f64);
    }

    /// One applied event scored.
    pub fn scored(&self, elapsed: Duration) {
        self.scored.increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// An applied event that could not be scored, and why (a bounded code).
pub fn fraud_unscored(reason: &'static str) {
    metrics::counter!("braid_fraud_unscored_total", "reason" => reason).increment(1);
}

/// The scorer's counters at zero from the start, one per configured rule, so that the first
/// alert is an increase and the by-rule series exist before any rule fires.
pub fn register_scorer(rules: &[String]) {
    metrics::counter!("braid_fraud_alerts_total").increment(0);
    metrics::counter!("braid_fraud_scored_total", "mode" => "applied").increment(0);
    for rule in rules {
        metrics::counter!("braid_fraud_rule_alerts_total", "rule" => rule.clone()).increment(0);
    }
    AppliedScoring::new().queue_depth(0);
}

/// A new alert, counted once per rule that fired.
pub fn alert_raised(rules: &[String]) {
    metrics::counter!("braid_fraud_alerts_total").increment(1);
    for rule in rules {
        metrics::counter!("braid_fraud_rule_alerts_total", "rule" => rule.clone()).increment(1);
    }
}
