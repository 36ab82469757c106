//! Re-bucketing and regrouping: the selected cells folded into the answer's buckets and kept
//! group fields with the shared `MetricState::merge`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use braid_shared::aggregate::MetricState;
use braid_shared::view::PointKey;
use braid_shared::{CellQuery, MetricExpr, Value, ViewDef, ViewState};

use super::AnswerError;

/// (bucket start, kept group values) -> the merged states of the view's metrics, in order.
pub type Groups = BTreeMap<(i64, Vec<Value>), Box<[MetricState]>>;

/// How cells fold into an answer's groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Regroup {
    /// The bucket of every group when `step_ms` is `None`.
    pub from_ms: i64,
    /// Re-bucketing width; `None`: one bucket for the whole range.
    pub step_ms: Option<i64>,
    /// Group-by fields kept, by index into the view's `group_by`.
    pub group_by: Vec<usize>,
}

impl Regroup {
    /// The answer's bucket of a cell of bucket `bucket_ms`.
    pub fn bucket_of(&self, bucket_ms: i64) -> i64 {
        match self.step_ms {
            Some(step) => bucket_ms - bucket_ms.rem_euclid(step),
            None => self.from_ms,
        }
    }
}

pub(super) fn regroup(state: ViewState, spec: &Regroup) -> Result<Groups, AnswerError> {
    let mut groups: Groups = BTreeMap::new();
    for (key, states) in state.into_cells() {
        let bucket = spec.bucket_of(key.bucket_ms);
        let group: Vec<Value> = spec
            .group_by
            .iter()
            .map(|&i| key.group.0.get(i).cloned().unwrap_or(Value::Null))
            .collect();
        match groups.entry((bucket, group)) {
            Entry::Vacant(slot) => {
                slot.insert(states);
            }
            Entry::Occupied(mut slot) => {
                for (into, from) in slot.get_mut().iter_mut().zip(states.iter()) {
                    into.merge(from)?;
                }
            }
        }
    }
    Ok(groups)
}

/// The one group key `cells` selects in `view`, when its answer may be folded cell by cell
/// ([`PointGroups`]): every group-by field fixed, and no top-k metric (whose merge beyond its
/// capacity depends on the order of merges, so it keeps the order of [`regroup`]).
pub(super) fn point_of(view: &ViewDef, cells: &CellQuery) -> Option<PointKey> {
    if view
        .metrics
        .iter()
        .any(|metric| matches!(metric.expr, MetricExpr::TopK { .. }))
    {
        return None;
    }
    cells.point_key(view.group_by.len()).map(PointKey::new)
}

/// The answer's groups of one group key, folded from its cells as they are visited.
pub(super) struct PointGroups {
    spec: Regroup,
    /// The kept group values, the same for every group.
    group: Vec<Value>,
    buckets: BTreeMap<i64, Box<[MetricState]>>,
}

impl PointGroups {
    pub fn new(spec: &Regroup, key: &PointKey) -> Self {
        Self {
            group: spec
                .group_by
                .iter()
                .map(|&i| key.group.0.get(i).cloned().unwrap_or(Value::Null))
                .collect(),
            spec: spec.clone(),
            buckets: BTreeMap::new(),
        }
    }

    pub fn fold(&mut self, bucket_ms: i64, states: &[MetricState]) -> braid_shared::Result<()> {
        match self.buckets.entry(self.spec.bucket_of(bucket_ms)) {
            Entry::Vacant(slot) => {
                slot.insert(states.into());
            }
            Entry::Occupied(mut slot) => {
                for (into, from) in slot.get_mut().iter_mut().zip(states) {
                    into.merge(from)?;
                }
            }
        }
        Ok(())
    }

    pub fn into_groups(self) -> Groups {
        let Self { group, buckets, .. } = self;
        buckets
            .into_iter()
            .map(|(bucket, states)| ((bucket, group.clone()), states))
            .collect()
    }
}
