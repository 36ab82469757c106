//! Braid's serving layer: the HTTP API that answers every view as the exact merge of the
//! published batch snapshot and the speed layer above its coverage.
//!
//! - `server`: the listener (header-read timeout, graceful shutdown) and snapshot watcher.
//! - `routes`: the endpoints, the always-on limits, JSON errors, the OpenAPI document.
//! - `query`: query-string parameters, checked once for every route; `extract`: the view or
//!   source a path names, with the query string.
//! - `alerts`: the alert list's filter and the live alert stream.
//! - `sql`: read-only DuckDB over the archive, rejections and merged views.
//! - `auth`: optional bearer keys. `state`, `metrics`, `error`.

mod alerts;
mod auth;
mod error;
mod extract;
mod metrics;
mod query;

mod routes;
mod server;
mod sql;
mod state;

pub use error::{ApiError, Error, ErrorKind, Result};
pub use routes::{ApiDoc, router};
pub use server::{Server, bind};
pub use state::{AppState, Backends};

/// Bucket bounds of every `*_seconds` histogram: sub-millisecond queries to hour-long batch runs.
const DURATION_BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 120.0, 600.0, 3600.0,
];

/// Installs the process-wide Prometheus recorder (once) and returns its handle for `/metrics`.
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                // Durations as histograms (summaries cannot be aggregated over instances).
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
                    &DURATION_BUCKETS,
                )
                .and_then(|builder| builder.install_recorder())
                .map_err(|error| tracing::warn!(%error, "no Prometheus recorder"))
                .ok()
        })
        .clone()
}
