//! Partition hand-over. On assignment a partition's state is restored from its checkpoint and
//! the consumer is positioned exactly after it (Kafka's committed offsets are not trusted); on
//! revocation the state is checkpointed before the partition is released, so the next owner
//! continues exactly where this one stopped.

use std::sync::Arc;

use braid_kafka::{Broker, ResumeRecord};
use braid_shared::TopicPartition;
use braid_store::layout;
use braid_store::rejected::{Keep, RejectedLog};

use crate::checkpoint::{self, Unusable};
use crate::error::{Error, Result};
use crate::state::{PartitionState, Progress, Shared};

pub(crate) struct SpeedPartitions {
    pub shared: Arc<Shared>,
    /// Checkpoints being written: a released partition's last one is written after them.
    pub background: Arc<checkpoint::Background>,
}

impl braid_kafka::Partitions for SpeedPartitions {
    type Error = Error;

    /// Restores a partition from its checkpoint, or starts it at the batch coverage.
    fn take_up(&self, tp: &TopicPartition, broker: &Broker<'_>) -> Result<Option<i64>> {
        let shared = &self.shared;
        let plan = shared.plan.assigned(tp)?;
        let coverage = shared.coverage.read().map(|c| c.of(tp)).unwrap_or(0);
        let storage = &shared.storage;
        let key = layout::speed_checkpoint(&tp.topic, tp.partition);
        let path = storage.location(&key);
        let object = storage.get(&key).map_err(braid_store::Error::from)?;
        let held = object.as_ref().map(|o| o.version.clone());
        let restored = match object {
            Some(object) => {
                match checkpoint::decode(plan, tp, shared.segment_size, &object.bytes) {
                    Ok(restored) => Some(restored),
                    Err(Unusable::Incompatible(why)) => {
                        tracing::warn!(partition = %tp, why, "checkpoint is for another configuration; rebuilding from the broker");
                        None
                    }
                    Err(Unusable::Corrupt(why)) => {
                        tracing::error!(partition = %tp, why, path = %path.display(), "checkpoint is damaged; rebuilding from the broker");
                        None
                    }
                }
            }
            None => None,
        };
        let state = match restored {
            Some(restored) => {
                broker.check_resume(
                    tp,
                    restored.progress.next_offset,
                    ResumeRecord::Checkpoint,
                    &path,
                )?;
                // The consumer resumes at the checkpoint's offset even below the coverage, so
                // the rejections past it are read again and the log keeps only what is below.
                let rejected = RejectedLog::open(
                    Arc::clone(storage),
                    &tp.topic,
                    tp.partition,
                    restored.rejected,
                )?;
                PartitionState::new(
                    tp.clone(),
                    restored.progress,
                    restored.segments,
                    rejected,
                    held,
                )
            }
            None => {
                if coverage > 0 {
                    let pointer = storage.location(layout::SNAPSHOT_POINTER);
                    broker.check_resume(tp, coverage, ResumeRecord::SnapshotCoverage, &pointer)?;
                }
                let rejected = RejectedLog::open(
                    Arc::clone(storage),
                    &tp.topic,
                    tp.partition,
                    Keep::BelowOffset(coverage),
                )?;
                let start = Progress {
                    next_offset: coverage,
                    floor: coverage,
                };
                PartitionState::new(tp.clone(), start, Default::default(), rejected, held)
            }
        };
        state.drop_below(coverage, shared.segment_size);
        let Progress { next_offset, floor } = state.progress();
        tracing::info!(partition = %tp, start = next_offset, floor, "speed partition taken up");
        if let Ok(mut map) = shared.partitions.write() {
            map.insert(tp.clone(), Arc::new(state));
        }
        // Nothing read and nothing covered: the log's first offset, wherever retention left it.
        Ok((next_offset > 0).then_some(next_offset))
    }

    /// Checkpoints and forgets a partition.
    fn release(&self, tp: &TopicPartition) -> Result<()> {
        let shared = &self.shared;
        let removed = shared
            .partitions
            .write()
            .ok()
            .and_then(|mut map| map.remove(tp));
        let (Some(state), Some(plan)) = (removed, shared.plan.topic(&tp.topic)) else {
            return Ok(());
        };
        self.background.wait()?;
        checkpoint::write(shared, plan, &state)?;
        let next_offset = state.progress().next_offset;
        tracing::info!(partition = %tp, next_offset, "partition released");
        Ok(())
    }

    /// Forgets a partition another speed instance took over (nothing written: a checkpoint
    /// written now would be refused, or would refuse the new owner's).
    fn forget(&self, tp: &TopicPartition) {
        if let Ok(mut map) = self.shared.partitions.write() {
            map.remove(tp);
        }
    }

    fn listed(&self, partitions: &std::collections::BTreeSet<TopicPartition>) {
        if let Ok(mut listed) = self.shared.listed.write() {
            listed.clone_from(partitions);
        }
    }

    fn held(&self) -> Vec<TopicPartition> {
        self.shared
            .assigned()
            .into_iter()
            .map(|(tp, _)| tp)
            .collect()
    }

    fn resume_record(&self, tp: &TopicPartition) -> (ResumeRecord, std::path::PathBuf) {
        let key = layout::speed_checkpoint(&tp.topic, tp.partition);
        (ResumeRecord::Checkpoint, self.shared.storage.location(&key))
    }

    fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.shared
            .partition(tp)
            .map(|state| state.progress().next_offset)
    }

    fn record_lag(&self, tp: &TopicPartition, lag: i64) {
        crate::metrics::lag(&tp.topic, tp.partition, lag);
        if let Ok(mut lags) = self.shared.lag.write() {
            lags.insert(tp.clone(), lag);
        }
    }
}
