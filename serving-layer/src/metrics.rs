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

/// One event scored by `POST /v1/fraud/score`, in `elapsed` (features read and rules run).
pub fn scored_on_demand(elapsed: Duration, alert: bool) {
    metrics::counter!("braid_fraud_scored_total", "mode" => "on_demand").increment(1);
    if alert {
        metrics::counter!("braid_fraud_on_demand_alerts_total").increment(1);
    }
    metrics::histogram!("braid_fraud_scoring_duration_seconds", "mode" => "on_demand")
        .record(elapsed.as_secs_f64());
}
