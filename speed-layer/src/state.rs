//! Speed state: per partition, per offset segment, one [`ViewState`] per view of the topic.
//! Segments let a published batch coverage drop exactly the events it includes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use braid_shared::coverage::SpeedCells;
use braid_shared::storage::RejectedRecord;
use braid_shared::{CellQuery, Coverage, Event, SpeedReader, TopicPartition, ViewState};

use crate::metrics;
use crate::plan::{Plan, TopicPlan};
use crate::rejected::RejectedLog;

/// One consumed message, borrowed from the consumer.
pub(crate) struct Message<'a> {
    pub offset: i64,
    pub payload: &'a [u8],
}

/// The state of one assigned partition.
pub(crate) struct PartitionState {
    pub tp: TopicPartition,
    /// Every offset below this has been applied (or lies below `floor`).
    pub next_offset: i64,
    /// Batch coverage: events below it are in a snapshot and never held here.
    pub floor: i64,
    /// Segment index -> state of each of the topic's views.
    pub segments: BTreeMap<i64, Vec<ViewState>>,
    pub rejected: RejectedLog,
    /// Events applied since the last checkpoint.
    pub pending: u64,
}

impl PartitionState {
    /// Applies consecutive messages of this partition. Messages below `next_offset` (redelivered)
    /// or below `floor` (covered by the batch layer) are skipped. Returns events applied.
    pub fn apply(
        &mut self,
        plan: &TopicPlan,
        messages: &[Message<'_>],
        segment_size: i64,
        now_ms: i64,
    ) -> crate::Result<u64> {
        let fresh: Vec<&Message<'_>> = messages
            .iter()
            .filter(|m| m.offset >= self.next_offset && m.offset >= self.floor)
            .collect();
        let Some(last) = fresh.last() else {
            return Ok(0);
        };
        let mut applied = 0;
        let mut events: Vec<Event> = Vec::with_capacity(fresh.len());
        for run in fresh.chunk_by(|a, b| a.offset / segment_size == b.offset / segment_size) {
            let segment = run[0].offset / segment_size;
            for source in &plan.sources {
                events.clear();
                for message in run {
                    match source.decoder.decode(message.payload) {
                        Ok(event) => events.push(event),
                        Err(reason) => {
                            metrics::rejected(&source.name, reason.code());
                            tracing::debug!(topic = %self.tp.topic, partition = self.tp.partition, offset = message.offset, %reason, "rejected event");
                            self.rejected.append(&RejectedRecord {
                                source: source.name.clone(),
                                topic: self.tp.topic.clone(),
                                partition: self.tp.partition,
                                offset: message.offset,
                                reason,
                                raw: RejectedRecord::bounded_raw(message.payload),
                                raw_bytes: message.payload.len(),
                                rejected_at_ms: now_ms,
                            })?;
                        }
                    }
                }
                metrics::consumed(&source.name, run.len() as u64);
                metrics::applied(&source.name, events.len() as u64);
                applied += events.len() as u64;
                if events.is_empty() {
                    continue;
                }
                let views = self.segments.entry(segment).or_insert_with(|| {
                    plan.views
                        .iter()
                        .map(|v| ViewState::new(Arc::clone(v)))
                        .collect()
                });
                for &i in &source.views {
                    views[i].apply(&events);
                }
            }
        }
        self.next_offset = last.offset + 1;
        self.pending += fresh.len() as u64;
        Ok(applied)
    }

    /// Drops the segments a batch coverage includes. `coverage` must be segment-aligned.
    pub fn drop_below(&mut self, coverage: i64, segment_size: i64) {
        if coverage <= self.floor {
            return;
        }
        self.segments
            .retain(|&segment, _| segment * segment_size >= coverage);
        self.floor = coverage;
        self.next_offset = self.next_offset.max(coverage);
    }

    /// Number of live cells per view.
    pub fn cells_per_view(&self, views: usize) -> Vec<usize> {
        let mut cells = vec![0; views];
        for states in self.segments.values() {
            for (n, state) in cells.iter_mut().zip(states) {
                *n += state.len();
            }
        }
        cells
    }
}

/// The state the consumer thread writes and readers read.
pub(crate) struct Shared {
    pub plan: Plan,
    pub storage_dir: PathBuf,
    pub segment_size: i64,
    pub partitions: RwLock<BTreeMap<TopicPartition, Arc<RwLock<PartitionState>>>>,
    /// The newest batch coverage the speed layer has acted on.
    pub coverage: RwLock<Coverage>,
}

impl Shared {
    pub fn partition(&self, tp: &TopicPartition) -> Option<Arc<RwLock<PartitionState>>> {
        self.partitions.read().ok()?.get(tp).cloned()
    }

    pub fn assigned(&self) -> Vec<(TopicPartition, Arc<RwLock<PartitionState>>)> {
        self.partitions
            .read()
            .map(|map| {
                map.iter()
                    .map(|(k, v)| (k.clone(), Arc::clone(v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn storage_dir(&self) -> &Path {
        &self.storage_dir
    }
}

/// A cheap, cloneable handle for reading the speed layer's views.
#[derive(Clone)]
pub struct SpeedHandle {
    pub(crate) shared: Arc<Shared>,
}

impl SpeedHandle {
    /// Per assigned partition, the next offset to apply.
    pub fn positions(&self) -> BTreeMap<TopicPartition, i64> {
        self.shared
            .assigned()
            .into_iter()
            .filter_map(|(tp, state)| state.read().ok().map(|s| (tp, s.next_offset)))
            .collect()
    }

    /// The batch coverage the speed layer last acted on.
    pub fn coverage(&self) -> Coverage {
        self.shared
            .coverage
            .read()
            .map(|c| c.clone())
            .unwrap_or_default()
    }
}

impl SpeedReader for SpeedHandle {
    fn read(
        &self,
        view: &str,
        query: &CellQuery,
        coverage: &Coverage,
    ) -> braid_shared::Result<SpeedCells> {
        let shared = &self.shared;
        let (topic, index) = shared
            .plan
            .view(view)
            .ok_or_else(|| braid_shared::Error::UnknownView(view.to_owned()))?;
        let size = u64::try_from(shared.segment_size).unwrap_or(1);
        coverage.check_aligned(size)?;
        let mut state = ViewState::new(Arc::clone(&topic.views[index]));
        let mut positions = BTreeMap::new();
        for (tp, partition) in shared
            .assigned()
            .into_iter()
            .filter(|(tp, _)| tp.topic == topic.topic)
        {
            let Ok(partition) = partition.read() else {
                continue;
            };
            let covered = coverage.of(&tp);
            if covered < partition.floor {
                return Err(braid_shared::Error::Coverage(format!(
                    "{tp}: events below offset {} were dropped for a newer snapshot; asked from {covered}",
                    partition.floor
                )));
            }
            for (&segment, views) in &partition.segments {
                if segment * shared.segment_size >= covered {
                    state.merge_matching(&views[index], query)?;
                }
            }
            positions.insert(tp, partition.next_offset);
        }
        Ok(SpeedCells { state, positions })
    }
}
