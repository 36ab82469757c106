//! As-of answers: a view's query as it stood at exactly given offsets (an earlier answer's
//! `provenance.offsets`), recomputed from the archive. The view's cells over the events below
//! each offset are computed with Polars from the files the manifests list, as a batch run
//! computes them (restricted to the query's buckets and filters), and merged into the answer's
//! groups with the same states as a merged answer, so the rows equal the earlier answer's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use braid_columnar::recompute::{AnswerGroups, event_times, files_between, group_cells};
use braid_shared::aggregate::MetricState;
use braid_shared::{Coverage, SourceDef, TopicPartition, Value, ViewDef};
use braid_store::Storage;
use braid_store::manifest::read_archive_manifests;

use crate::answer::{Groups, ViewQuery};

/// Why an as-of answer could not be given.
#[derive(Debug, thiserror::Error)]
pub enum AsOfError {
    /// A partition the archive has not reached the asked offset of yet.
    #[error("{0}")]
    NotArchived(String),
    /// The archive could not be read; the message is for the server's log.
    #[error("reading the archive: {0}")]
    Archive(String),
    /// Recomputed cells did not merge (a bug).
    #[error("merging recomputed cells: {0}")]
    Merge(String),
}

fn archive(error: impl std::fmt::Display) -> AsOfError {
    AsOfError::Archive(error.to_string())
}

/// The answer's groups at `offsets`: the view's cells recomputed with Polars from the archive
/// files below those offsets (the batch layer's path, restricted to the query's buckets and
/// filters), each cell's states merged into its answer group in the cells' order.
pub fn groups(
    storage: &dyn Storage,
    view: &Arc<ViewDef>,
    source: &SourceDef,
    query: &ViewQuery,
    offsets: &BTreeMap<i32, i64>,
) -> Result<Groups, AsOfError> {
    let manifests = read_archive_manifests(storage, &source.topic).map_err(archive)?;
    for (&partition, &offset) in offsets.iter().filter(|(_, o)| **o > 0) {
        let end = manifests
            .iter()
            .find(|m| m.partition == partition)
            .and_then(|m| m.end())
            .unwrap_or(0);
        if end < offset {
            return Err(AsOfError::NotArchived(format!(
                "{}/{partition} is archived up to offset {end}; as_of asks for {offset}: try again once the archive has caught up",
                source.topic
            )));
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
    .map_err(archive)?;
    let regroup = query.regroup();
    let answer = AnswerGroups {
        step_ms: regroup.step_ms,
        from_ms: regroup.from_ms,
        group_by: regroup.group_by.clone(),
    };
    let cells = group_cells(view, source, &files, &selected, Some(&answer)).map_err(archive)?;

    // Each row's answer group (rows are cells where the view cannot be grouped straight into
    // the answer's groups).
    let buckets = cells.buckets().map_err(archive)?;
    let kept = regroup
        .group_by
        .iter()
        .map(|&i| cells.group_values(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(archive)?;
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
        .map_err(archive)?;
    if let Some(error) = failed {
        return Err(AsOfError::Merge(error.to_string()));
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
