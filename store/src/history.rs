//! The persisted run history: one JSON record per run under `batch/history/`, written
//! atomically at every state change, newest listed first.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use braid_shared::Coverage;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout;
use crate::storage::{Storage, put_over};

/// The longest run id there can be (ids are made by [`History::new_id`], far shorter).
pub const MAX_RUN_ID_LEN: usize = 128;

/// Refuses, as an unknown run, an id no run can have: empty, longer than
/// [`MAX_RUN_ID_LEN`], or with characters other than ASCII letters, digits, `-` and `_` (so an
/// id never names a path).
pub fn check_run_id(id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id.len() <= MAX_RUN_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::UnknownRun(id.to_owned()))
    }
}

/// Records kept; older ones are removed.
const KEEP_RECORDS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `braid batch`.
    Command,
    /// `[batch] interval`.
    Schedule,
    /// `POST /v1/batch/runs`.
    Api,
}

/// How a run produced one view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewRun {
    /// `full`, `incremental`, or `unchanged` (no new archive data for it).
    pub mode: String,
    /// Why a full recompute, when it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub rows_read: u64,
    /// Cells in the layer this run wrote.
    pub cells_written: u64,
    pub layers: usize,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub state: RunState,
    pub trigger: Trigger,
    /// A full recompute was asked for (`--full`).
    pub full: bool,
    pub requested_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// The coverage the run published.
    #[serde(default)]
    pub coverage: Option<Coverage>,
    pub rows_read: u64,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub rows_per_second: Option<f64>,
    #[serde(default)]
    pub views: BTreeMap<String, ViewRun>,
    #[serde(default)]
    pub error: Option<String>,
    /// The process that queued or ran it.
    pub pid: u32,
    /// The shards of a sharded run (`braid batch --shards N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
}

impl RunRecord {
    pub fn queued(id: String, trigger: Trigger, full: bool) -> Self {
        Self {
            id,
            state: RunState::Queued,
            trigger,
            full,
            requested_at: now_rfc3339(),
            started_at: None,
            finished_at: None,
            coverage: None,
            rows_read: 0,
            duration_ms: None,
            rows_per_second: None,
            views: BTreeMap::new(),
            error: None,
            pid: std::process::id(),
            shards: None,
        }
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How a process that runs batch recomputes takes requests for one (`POST /v1/batch/runs`).
pub trait BatchControl: Send + Sync {
    /// Queues a run (a full recompute when `full`) and returns its id at once.
    fn request(&self, full: bool) -> Result<String>;
}

/// Requests waiting in storage at most; more are refused until the batch instance takes one.
pub const STORED_REQUESTS: usize = 4;

/// Runs requested through storage, for a process with no batch layer of its own: the request
/// is a queued run record (listed by `GET /v1/batch/runs` at once) plus a create-once request
/// object under `batch/requests/`, which the batch instance's scheduler takes.
#[derive(Debug, Clone)]
pub struct StoredRequests {
    history: History,
}

impl StoredRequests {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            history: History::new(storage),
        }
    }
}

impl BatchControl for StoredRequests {
    fn request(&self, full: bool) -> Result<String> {
        let waiting = self.history.requests()?;
        if waiting.len() >= STORED_REQUESTS {
            return Err(Error::QueueFull(STORED_REQUESTS));
        }
        let record = RunRecord::queued(self.history.new_id(), Trigger::Api, full);
        self.history.save(&record)?;
        let json = serde_json::to_vec(&record).map_err(|e| Error::Encode {
            what: "run request",
            reason: e.to_string(),
        })?;
        self.history
            .storage
            .put_if_absent(&layout::request(&record.id), &json)?;
        Ok(record.id)
    }
}

/// The run records of a storage dir.
#[derive(Debug, Clone)]
pub struct History {
    storage: Arc<dyn Storage>,
}

impl History {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self { storage }
    }

    /// A new run id, sortable by time: `run-YYYYMMDD-HHMMSS-mmm[-n]`.
    /// An id whose record cannot be read counts as taken.
    pub fn new_id(&self) -> String {
        let base = chrono::Utc::now()
            .format("run-%Y%m%d-%H%M%S-%3f")
            .to_string();
        let mut id = base.clone();
        let mut n = 1;
        while n < 1000 && !matches!(self.storage.get(&layout::history(&id)), Ok(None)) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }

    /// Saves a record. Records change state from several places (the run, a process marking
    /// interrupted runs); the last save wins.
    pub fn save(&self, record: &RunRecord) -> Result<()> {
        let key = layout::history(&record.id);
        let json = serde_json::to_vec_pretty(record).map_err(|e| Error::Encode {
            what: "run record",
            reason: e.to_string(),
        })?;
        loop {
            let held = self.storage.get(&key)?.map(|o| o.version);
            if put_over(self.storage.as_ref(), &key, &json, held.as_ref())?.is_some() {
                return Ok(());
            }
        }
    }

    pub fn get(&self, id: &str) -> Result<RunRecord> {
        check_run_id(id)?;
        let key = layout::history(id);
        match self.storage.get(&key)? {
            Some(object) => serde_json::from_slice(&object.bytes)
                .map_err(|e| Error::codec("run record", &key)(e.to_string())),
            None => Err(Error::UnknownRun(id.to_owned())),
        }
    }

    /// Run ids, newest first.
    fn ids(&self) -> Result<Vec<String>> {
        let prefix = format!("{}/", layout::HISTORY);
        let mut ids: Vec<String> = self
            .storage
            .list(&prefix)?
            .into_iter()
            .filter_map(|l| {
                let name = l.key.strip_prefix(&prefix)?;
                (!name.starts_with('.') && !name.contains('/'))
                    .then(|| name.strip_suffix(".json").map(str::to_owned))
                    .flatten()
            })
            .collect();
        ids.sort_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// The newest `limit` records, newest first. Unreadable records are skipped.
    pub fn list(&self, limit: usize) -> Result<Vec<RunRecord>> {
        Ok(self
            .ids()?
            .into_iter()
            .take(limit)
            .filter_map(|id| self.get(&id).ok())
            .collect())
    }

    /// Marks runs left `running` (their process held the run lock, which is now free) or
    /// `queued` by a process that is gone as failed; sharded runs are left alone.
    pub fn mark_interrupted(&self, current: &str) -> Result<()> {
        for id in self.ids()?.into_iter().take(KEEP_RECORDS) {
            if id == current {
                continue;
            }
            let Ok(mut record) = self.get(&id) else {
                continue;
            };
            let stale = match record.state {
                // A sharded run holds no lease while its shards compute: its merge, or the
                // next sharded run, settles it.
                RunState::Running => record.shards.is_none(),
                RunState::Queued => record.pid != std::process::id() && !process_alive(record.pid),
                _ => false,
            };
            if stale {
                record.state = RunState::Failed;
                record.finished_at = Some(now_rfc3339());
                record.error =
                    Some("interrupted: the process running it stopped before it finished".into());
                self.save(&record)?;
            }
        }
        Ok(())
    }

    /// Keys of the runs requested through storage, oldest first.
    fn requests(&self) -> Result<Vec<String>> {
        let prefix = format!("{}/", layout::REQUESTS);
        let mut keys: Vec<String> = self
            .storage
            .list(&prefix)?
            .into_iter()
            .map(|l| l.key)
            .filter(|k| k.ends_with(".json"))
            .collect();
        // By run id (`...-625` before `...-625-1`), not by key.
        keys.sort_by(|a, b| a.trim_end_matches(".json").cmp(b.trim_end_matches(".json")));
        Ok(keys)
    }

    /// Takes the oldest run requested through storage ([`StoredRequests`]), if any: its
    /// request object is removed, its record is returned to be run.
    pub fn take_request(&self) -> Result<Option<RunRecord>> {
        let Some(key) = self.requests()?.into_iter().next() else {
            return Ok(None);
        };
        let record = match self.storage.get(&key)? {
            Some(object) => serde_json::from_slice::<RunRecord>(&object.bytes)
                .map_err(|e| Error::codec("run request", &key)(e.to_string())),
            None => return Ok(None),
        };
        self.storage.delete(&key)?;
        let mut record = record?;
        // The batch instance runs it from here on.
        record.pid = std::process::id();
        Ok(Some(record))
    }

    /// Removes the oldest records beyond the kept number.
    pub fn prune(&self) -> Result<()> {
        for id in self.ids()?.into_iter().skip(KEEP_RECORDS) {
            self.storage.delete(&layout::history(&id))?;
        }
        Ok(())
    }
}

/// Whether a process is alive (Linux's /proc; elsewhere assumed alive).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.exists() || proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStorage;

    #[test]
    fn runs_requested_through_storage_are_taken_oldest_first_once_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        let control = StoredRequests::new(Arc::clone(&storage));
        let history = History::new(storage);
        let ids: Vec<String> = (0..STORED_REQUESTS)
            .map(|i| control.request(i % 2 == 0).unwrap())
            .collect();
        // Listed at once, queued.
        for id in &ids {
            let record = history.get(id).unwrap();
            assert_eq!(
                (record.state, record.trigger),
                (RunState::Queued, Trigger::Api)
            );
        }
        assert!(matches!(
            control.request(false),
            Err(Error::QueueFull(STORED_REQUESTS))
        ));
        let first = history.take_request().unwrap().unwrap();
        assert_eq!((first.id.as_str(), first.full), (ids[0].as_str(), true));
        // Taken once; room for one more.
        let more = control.request(false).unwrap();
        let mut taken = vec![first.id];
        while let Some(record) = history.take_request().unwrap() {
            taken.push(record.id);
        }
        let mut expected = ids.clone();
        expected.push(more);
        assert_eq!(taken, expected);
    }
}
