//! `GET /v1/views/{view}?...&as_of=<topic/p:offset,...>`: the query as it stood at exactly
//! those offsets (an earlier answer's `provenance.offsets`), recomputed from the archive: the
//! view's cells over the events below each offset are computed with Polars from the files the
//! manifests list, as a batch run computes them (restricted to the query's buckets and
//! filters), and merged into the answer's groups with the same states and finalization as a
//! merged answer, so the rows equal the earlier answer's. A partition the archive has not
//! reached yet is a 409 `not_archived`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use braid_shared::aggregate::MetricState;
use braid_shared::{Coverage, SourceDef, TopicPartition, Value, ViewDef};
use braid_store::manifest::read_archive_manifests;
use braid_store::recompute::{AnswerGroups, event_times, files_between, group_cells};

use crate::answer::{self, Groups, Rows, ViewQuery};
use crate::error::{ApiError, ErrorKind, abbreviate};
use crate::state::AppState;

/// Offsets named by `as_of`, per partition of the source's topic.
pub fn parse(source: &SourceDef, text: &str) -> Result<BTreeMap<i32, i64>, ApiError> {
    let bad = |why: String| ApiError::parameter("as_of", why);
    let mut offsets = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (partition, offset) = item
            .rsplit_once(':')
            .and_then(|(tp, offset)| Some((tp.rsplit_once('/')?, offset)))
            .ok_or_else(|| {
                bad(format!(
                    "{:?} is not topic/partition:offset (as in an answer's provenance.offsets)",
                    abbreviate(item)
                ))
            })?;
        let ((topic, partition), offset) = (partition, offset);
        if topic != source.topic {
            return Err(bad(format!(
                "names topic {:?}; view's source reads {:?}",
                abbreviate(topic),
                source.topic
            )));
        }
        let partition: i32 = partition.parse().ok().filter(|p| *p >= 0).ok_or_else(|| {
            bad(format!(
                "{:?} is not a partition number",
                abbreviate(partition)
            ))
        })?;
        let offset: i64 = offset
            .parse()
            .ok()
            .filter(|o| *o >= 0)
            .ok_or_else(|| bad(format!("{:?} is not an offset", abbreviate(offset))))?;
        if offsets.insert(partition, offset).is_some() {
            return Err(bad(format!("names partition {partition} twice")));
        }
    }
    if offsets.is_empty() {
        return Err(bad(
            "is empty; give topic/partition:offset,... as in an answer's provenance.offsets"
                .to_owned(),
        ));
    }
    Ok(offsets)
}

/// The rows of `query` at exactly `offsets`, from the archive.
pub async fn rows(
    state: &AppState,
    view: &Arc<ViewDef>,
    source: &Arc<SourceDef>,
    query: &ViewQuery,
    offsets: BTreeMap<i32, i64>,
) -> Result<Rows, ApiError> {
    let inner = &state.0;
    let storage = Arc::clone(&inner.storage);
    let (view_def, source_def, cells) = (Arc::clone(view), Arc::clone(source), query.clone());
    let asked = offsets.clone();
    let groups = tokio::task::spawn_blocking(move || {
        fold(&*storage, &view_def, &source_def, &cells, &asked)
    })
    .await
    .map_err(|e| ApiError::internal(format!("recomputing from the archive: {e}")))??;
    let named = offsets
        .iter()
        .map(|(p, o)| (format!("{}/{p}", source.topic), *o))
        .collect();
    Ok(answer::rows_of(
        view,
        query,
        groups,
        named,
        inner.config.serve.max_rows,
    )?)
}

/// The answer's groups at `offsets`: the view's cells recomputed with Polars from the archive
/// files below those offsets (the batch layer's path, restricted to the query's buckets and
/// filters), each cell's states merged into its answer group in the cells' order.
fn fold(
    storage: &dyn braid_store::Storage,
    view: &Arc<ViewDef>,
    source: &SourceDef,
    query: &ViewQuery,
    offsets: &BTreeMap<i32, i64>,
) -> Result<Groups, ApiError> {
    let read_failed = |error: braid_store::Error| {
        tracing::error!(%error, "reading the archive for an as-of answer");
        ApiError::internal("reading the archive failed; the server log says why")
    };
    let manifests = read_archive_manifests(storage, &source.topic).map_err(read_failed)?;
    for (&partition, &offset) in offsets.iter().filter(|(_, o)| **o > 0) {
        let end = manifests
            .iter()
            .find(|m| m.partition == partition)
            .and_then(|m| m.end())
            .unwrap_or(0);
        if end < offset {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                "not_archived",
                format!(
                    "{}/{partition} is archived up to offset {end}; as_of asks for {offset}: try again once the archive has caught up",
                    source.topic
                ),
            ));
        }
    }
    let selected = query.cells();
    let (first_ms, end_ms) = event_times(&selected, view.granularity_ms);
    let to = Coverage(
        offsets
            .iter()
            .map(|(&p, &o)| (TopicPartition::new(source.topic.as_str(), p), o))
            .collect(),
    );
    let files = files_between(
        storage,
        source,
        &manifests,
        (&Coverage::default(), &to),
        Some((first_ms, end_ms)),
    )
    .map_err(read_failed)?;
    let regroup = query.regroup();
    let answer = AnswerGroups {
        step_ms: regroup.step_ms,
        from_ms: regroup.from_ms,
        group_by: regroup.group_by.clone(),
    };
    let cells = group_cells(view, source, &files, &selected, Some(&answer)).map_err(read_failed)?;

    // Each row's answer group (rows are cells where the view cannot be grouped straight into
    // the answer's groups).
    let buckets = cells.buckets().map_err(read_failed)?;
    let kept = regroup
        .group_by
        .iter()
        .map(|&i| cells.group_values(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_failed)?;
    let mut slots: HashMap<(i64, Vec<Value>), usize> = HashMap::new();
    let mut keys = Vec::new();
    let group_of: Vec<usize> = (0..cells.len())
        .map(|cell| {
            let key = (
                regroup.bucket_of(buckets[cell]),
                kept.iter().map(|values| values[cell].clone()).collect(),
            );
            *slots.entry(key).or_insert_with_key(|key| {
                keys.push(key.clone());
                keys.len() - 1
            })
        })
        .collect();
    let metrics = view.metrics.len();
    let mut states: Vec<Vec<Option<MetricState>>> = (0..keys.len())
        .map(|_| std::iter::repeat_with(|| None).take(metrics).collect())
        .collect();
    let mut failed = None;
    cells
        .states(|metric, cell, state| {
            let slot = &mut states[group_of[cell]][metric];
            match slot {
                Some(into) => {
                    if let Err(error) = into.merge(&state) {
                        failed.get_or_insert(error);
                    }
                }
                None => *slot = Some(state),
            }
        })
        .map_err(read_failed)?;
    if let Some(error) = failed {
        return Err(ApiError::internal(format!(
            "merging recomputed cells: {error}"
        )));
    }
    Ok(keys
        .into_iter()
        .zip(states)
        .map(|(key, states)| {
            let states = states
                .into_iter()
                .zip(&view.metrics)
                .map(|(state, m)| state.unwrap_or_else(|| MetricState::empty(&m.expr)))
                .collect();
            (key, states)
        })
        .collect())
}
