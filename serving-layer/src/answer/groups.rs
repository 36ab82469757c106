//! Re-bucketing and regrouping: the selected cells folded into the answer's buckets and kept
//! group fields with the shared `MetricState::merge`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use braid_shared::aggregate::MetricState;
use braid_shared::{Value, ViewState};

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
