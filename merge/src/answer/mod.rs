//! The exact merge, free of HTTP: a view's batch cells from one snapshot plus the speed layer's
//! cells at or above that snapshot's coverage, regrouped with the shared algebra, then finalized
//! into rows. Routes that need numbers rather than rows (trends, fraud features, SQL) stop at
//! [`Grouped`], the merged states before finalization.
//!
//! - `read`: one snapshot per attempt, the speed read at its coverage, the retry after a swap.
//! - `groups`: re-bucketing and regrouping of the selected cells.
//! - `provenance`: where an answer's numbers come from, from the one read.
//! - `rows`: finalized rows, order and limit, error bounds.
//! - `error`: why an answer could not be given.

mod error;
mod groups;
mod provenance;
mod read;
mod rows;

use std::sync::Arc;

use braid_shared::view::PointKey;
use braid_shared::{CellQuery, SpeedReader, Value, ViewDef};

pub use error::AnswerError;
pub use groups::{Groups, Regroup};
pub use provenance::Provenance;
pub use read::{PointFold, PointQuery, fold_point, fold_point_blocking};

use crate::snapshot::{Snapshot, SnapshotCache};

/// What an answer reads from: the snapshot in use and the speed layer of this process.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub snapshot: &'a SnapshotCache,
    pub speed: Option<&'a dyn SpeedReader>,
}

/// A checked view query.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewQuery {
    /// Buckets starting in `[from_ms, to_ms)` are answered.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Re-bucketing width (a multiple of the granularity); `None`: one row per group.
    pub step_ms: Option<i64>,
    /// Required values, by index into the view's `group_by`.
    pub filters: Vec<(usize, Value)>,
    /// Group-by fields kept in the answer, by index; the others are merged away.
    pub group_by: Vec<usize>,
    pub order_by: Option<OrderBy>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderBy {
    /// Index into the view's metrics.
    pub metric: usize,
    pub descending: bool,
}

impl ViewQuery {
    pub fn cells(&self) -> CellQuery {
        CellQuery {
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            filters: self.filters.clone(),
        }
    }

    pub fn regroup(&self) -> Regroup {
        Regroup {
            from_ms: self.from_ms,
            step_ms: self.step_ms,
            group_by: self.group_by.clone(),
        }
    }
}

/// A merged answer's states, regrouped but not yet finalized, with their provenance.
pub struct Grouped {
    pub groups: Groups,
    pub provenance: Provenance,
    /// The snapshot the batch part was read from (lineage names its layers).
    pub snapshot: Arc<Snapshot>,
}

/// A merged answer, rendered into rows.
pub struct Rows {
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Rows before `limit`.
    pub total_rows: usize,
    pub provenance: Provenance,
}

/// The merged states of `view` that `cells` selects, regrouped by `regroup`.
pub async fn grouped(
    sources: Sources<'_>,
    view: &Arc<ViewDef>,
    topic: &str,
    cells: &CellQuery,
    regroup: &Regroup,
    now_ms: i64,
) -> Result<Grouped, AnswerError> {
    if let Some(point) = groups::point_of(view, cells) {
        return grouped_point(sources, view, topic, &point, cells, regroup, now_ms).await;
    }
    let read = read::read(sources, view, cells).await?;
    let provenance_of = read.provenance_parts(topic);
    let snapshot = Arc::clone(&read.snapshot);
    let groups = groups::regroup(read.state, regroup)?;
    let provenance = provenance_of.finish(view, &groups, now_ms);
    Ok(Grouped {
        groups,
        provenance,
        snapshot,
    })
}

/// [`grouped`] for a query of one group key: its cells, batch and speed, are folded straight
/// into the answer's groups as they are visited, none copied into an intermediate state.
async fn grouped_point(
    sources: Sources<'_>,
    view: &Arc<ViewDef>,
    topic: &str,
    key: &PointKey,
    cells: &CellQuery,
    regroup: &Regroup,
    now_ms: i64,
) -> Result<Grouped, AnswerError> {
    let point = PointQuery {
        view,
        topic,
        key,
        span: (cells.from_ms, cells.to_ms),
        provenance: true,
        now_ms,
    };
    let read::PointParts {
        folded,
        parts,
        snapshot,
    } = read::fold_point_parts(
        sources,
        &point,
        || groups::PointGroups::new(regroup, key),
        groups::PointGroups::fold,
    )
    .await?;
    let groups = folded.into_groups();
    let provenance = parts
        .ok_or_else(|| AnswerError::Internal("a point read came back without provenance".into()))?
        .finish(view, &groups, now_ms);
    Ok(Grouped {
        groups,
        provenance,
        snapshot,
    })
}

/// The merged rows of `view` for `query`; more than `max_rows` without a `limit` is refused.
pub async fn rows(
    sources: Sources<'_>,
    view: &Arc<ViewDef>,
    topic: &str,
    query: &ViewQuery,
    max_rows: usize,
    now_ms: i64,
) -> Result<Rows, AnswerError> {
    let Grouped {
        groups, provenance, ..
    } = grouped(
        sources,
        view,
        topic,
        &query.cells(),
        &query.regroup(),
        now_ms,
    )
    .await?;
    finish(view, query, groups, |_| provenance, max_rows)
}

/// The rows of `query` from `groups`, cells folded elsewhere (an as-of answer recomputed from
/// the archive), with the provenance of those `offsets`; finalized exactly as a merged answer
/// is.
pub fn rows_of(
    view: &Arc<ViewDef>,
    query: &ViewQuery,
    groups: Groups,
    offsets: std::collections::BTreeMap<String, i64>,
    max_rows: usize,
) -> Result<Rows, AnswerError> {
    finish(
        view,
        query,
        groups,
        |groups| Provenance::as_of(view, groups, offsets),
        max_rows,
    )
}

/// Finalized rows; more than `max_rows` without a `limit` is refused.
fn finish(
    view: &Arc<ViewDef>,
    query: &ViewQuery,
    groups: Groups,
    provenance: impl FnOnce(&Groups) -> Provenance,
    max_rows: usize,
) -> Result<Rows, AnswerError> {
    let total_rows = groups.len();
    if query.limit.is_none() && total_rows > max_rows {
        return Err(AnswerError::TooManyRows {
            rows: total_rows,
            max: max_rows,
        });
    }
    let provenance = provenance(&groups);
    let rows = rows::finalize(view, query, groups);
    Ok(Rows {
        rows,
        total_rows,
        provenance,
    })
}
