//! The serving layer's metrics (`braid_serve_*`). Labels are bounded: the route template, never
//! a path with user values.

use std::time::Duration;

pub fn request(route: &str, status: u16, elapsed: Duration) {
    let status = status.to_string();
    metrics::counter!("braid_serve_requests_total", "route" => route.to_owned(), "status" => status)
        .increment(1);
    metrics::histogram!("braid_serve_request_duration_seconds", "route" => route.to_owned())
        .record(elapsed.as_secs_f64());
}

/// A snapshot swapped in, taking `elapsed` to load; `published_ms` is when its run published it
/// (the snapshot's age is `time() - braid_serve_snapshot_published_timestamp_seconds`).
pub fn snapshot_loaded(elapsed: Duration, published_ms: Option<i64>) {
    metrics::counter!("braid_serve_snapshot_swaps_total").increment(1);
    metrics::histogram!("braid_serve_snapshot_load_duration_seconds").record(elapsed.as_secs_f64());
    if let Some(ms) = published_ms {
        metrics::gauge!("braid_serve_snapshot_published_timestamp_seconds").set(ms as f64 / 1000.0);
    }
}

/// One request being answered, counted in `braid_serve_requests_in_flight` until dropped (also
/// when its client goes away mid-request; a streaming answer counts until its headers are sent).
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> Self {
        metrics::gauge!("braid_serve_requests_in_flight").increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("braid_serve_requests_in_flight").decrement(1.0);
    }
}

/// A request refused at once because `serve.max_concurrency` requests were being answered.
pub fn refused_concurrency() {
    metrics::counter!("braid_serve_concurrency_refused_total").increment(1);
}

/// Series a rule or dashboard divides by or takes the rate of, present at zero from the start.
pub fn register_server() {
    metrics::counter!("braid_serve_concurrency_refused_total").increment(0);
    metrics::gauge!("braid_serve_requests_in_flight").increment(0.0);
}

pub fn merge_retry() {
    metrics::counter!("braid_serve_merge_retries_total").increment(1);
}

/// One event scored by `POST /v1/fraud/score`, in `elapsed` (features read and rules run).
pub fn scored_on_demand(elapsed: Duration, alert: bool) {
    metrics::counter!("braid_fraud_scored_total", "mode" => "on_demand").increment(1);
    if alert {
        metrics::counter!("braid_fraud_on_demand_alerts_total").increment(1);
    }
    metrics::histogram!("braid_fraud_scoring_duration_seconds", "mode" => "on_demand")
        .record(elapsed.as_secs_f64());
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
