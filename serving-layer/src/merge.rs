//! The exact merge: a view's batch cells from one snapshot, plus the speed layer's cells at or
//! above that snapshot's coverage, re-bucketed and regrouped with the shared algebra, then
//! finalized into rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_shared::aggregate::MetricState;
use braid_shared::coverage::SpeedCells;
use braid_shared::{CellQuery, Coverage, SpeedReader, Value, ViewDef, ViewState};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::query::{ViewQuery, format_time};
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

/// A merged answer before it is rendered.
pub struct Merged {
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Rows before `limit`.
    pub total_rows: usize,
    pub provenance: Provenance,
}

/// Merges the batch and speed cells of `view` that `query` selects.
pub fn merge(
    view: &Arc<ViewDef>,
    topic: &str,
    snapshot: &Snapshot,
    speed: Option<&dyn SpeedReader>,
    query: &ViewQuery,
    max_rows: usize,
    now_ms: i64,
) -> Result<Merged, ApiError> {
    let cells = CellQuery {
        from_ms: query.from_ms,
        to_ms: query.to_ms,
        filters: query.filters.clone(),
    };
    let batch = snapshot
        .view(&view.name)
        .map_err(|reason| ApiError::unavailable("view_not_in_snapshot", reason))?;
    let coverage = snapshot.coverage();
    // The speed layer's cells (built for this query) are the base; the batch cells are merged
    // into them, so cells are copied once.
    let (mut state, speed_part) = match speed {
        Some(reader) => {
            let SpeedCells { state, positions } = reader.read(&view.name, &cells, &coverage)?;
            (state, Some((positions, reader)))
        }
        None => (ViewState::new(Arc::clone(view)), None),
    };
    if let Some(batch) = batch {
        state.merge_matching(batch, &cells)?;
    }
    let groups = regroup(state, query)?;
    let total_rows = groups.len();
    if query.limit.is_none() && total_rows > max_rows {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "too_many_rows",
            format!(
                "the answer has {total_rows} rows, over the limit of {max_rows}: narrow from/to, add a coarser step, filter, group by fewer fields, or set limit"
            ),
        ));
    }
    let error_bounds = error_bounds(view, &groups);
    let mut rows = finalize(view, query, groups);
    if let Some(order) = query.order_by {
        let name = &view.metrics[order.metric].name;
        rows.sort_by(|a, b| {
            let ordering = number(a.get(name)).total_cmp(&number(b.get(name)));
            if order.descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    if let Some(limit) = query.limit {
        rows.truncate(limit);
    }
    let provenance = provenance(
        topic,
        snapshot,
        &coverage,
        speed_part
            .as_ref()
            .map(|(positions, reader)| (positions, *reader)),
        error_bounds,
        now_ms,
    );
    Ok(Merged {
        rows,
        total_rows,
        provenance,
    })
}

/// A metric value for ordering: numbers by value, anything else (null) last when descending.
fn number(value: Option<&serde_json::Value>) -> f64 {
    value
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NEG_INFINITY)
}

type Groups = BTreeMap<(i64, Vec<Value>), Box<[MetricState]>>;

/// Folds the selected cells into the answer's buckets and kept group fields.
fn regroup(state: ViewState, query: &ViewQuery) -> Result<Groups, ApiError> {
    let mut groups: Groups = BTreeMap::new();
    for (key, states) in state.into_cells() {
        let bucket = match query.step_ms {
            Some(step) => key.bucket_ms - key.bucket_ms.rem_euclid(step),
            None => query.from_ms,
        };
        let group: Vec<Value> = query
            .group_by
            .iter()
            .map(|&i| key.group.0.get(i).cloned().unwrap_or(Value::Null))
            .collect();
        match groups.entry((bucket, group)) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(states);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                for (into, from) in slot.get_mut().iter_mut().zip(states.iter()) {
                    into.merge(from)?;
                }
            }
        }
    }
    Ok(groups)
}

fn finalize(
    view: &ViewDef,
    query: &ViewQuery,
    groups: Groups,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    groups
        .into_iter()
        .map(|((bucket, group), states)| {
            let mut row = serde_json::Map::new();
            row.insert("bucket".to_owned(), format_time(bucket).into());
            for (&i, value) in query.group_by.iter().zip(&group) {
                row.insert(view.group_by[i].name.clone(), value.to_json());
            }
            for (metric, state) in view.metrics.iter().zip(states.iter()) {
                row.insert(metric.name.clone(), state.finalize(&metric.expr));
            }
            row
        })
        .collect()
}

fn provenance(
    topic: &str,
    snapshot: &Snapshot,
    coverage: &Coverage,
    speed: Option<(
        &BTreeMap<braid_shared::TopicPartition, i64>,
        &dyn SpeedReader,
    )>,
    error_bounds: BTreeMap<String, serde_json::Value>,
    now_ms: i64,
) -> Provenance {
    let of_topic = |tp: &braid_shared::TopicPartition| tp.topic == topic;
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
    let mut offsets: BTreeMap<String, i64> = coverage
        .0
        .iter()
        .filter(|(tp, _)| of_topic(tp))
        .map(|(tp, offset)| (tp.to_string(), *offset))
        .collect();
    let speed = speed.map(|(positions, reader)| {
        let status = reader.status();
        let lag_ms = status
            .iter()
            .filter(|(tp, s)| of_topic(tp) && s.lag_messages.is_some_and(|lag| lag > 0))
            .filter_map(|(_, s)| s.last_message_ms.map(|last| (now_ms - last).max(0)))
            .max()
            .unwrap_or(0);
        for (tp, position) in positions {
            let slot = offsets.entry(tp.to_string()).or_insert(0);
            *slot = (*slot).max(*position);
        }
        SpeedProvenance {
            positions: positions
                .iter()
                .map(|(tp, p)| (tp.to_string(), *p))
                .collect(),
            lag_ms,
        }
    });
    Provenance {
        batch,
        speed,
        offsets,
        exact: error_bounds.is_empty(),
        error_bounds,
    }
}

/// For each sketch metric of the answer, its error bound (for top-k, the largest of the rows).
fn error_bounds(view: &ViewDef, groups: &Groups) -> BTreeMap<String, serde_json::Value> {
    let mut bounds = BTreeMap::new();
    for (i, metric) in view.metrics.iter().enumerate() {
        if !metric.expr.is_approximate() {
            continue;
        }
        let bound = if let braid_shared::MetricExpr::TopK { .. } = metric.expr {
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
