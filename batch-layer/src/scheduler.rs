//! Runs recomputes inside a long-running process: every `[batch] interval`, and whenever one is
//! requested (the HTTP API of this process, or of a serving instance elsewhere through a request
//! object in storage). One dedicated thread runs them one at a time, so Polars never runs
//! on the async runtime.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use braid_shared::Config;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::run::BatchRunner;
use braid_store::{BatchControl, History, RunRecord, Storage, Trigger};

/// Requested runs waiting at most; more are refused until one finishes.
const QUEUE: usize = 4;
const TICK: Duration = Duration::from_millis(200);

/// Asks the scheduler for runs and reads the history.
#[derive(Clone)]
pub struct BatchHandle {
    sender: SyncSender<RunRecord>,
    history: History,
}

impl BatchHandle {
    pub fn history(&self) -> &History {
        &self.history
    }
}

impl BatchControl for BatchHandle {
    fn request(&self, full: bool) -> braid_store::Result<String> {
        let record = RunRecord::queued(self.history.new_id(), Trigger::Api, full);
        let id = record.id.clone();
        self.history.save(&record)?;
        match self.sender.try_send(record) {
            Ok(()) => Ok(id),
            Err(TrySendError::Full(mut record) | TrySendError::Disconnected(mut record)) => {
                record.state = braid_store::RunState::Failed;
                record.error = Some("not started: too many runs are already queued".into());
                self.history.save(&record)?;
                Err(braid_store::Error::QueueFull(QUEUE))
            }
        }
    }
}

/// The scheduler thread.
pub struct BatchScheduler {
    handle: BatchHandle,
    thread: JoinHandle<()>,
}

impl BatchScheduler {
    /// Runs batch runs over the archive in `storage`, every `batch.interval` and on request,
    /// on a thread of its own until `cancel` fires.
    pub fn start(
        config: &Config,
        storage: Arc<dyn Storage>,
        cancel: CancellationToken,
    ) -> Result<Self> {
        let runner = BatchRunner::new(config, storage)?;
        let history = runner.history().clone();
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        let interval = config.batch.interval.0;
        crate::metrics::scheduler_started(interval, last_succeeded(&history));
        let thread = std::thread::Builder::new()
            .name("braid-batch".to_owned())
            .spawn(move || schedule(runner, receiver, interval, cancel))
            .map_err(Error::io("spawning the batch thread"))?;
        Ok(Self {
            handle: BatchHandle { sender, history },
            thread,
        })
    }

    pub fn handle(&self) -> BatchHandle {
        self.handle.clone()
    }

    /// Waits for the thread to stop (after cancellation; a run in progress finishes first).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the batch thread panicked");
        }
    }
}

/// When the newest successful run in the kept history finished, in Unix seconds.
fn last_succeeded(history: &History) -> Option<f64> {
    let records = history
        .list(usize::MAX)
        .map_err(|error| tracing::warn!(%error, "reading the run history"))
        .ok()?;
    records
        .iter()
        .filter(|r| r.state == braid_store::RunState::Succeeded)
        .find_map(|r| r.finished_at.as_deref())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

fn schedule(
    runner: BatchRunner,
    requests: Receiver<RunRecord>,
    interval: Option<Duration>,
    cancel: CancellationToken,
) {
    let mut next = interval.map(|i| Instant::now() + i);
    while !cancel.is_cancelled() {
        let record = match requests.recv_timeout(TICK) {
            Ok(record) => Some(record),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let due = next.is_some_and(|n| Instant::now() >= n);
        // Runs requested through storage by serving instances in other processes.
        let record = record.or_else(|| {
            runner
                .history()
                .take_request()
                .map_err(|error| tracing::warn!(%error, "reading the run requests in storage"))
                .ok()
                .flatten()
        });
        let record = match (record, due) {
            (Some(record), _) => record,
            (None, true) => RunRecord::queued(runner.history().new_id(), Trigger::Schedule, false),
            (None, false) => continue,
        };
        if due {
            next = interval.map(|i| Instant::now() + i);
        }
        if let Err(error) = runner
            .history()
            .save(&record)
            .map_err(Error::from)
            .and_then(|()| runner.run_queued(record, &cancel))
        {
            tracing::error!(%error, "batch run did not start");
        }
    }
    tracing::info!("batch scheduler stopped");
}
