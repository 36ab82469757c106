//! The reader side: [`SpeedHandle`], how the serving layer (and the fraud scorer, and the speed
//! tier's endpoint) reads the speed layer. Readers take the segment map briefly, then each
//! segment's read lock while merging it; they never hold a lock the consumer waits on for long.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use braid_shared::aggregate::MetricState;
use braid_shared::coverage::SpeedCells;
use braid_shared::plan::TopicPlan;
use braid_shared::view::PointKey;
use braid_shared::{
    CellQuery, Coverage, PartitionCells, PartitionStatus, SpeedPositions, SpeedReader,
    TopicPartition, ViewState,
};

use super::Shared;

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
            .map(|(tp, state)| (tp, state.progress().position()))
            .collect()
    }

    /// Messages not yet applied per assigned partition, as of the last broker statistics.
    pub fn lag(&self) -> BTreeMap<TopicPartition, i64> {
        let assigned = self.positions();
        self.shared
            .lag
            .read()
            .map(|lag| {
                lag.iter()
                    .filter(|(tp, _)| assigned.contains_key(*tp))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default()
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
    fn status(&self) -> BTreeMap<TopicPartition, PartitionStatus> {
        let lag = self.lag();
        self.shared
            .assigned()
            .into_iter()
            .map(|(tp, state)| {
                let last = state.last_message_ms.load(Ordering::Relaxed);
                let status = PartitionStatus {
                    position: state.progress().position(),
                    lag_messages: lag.get(&tp).copied(),
                    last_message_ms: (last > 0).then_some(last),
                };
                (tp, status)
            })
            .collect()
    }

    fn read(
        &self,
        view: &str,
        query: &CellQuery,
        coverage: &Coverage,
    ) -> braid_shared::Result<SpeedCells> {
        let mut parts = self.read_parts(view, query, coverage, false)?;
        let partitions = parts.iter().map(|p| (p.tp.clone(), p.status)).collect();
        let missing = self.shared.missing(&self.view_plan(view)?.0.topic);
        let state = match parts.pop() {
            Some(first) => first.state,
            None => {
                let (topic, index) = self.view_plan(view)?;
                ViewState::new(Arc::clone(&topic.views[index]))
            }
        };
        Ok(SpeedCells {
            state,
            partitions,
            missing,
        })
    }

    fn visit_point(
        &self,
        view: &str,
        key: &PointKey,
        (from_ms, to_ms): (i64, i64),
        coverage: &Coverage,
        statuses: bool,
        visit: &mut dyn FnMut(i64, &[MetricState]) -> braid_shared::Result<()>,
    ) -> braid_shared::Result<SpeedPositions> {
        let shared = &self.shared;
        let (topic, index) = self.view_plan(view)?;
        coverage.check_aligned(u64::try_from(shared.segment_size).unwrap_or(1))?;
        let mut positions = SpeedPositions::default();
        // Under the read locks for the whole visit: no copy of the partitions held or the lag.
        // A poisoned lock reads as nothing held, as `Shared::assigned` does.
        let Ok(held) = shared.partitions.read() else {
            return Ok(positions);
        };
        let lag = shared.lag.read().ok();
        for (tp, partition) in held.iter().filter(|(tp, _)| tp.topic == topic.topic) {
            let position = partition.visit_segments(tp, coverage, shared.segment_size, |s| {
                s.views[index].visit_point(key, from_ms, to_ms, &mut *visit)
            })?;
            if statuses {
                let lag = lag.as_ref().and_then(|lag| lag.get(tp).copied());
                let status = partition.status(position, lag);
                positions.partitions.insert(tp.clone(), status);
            }
        }
        drop(held);
        positions.missing = shared.missing(&topic.topic);
        Ok(positions)
    }
}

impl SpeedHandle {
    /// [`SpeedReader::read`] with each partition's cells apart: what the speed tier's endpoint
    /// answers, so a serving tier gathering from several instances takes each partition once.
    pub fn read_each(
        &self,
        view: &str,
        query: &CellQuery,
        coverage: &Coverage,
    ) -> braid_shared::Result<Vec<PartitionCells>> {
        self.read_parts(view, query, coverage, true)
    }

    fn view_plan(&self, view: &str) -> braid_shared::Result<(&TopicPlan, usize)> {
        self.shared
            .plan
            .view(view)
            .ok_or_else(|| braid_shared::Error::UnknownView(view.to_owned()))
    }

    /// The cells of `view` above `coverage` in every partition held: one state per partition
    /// when `apart`, else all of them in the last partition's state (the others' left empty).
    fn read_parts(
        &self,
        view: &str,
        query: &CellQuery,
        coverage: &Coverage,
        apart: bool,
    ) -> braid_shared::Result<Vec<PartitionCells>> {
        let shared = &self.shared;
        let (topic, index) = self.view_plan(view)?;
        let size = u64::try_from(shared.segment_size).unwrap_or(1);
        coverage.check_aligned(size)?;
        let lag = self.lag();
        let held = shared
            .assigned()
            .into_iter()
            .filter(|(tp, _)| tp.topic == topic.topic);
        let fresh = || ViewState::new(Arc::clone(&topic.views[index]));
        let mut merged = fresh();
        let mut parts: Vec<PartitionCells> = Vec::new();
        for (tp, partition) in held {
            let mut own = apart.then(fresh);
            let into = own.as_mut().unwrap_or(&mut merged);
            let position = partition.visit_segments(&tp, coverage, shared.segment_size, |s| {
                into.merge_matching(&s.views[index], query)
            })?;
            parts.push(PartitionCells {
                status: partition.status(position, lag.get(&tp).copied()),
                tp,
                state: own.unwrap_or_else(fresh),
            });
        }
        if let (false, Some(last)) = (apart, parts.last_mut()) {
            last.state = merged;
        }
        Ok(parts)
    }
}
