//! Checkpoints of one partition: its next offset, batch floor, the rejected-log chunks it
//! covers and the state of every segment. Framed by `braid_store::checkpoint` (a torn or
//! foreign file is detected, never trusted); the payload is postcard.
//!
//! Format 2 counts the rejected log in chunks; format 1 (older versions) counted bytes of a
//! single-file log, which a restore migrates.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use braid_store::checkpoint::{Unframed, frame, unframe};
use braid_store::layout;
use braid_store::rejected::Keep;

use braid_shared::{TopicPartition, ViewState};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics;
use crate::state::{PartitionState, Progress, Segment, Shared};
use braid_shared::plan::TopicPlan;

const FORMAT_VERSION: u8 = 2;
/// The format before rejected logs were chunked; its `rejected` counts bytes.
const FORMAT_VERSION_BYTES_LOG: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Payload {
    topic: String,
    partition: i32,
    next_offset: i64,
    floor: i64,
    segment_size: i64,
    /// Chunks of the rejected log covered (format 1: bytes of the single-file log).
    rejected: u64,
    views: Vec<(String, u64)>,
    /// (segment index, next offset within it, encoded state of each view)
    segments: Vec<(i64, i64, Vec<Vec<u8>>)>,
}

/// What a checkpoint restores.
pub(crate) struct Restored {
    pub progress: Progress,
    /// What of the rejected log the checkpoint covers.
    pub rejected: Keep,
    pub segments: BTreeMap<i64, Segment>,
}

/// Encodes a partition's state. Each segment is read under its lock, with its own offset.
pub(crate) fn encode(
    plan: &TopicPlan,
    state: &PartitionState,
    segment_size: i64,
    rejected_chunks: u64,
) -> Vec<u8> {
    let progress = state.progress();
    let segments = state
        .segments()
        .into_iter()
        .filter_map(|(index, segment)| {
            let segment = segment.read().ok()?;
            Some((
                index,
                segment.next_offset,
                segment.views.iter().map(ViewState::encode).collect(),
            ))
        })
        .collect();
    let payload = Payload {
        topic: state.tp.topic.clone(),
        partition: state.tp.partition,
        next_offset: progress.next_offset,
        floor: progress.floor,
        segment_size,
        rejected: rejected_chunks,
        views: plan.view_ids(),
        segments,
    };
    frame(
        FORMAT_VERSION,
        &postcard::to_stdvec(&payload).unwrap_or_default(),
    )
}

/// Why a checkpoint cannot be restored.
#[derive(Debug)]
pub(crate) enum Unusable {
    /// Written for other view definitions or another segment size: rebuild the partition.
    Incompatible(String),
    /// Damaged: rebuild the partition and say so loudly.
    Corrupt(String),
}

/// Decodes a checkpoint of `tp` for the current plan.
pub(crate) fn decode(
    plan: &TopicPlan,
    tp: &TopicPartition,
    segment_size: i64,
    bytes: &[u8],
) -> std::result::Result<Restored, Unusable> {
    let corrupt = |reason: &str| Unusable::Corrupt(reason.to_owned());
    let (version, body) = unframe(bytes).map_err(|e: Unframed| corrupt(&e.to_string()))?;
    if version != FORMAT_VERSION && version != FORMAT_VERSION_BYTES_LOG {
        return Err(Unusable::Incompatible(format!("format version {version}")));
    }
    let payload: Payload =
        postcard::from_bytes(body).map_err(|e| Unusable::Corrupt(e.to_string()))?;
    if payload.topic != tp.topic || payload.partition != tp.partition {
        return Err(Unusable::Corrupt(format!(
            "holds {}/{}",
            payload.topic, payload.partition
        )));
    }
    if payload.views != plan.view_ids() {
        return Err(Unusable::Incompatible(
            "the topic's views changed".to_owned(),
        ));
    }
    if payload.segment_size != segment_size {
        return Err(Unusable::Incompatible(format!(
            "segment size {} != configured {segment_size}",
            payload.segment_size
        )));
    }
    let mut segments = BTreeMap::new();
    for (index, next_offset, views) in payload.segments {
        if views.len() != plan.views.len() {
            return Err(corrupt("segment with the wrong number of views"));
        }
        let states = views
            .iter()
            .zip(&plan.views)
            .map(|(bytes, view)| ViewState::decode(Arc::clone(view), bytes))
            .collect::<braid_shared::Result<Vec<_>>>()
            .map_err(|e| Unusable::Corrupt(e.to_string()))?;
        segments.insert(
            index,
            Segment {
                views: states,
                next_offset,
            },
        );
    }
    Ok(Restored {
        progress: Progress {
            next_offset: payload.next_offset,
            floor: payload.floor,
        },
        rejected: if version == FORMAT_VERSION_BYTES_LOG {
            Keep::LegacyBytes(payload.rejected)
        } else {
            Keep::Chunks {
                chunks: payload.rejected,
                replay_from: payload.next_offset,
            }
        },
        segments,
    })
}

/// A partition's checkpoint, encoded and not yet written.
pub(crate) struct Taken {
    pub bytes: Vec<u8>,
    /// The offset the checkpoint resumes from.
    pub next_offset: i64,
}

/// Takes a partition's checkpoint after making its rejected log durable: the events applied so
/// far count as checkpointed from here on.
pub(crate) fn take(plan: &TopicPlan, state: &PartitionState, segment_size: i64) -> Result<Taken> {
    // The writer lock keeps the consumer out while the checkpoint is taken.
    let mut writer = state
        .writer
        .lock()
        .map_err(|_| Error::Internal(format!("state of {} is unusable after a panic", state.tp)))?;
    let rejected_chunks = writer.rejected.sync()?;
    let bytes = encode(plan, state, segment_size, rejected_chunks);
    writer.pending = 0;
    Ok(Taken {
        bytes,
        next_offset: state.progress().next_offset,
    })
}

/// Writes a taken checkpoint durably, over the version this owner holds.
pub(crate) fn persist(shared: &Shared, state: &PartitionState, taken: &Taken) -> Result<()> {
    // The alerts of the events this checkpoint covers were handed over before it was taken:
    // they are durable before it is.
    if let Some(scoring) = &shared.scoring {
        scoring.scorer.flush().map_err(|why| {
            Error::Internal(format!(
                "making the fraud alerts of {} durable: {why}",
                state.tp
            ))
        })?;
    }
    let mut held = state
        .checkpoint
        .lock()
        .map_err(|_| Error::Internal(format!("state of {} is unusable after a panic", state.tp)))?;
    let key = layout::speed_checkpoint(&state.tp.topic, state.tp.partition);
    let version =
        braid_store::storage::put_over(shared.storage.as_ref(), &key, &taken.bytes, held.as_ref())
            .map_err(braid_store::Error::from)?
            .ok_or(braid_store::Error::Conflict { key })?;
    *held = Some(version);
    Ok(())
}

/// Takes and writes a partition's checkpoint now. Returns the bytes written.
pub(crate) fn write(shared: &Shared, plan: &TopicPlan, state: &PartitionState) -> Result<usize> {
    let taken = take(plan, state, shared.segment_size)?;
    persist(shared, state, &taken)?;
    Ok(taken.bytes.len())
}

/// Writes checkpoints taken on the consumer thread on a thread of its own, in the order they
/// were taken, so that a slow file sync or object store write never holds up applying events
/// (a 1 MB checkpoint's sync sometimes takes over 100 ms on a busy disk).
pub(crate) struct Background {
    jobs: Option<SyncSender<Job>>,
    outcome: Arc<(Mutex<Outcome>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Job {
    state: Arc<PartitionState>,
    taken: Taken,
    started: Instant,
}

#[derive(Default)]
struct Outcome {
    /// Checkpoints written since last reported: partition and the offset each resumes from.
    written: Vec<(TopicPartition, i64)>,
    /// The first write that failed since last reported.
    failed: Option<Error>,
    in_flight: usize,
}

/// Checkpoints handed over and not yet written, at most: the consumer takes no new one of a
/// partition whose previous one is still being written.
const BACKGROUND_QUEUE: usize = 256;

impl Background {
    pub fn start(shared: Arc<Shared>) -> Result<Self> {
        let (send, jobs) = sync_channel::<Job>(BACKGROUND_QUEUE);
        let outcome = Arc::new((Mutex::new(Outcome::default()), Condvar::new()));
        let reported = Arc::clone(&outcome);
        let thread = std::thread::Builder::new()
            .name("braid-checkpoint".to_owned())
            .spawn(move || {
                for job in jobs {
                    let result = persist(&shared, &job.state, &job.taken);
                    metrics::checkpoint(job.started.elapsed().as_secs_f64(), job.taken.bytes.len());
                    job.state.writing.store(false, Ordering::Release);
                    let (lock, done) = &*reported;
                    if let Ok(mut outcome) = lock.lock() {
                        outcome.in_flight -= 1;
                        match result {
                            Ok(()) => outcome
                                .written
                                .push((job.state.tp.clone(), job.taken.next_offset)),
                            Err(error) => {
                                outcome.failed.get_or_insert(error);
                            }
                        }
                    }
                    done.notify_all();
                }
            })
            .map_err(Error::io("the checkpoint writer thread"))?;
        Ok(Self {
            jobs: Some(send),
            outcome,
            thread: Some(thread),
        })
    }

    /// Takes a partition's checkpoint and hands it to the writer thread, unless the previous
    /// one is still being written (then the events stay pending for the next round).
    pub fn submit(
        &self,
        plan: &TopicPlan,
        state: &Arc<PartitionState>,
        segment_size: i64,
    ) -> Result<()> {
        if state.writing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let started = Instant::now();
        let taken = match take(plan, state, segment_size) {
            Ok(taken) => taken,
            Err(error) => {
                state.writing.store(false, Ordering::Release);
                return Err(error);
            }
        };
        self.lock()?.in_flight += 1;
        let job = Job {
            state: Arc::clone(state),
            taken,
            started,
        };
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            self.lock()?.in_flight -= 1;
            state.writing.store(false, Ordering::Release);
            return Err(stopped());
        }
        Ok(())
    }

    /// The checkpoints written since the last call, or the first write that failed.
    pub fn written(&self) -> Result<Vec<(TopicPartition, i64)>> {
        let mut outcome = self.lock()?;
        match outcome.failed.take() {
            Some(error) => Err(error),
            None => Ok(std::mem::take(&mut outcome.written)),
        }
    }

    /// Waits until every checkpoint handed over is written; then as [`Background::written`].
    pub fn wait(&self) -> Result<Vec<(TopicPartition, i64)>> {
        let (_, done) = &*self.outcome;
        let mut outcome = self.lock()?;
        while outcome.in_flight > 0 {
            // A writer thread that died (a panic) leaves checkpoints unwritten: say so rather
            // than wait for ever.
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(stopped());
            }
            outcome = done
                .wait_timeout(outcome, Duration::from_millis(100))
                .map_err(|_| Error::Internal("the checkpoint writer panicked".to_owned()))?
                .0;
        }
        drop(outcome);
        self.written()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Outcome>> {
        self.outcome
            .0
            .lock()
            .map_err(|_| Error::Internal("the checkpoint writer panicked".to_owned()))
    }
}

fn stopped() -> Error {
    Error::Internal("the checkpoint writer thread stopped with checkpoints unwritten".to_owned())
}

impl Drop for Background {
    fn drop(&mut self) {
        // The thread ends after the checkpoints queued.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
