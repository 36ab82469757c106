//! Where an answer's numbers come from: the batch run and its coverage, the speed layer's
//! positions and lag, all from the one read the answer was merged from.

use std::collections::BTreeMap;

use braid_shared::aggregate::MetricState;
use braid_shared::{MetricExpr, PartitionStatus, TopicPartition, ViewDef};
use serde::Serialize;
use utoipa::ToSchema;

use super::Groups;
use crate::snapshot::Snapshot;

/// Where an answer's numbers come from.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Provenance {
    /// The batch snapshot merged in; `null` before the first one.
    pub batch: Option<BatchProvenance>,
    /// The speed layer's part; `null` when no speed layer runs in this process.
    pub speed: Option<SpeedProvenance>,
    /// Per partition of the view's topic, the offset below which every event is in the answer
    /// (the speed position, or the batch coverage where the speed layer holds nothing newer).
    pub offsets: BTreeMap<String, i64>,
    /// False when a metric of the answer comes from a sketch; see `error_bounds`.
    pub exact: bool,
    /// For each sketch metric, its error bound.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub error_bounds: BTreeMap<String, serde_json::Value>,
    /// False when a partition of the view's topic had no speed instance answering for it in
    /// time (a rebalance under way, an instance gone): its events above the batch coverage
    /// are not in the answer. `missing` names those partitions.
    pub complete: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BatchProvenance {
    pub run_id: String,
    /// Per `topic/partition` of the view's topic, the offset below which the snapshot holds
    /// every event.
    pub coverage: BTreeMap<String, i64>,
    pub finished_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SpeedProvenance {
    /// Per `topic/partition` the speed layer holds, the next offset it applies.
    pub positions: BTreeMap<String, i64>,
    /// How far behind the broker the speed layer is, in milliseconds of message time.
    pub lag_ms: i64,
}

/// The provenance of a read, before the answer's sketch bounds are known.
pub(super) struct Parts {
    batch: Option<BatchProvenance>,
    offsets: BTreeMap<String, i64>,
    /// Positions, and the newest message time of partitions still behind the broker.
    speed: Option<(BTreeMap<String, i64>, Option<i64>)>,
    missing: Vec<String>,
}

impl Parts {
    pub fn new(
        topic: &str,
        snapshot: &Snapshot,
        speed: Option<&BTreeMap<TopicPartition, PartitionStatus>>,
        missing: &[TopicPartition],
    ) -> Self {
        let of_topic = |tp: &TopicPartition| tp.topic == topic;
        let batch = snapshot.pointer.as_ref().map(|pointer| BatchProvenance {
            run_id: pointer.run_id.clone(),
            coverage: pointer
                .coverage
                .0
                .iter()
                .filter(|(tp, _)| of_topic(tp))
                .map(|(tp, offset)| (tp.to_string(), *offset))
                .collect(),
            finished_at: pointer.finished_at.clone(),
        });
        let mut offsets: BTreeMap<String, i64> = batch
            .as_ref()
            .map(|b| b.coverage.clone())
            .unwrap_or_default();
        let speed = speed.map(|partitions| {
            let mut positions = BTreeMap::new();
            let mut oldest_behind: Option<i64> = None;
            for (tp, status) in partitions.iter().filter(|(tp, _)| of_topic(tp)) {
                let name = tp.to_string();
                let slot = offsets.entry(name.clone()).or_insert(0);
                *slot = (*slot).max(status.position);
                positions.insert(name, status.position);
                if status.lag_messages.is_some_and(|lag| lag > 0)
                    && let Some(last) = status.last_message_ms
                {
                    oldest_behind = Some(oldest_behind.map_or(last, |o| o.min(last)));
                }
            }
            (positions, oldest_behind)
        });
        Self {
            batch,
            offsets,
            speed,
            missing: missing
                .iter()
                .filter(|tp| of_topic(tp))
                .map(ToString::to_string)
                .collect(),
        }
    }

    pub fn finish(self, view: &ViewDef, groups: &Groups, now_ms: i64) -> Provenance {
        let error_bounds = error_bounds(view, groups);
        Provenance {
            batch: self.batch,
            speed: self
                .speed
                .map(|(positions, oldest_behind)| SpeedProvenance {
                    positions,
                    lag_ms: oldest_behind.map_or(0, |last| (now_ms - last).max(0)),
                }),
            offsets: self.offsets,
            exact: error_bounds.is_empty(),
            error_bounds,
            complete: self.missing.is_empty(),
            missing: self.missing,
        }
    }
}

impl Provenance {
    /// The provenance of an as-of answer: recomputed from the archive at exactly `offsets`.
    pub fn as_of(view: &ViewDef, groups: &Groups, offsets: BTreeMap<String, i64>) -> Self {
        let error_bounds = error_bounds(view, groups);
        Self {
            batch: None,
            speed: None,
            offsets,
            exact: error_bounds.is_empty(),
            error_bounds,
            complete: true,
            missing: Vec::new(),
        }
    }
}

/// For each sketch metric of the answer, its error bound (for top-k, the largest of the rows).
fn error_bounds(view: &ViewDef, groups: &Groups) -> BTreeMap<String, serde_json::Value> {
    let mut bounds = BTreeMap::new();
    for (i, metric) in view.metrics.iter().enumerate() {
        if !metric.expr.is_approximate() {
            continue;
        }
        let bound = if let MetricExpr::TopK { .. } = metric.expr {
            let worst = groups
                .values()
                .filter_map(|states| match &states[i] {
                    MetricState::TopK(top) => Some(top.error_bound()),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            Some(serde_json::json!({ "max_undercount": worst }))
        } else {
            MetricState::empty(&metric.expr).error_bound()
        };
        if let Some(bound) = bound {
            bounds.insert(metric.name.clone(), bound);
        }
    }
    bounds
}
