//! The published batch snapshot, held in memory: every view's cells, loaded once per swap from
//! the snapshot's Parquet cell files, so a query merges in memory instead of reading files.
//!
//! A query takes the current [`Snapshot`] once and uses its views and its coverage together: two
//! snapshots or two coverages are never mixed, whatever is swapped in meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use braid_shared::coverage::SnapshotPointer;
use braid_shared::{Config, Coverage, ViewState};
use braid_store::Storage;
use braid_store::manifest::SnapshotManifest;
use braid_store::pointer::read_pointer;
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// How often the snapshot pointer is checked for a new snapshot.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// One published snapshot (or none yet), with every view's cells.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub pointer: Option<SnapshotPointer>,
    /// The snapshot's manifest: every view's cell-file layers and the offsets each covers
    /// (lineage reads it from here, never from a directory listing).
    pub manifest: Option<Arc<SnapshotManifest>>,
    views: HashMap<String, Arc<ViewState>>,
    /// Views the snapshot lacks (new or changed definitions), with why.
    missing: BTreeMap<String, String>,
}

impl Snapshot {
    /// The coverage of the snapshot; empty (nothing covered) before the first one.
    pub fn coverage(&self) -> Coverage {
        self.coverage_ref().clone()
    }

    /// [`Snapshot::coverage`] without a copy.
    pub fn coverage_ref(&self) -> &Coverage {
        static NOTHING: Coverage = Coverage(std::collections::BTreeMap::new());
        self.pointer.as_ref().map_or(&NOTHING, |p| &p.coverage)
    }

    /// A view's batch cells: `Ok(None)` before any snapshot, `Err` with why when the published
    /// snapshot does not hold the view.
    pub fn view(&self, name: &str) -> Result<Option<&Arc<ViewState>>, String> {
        if let Some(state) = self.views.get(name) {
            return Ok(Some(state));
        }
        match (&self.pointer, self.missing.get(name)) {
            (None, _) => Ok(None),
            (Some(_), Some(reason)) => Err(reason.clone()),
            (Some(pointer), None) => Err(format!(
                "batch snapshot {} does not hold view {name:?}",
                pointer.run_id
            )),
        }
    }
}

/// The snapshot in use and how to swap in the next one.
pub struct SnapshotCache {
    config: Arc<Config>,
    storage: Arc<dyn Storage>,
    current: RwLock<Arc<Snapshot>>,
    /// One load at a time.
    loading: tokio::sync::Mutex<()>,
    /// Why the newest published snapshot could not be loaded, if it could not.
    last_error: RwLock<Option<String>>,
    loaded_once: std::sync::atomic::AtomicBool,
}

impl SnapshotCache {
    pub fn new(config: Arc<Config>, storage: Arc<dyn Storage>) -> Self {
        Self {
            config,
            storage,
            current: RwLock::new(Arc::new(Snapshot::default())),
            loading: tokio::sync::Mutex::new(()),
            last_error: RwLock::new(None),
            loaded_once: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .map(|s| Arc::clone(&s))
            .unwrap_or_default()
    }

    /// Whether the published snapshot (or its absence) has been read at least once.
    pub fn is_ready(&self) -> bool {
        self.loaded_once.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().ok().and_then(|e| e.clone())
    }

    /// Loads the published snapshot if it is not the one in use. Returns whether it swapped.
    pub async fn refresh(&self) -> bool {
        let _guard = self.loading.lock().await;
        let config = Arc::clone(&self.config);
        let storage = Arc::clone(&self.storage);
        let current = self.current().pointer.clone();
        let found = tokio::task::spawn_blocking(move || {
            read_published(&config, storage.as_ref(), current.as_ref())
        })
        .await
        .unwrap_or_else(|error| Published::Unreadable(format!("loading the snapshot: {error}")));
        self.install(found)
    }

    /// [`SnapshotCache::refresh`] on the calling thread, which must not be an async runtime's
    /// (the fraud scorer on the speed layer's consumer thread).
    pub fn refresh_blocking(&self) -> bool {
        let _guard = self.loading.blocking_lock();
        let current = self.current().pointer.clone();
        self.install(read_published(
            &self.config,
            self.storage.as_ref(),
            current.as_ref(),
        ))
    }

    /// Swaps in what [`read_published`] found; returns whether it swapped.
    fn install(&self, found: Published) -> bool {
        match found {
            Published::Unchanged => {
                self.loaded_once
                    .store(true, std::sync::atomic::Ordering::Release);
                false
            }
            Published::Unreadable(error) => {
                self.set_error(Some(error));
                false
            }
            Published::Damaged(error) => {
                tracing::error!(%error, "cannot load the published batch snapshot; answering from the previous one");
                self.set_error(Some(error));
                false
            }
            Published::Loaded(snapshot, took) => {
                let run_id = snapshot.pointer.as_ref().map(|p| p.run_id.clone());
                let published_ms = snapshot
                    .pointer
                    .as_ref()
                    .and_then(|p| chrono::DateTime::parse_from_rfc3339(&p.finished_at).ok())
                    .map(|t| t.timestamp_millis());
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(snapshot);
                }
                self.set_error(None);
                self.loaded_once
                    .store(true, std::sync::atomic::Ordering::Release);
                metrics::snapshot_loaded(took, published_ms);
                tracing::info!(run_id = ?run_id, ms = took.as_millis(), "batch snapshot swapped in");
                true
            }
        }
    }

    fn set_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.last_error.write() {
            *slot = error;
        }
    }

    /// Checks for a new snapshot every 100 ms until cancelled.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            self.refresh().await;
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }
}

/// What the snapshot pointer names, against the snapshot in use.
enum Published {
    /// The snapshot in use, or none published yet.
    Unchanged,
    /// The pointer could not be read.
    Unreadable(String),
    /// The snapshot it names could not be loaded.
    Damaged(String),
    /// A newer snapshot, loaded in this long.
    Loaded(Snapshot, Duration),
}

/// Reads the snapshot pointer and, when it names another snapshot than `current`, loads it.
fn read_published(
    config: &Config,
    storage: &dyn Storage,
    current: Option<&SnapshotPointer>,
) -> Published {
    let pointer = match read_pointer(storage) {
        Ok(pointer) => pointer,
        Err(error) => return Published::Unreadable(error.to_string()),
    };
    if pointer.is_none() || pointer.as_ref() == current {
        return Published::Unchanged;
    }
    let started = Instant::now();
    match load(config, storage, pointer) {
        Ok(snapshot) => Published::Loaded(snapshot, started.elapsed()),
        Err(error) => Published::Damaged(error),
    }
}

/// Reads every configured view of the snapshot `pointer` names.
fn load(
    config: &Config,
    storage: &dyn Storage,
    pointer: Option<SnapshotPointer>,
) -> Result<Snapshot, String> {
    let Some(pointer) = pointer else {
        return Ok(Snapshot::default());
    };
    let manifest = SnapshotManifest::read(storage, &pointer.manifest)
        .map_err(|e| format!("snapshot {}: {e}", pointer.run_id))?;
    let mut views = HashMap::new();
    let mut missing = BTreeMap::new();
    for view in &config.views {
        let Some(source) = config.source(&view.source) else {
            continue;
        };
        match braid_columnar::snapshot::read_view(storage, &manifest, view, source) {
            Ok(Some(state)) => {
                // Point reads visit only the key's own cells: indexed before readers arrive.
                if !view.group_by.is_empty() {
                    state.index_keys();
                }
                views.insert(view.name.clone(), Arc::new(state));
            }
            Ok(None) => {
                missing.insert(
                    view.name.clone(),
                    format!(
                        "view {:?} is new or changed since batch snapshot {}; it is answered after the next batch run",
                        view.name, pointer.run_id
                    ),
                );
            }
            Err(error) => return Err(format!("snapshot {}: {error}", pointer.run_id)),
        }
    }
    Ok(Snapshot {
        pointer: Some(pointer),
        manifest: Some(Arc::new(manifest)),
        views,
        missing,
    })
}
