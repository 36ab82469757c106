//! What every handler shares: the config, the snapshot in use, and the layers running in this
//! process (each optional: `braid run --layers serve` answers from storage alone).

use std::sync::Arc;
use std::time::Instant;

use braid_shared::{Config, SpeedReader};
use braid_store::{BatchControl, History, Storage};
use metrics_exporter_prometheus::PrometheusHandle;

use braid_merge::events::EventPages;
use braid_merge::snapshot::SnapshotCache;

use braid_shared::text::abbreviate;

use crate::error::ApiError;

/// The other layers, as far as they run in this process.
#[derive(Clone, Default)]
pub struct Backends {
    /// The speed layer's views; without it answers hold the batch snapshot only.
    pub speed: Option<Arc<dyn SpeedReader>>,
    /// Takes `POST /v1/batch/runs`; without it that endpoint answers 503.
    pub batch: Option<Arc<dyn BatchControl>>,
    /// Renders `GET /metrics`; without it that endpoint answers 503.
    pub metrics: Option<PrometheusHandle>,
    /// The snapshot cache to answer from, when another part of the process (the fraud scorer)
    /// shares it; without it the server makes its own.
    pub snapshot: Option<Arc<SnapshotCache>>,
    /// Changes when the fraud scorer in this process logs alerts
    /// (`braid_merge::AlertScorer::logged`): live alert streams wake at once instead of polling.
    pub alerts_logged: Option<tokio::sync::watch::Receiver<u64>>,
}

#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub config: Arc<Config>,
    pub snapshot: Arc<SnapshotCache>,
    pub storage: Arc<dyn Storage>,
    pub history: History,
    pub backends: Backends,
    pub started: Instant,
    /// Reads `POST /v1/fraud/score` bodies, when `[fraud]` is configured.
    pub fraud_decoder: Option<braid_shared::Decoder>,
    /// Runs `POST /v1/sql` queries.
    pub sql: crate::sql::Engine,
    /// Event pages of the audit trail (its broker readers kept from page to page).
    pub events: Arc<EventPages>,
    /// The fraud alerts read so far, so that a list fetches only new ones.
    pub known_alerts: Arc<braid_merge::alerts::KnownAlerts>,
}

impl AppState {
    /// The state of a server of `config` reading the archive, snapshots and records in
    /// `storage`, with the other layers of this process in `backends`.
    pub fn new(config: Arc<Config>, storage: Arc<dyn Storage>, backends: Backends) -> Self {
        Self(Arc::new(Inner {
            snapshot: backends.snapshot.clone().unwrap_or_else(|| {
                Arc::new(SnapshotCache::new(
                    Arc::clone(&config),
                    Arc::clone(&storage),
                ))
            }),
            history: History::new(Arc::clone(&storage)),
            events: Arc::new(EventPages::new(Arc::clone(&config), Arc::clone(&storage))),
            known_alerts: Arc::default(),
            storage,
            fraud_decoder: config
                .fraud
                .as_ref()
                .map(|f| braid_shared::Decoder::new(&f.source)),
            sql: crate::sql::Engine::new(&config),
            config,
            backends,
            started: Instant::now(),
        }))
    }

    pub fn snapshot(&self) -> &Arc<SnapshotCache> {
        &self.0.snapshot
    }

    /// What answers are merged from: the snapshot in use and the speed layer.
    pub(crate) fn sources(&self) -> braid_merge::answer::Sources<'_> {
        braid_merge::answer::Sources {
            snapshot: &self.0.snapshot,
            speed: self.0.backends.speed.as_deref(),
        }
    }

    /// A source named in a path; 404 naming it when there is no such source.
    pub(crate) fn source(&self, name: &str) -> Result<Arc<braid_shared::SourceDef>, ApiError> {
        self.0.config.source(name).cloned().ok_or_else(|| {
            ApiError::not_found(
                "unknown_source",
                format!("no source {:?}", abbreviate(name)),
            )
        })
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
