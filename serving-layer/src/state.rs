//! What every handler shares: the config, the snapshot in use, and the layers running in this
//! process (each optional: `braid run --layers serve` answers from storage alone).

use std::sync::Arc;
use std::time::Instant;

use braid_shared::{Config, SpeedReader};
use braid_store::{BatchControl, History, LocalStorage, Storage};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::snapshot::SnapshotCache;

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
    /// ([`crate::AlertScorer::logged`]): live alert streams wake at once instead of polling.
    pub alerts_logged: Option<tokio::sync::watch::Receiver<u64>>,
    /// Where the archive, snapshots and records are read; [`crate::Server::start`] opens the
    /// configured one when this is `None` (a bare [`AppState`]: the local `storage.dir`).
    pub storage: Option<Arc<dyn Storage>>,
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
    /// Broker readers of the not-yet-archived events, per topic, made on first use and kept
    /// (one connection, reused by every page).
    pub tails: std::sync::Mutex<
        std::collections::HashMap<String, Arc<std::sync::Mutex<crate::tail::Tail>>>,
    >,
}

impl AppState {
    pub fn new(config: Arc<Config>, backends: Backends) -> Self {
        let storage: Arc<dyn Storage> = backends
            .storage
            .clone()
            .unwrap_or_else(|| Arc::new(LocalStorage::new(&config.storage.dir)));
        Self(Arc::new(Inner {
            snapshot: backends.snapshot.clone().unwrap_or_else(|| {
                Arc::new(SnapshotCache::new(
                    Arc::clone(&config),
                    Arc::clone(&storage),
                ))
            }),
            history: History::new(Arc::clone(&storage)),
            storage,
            fraud_decoder: config
                .fraud
                .as_ref()
                .map(|f| braid_shared::Decoder::new(&f.source)),
            sql: crate::sql::Engine::new(&config),
            tails: std::sync::Mutex::default(),
            config,
            backends,
            started: Instant::now(),
        }))
    }

    pub fn snapshot(&self) -> &Arc<SnapshotCache> {
        &self.0.snapshot
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
