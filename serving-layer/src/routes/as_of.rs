//! `GET /v1/views/{view}?...&as_of=<topic/p:offset,...>`: the query as it stood at exactly
//! those offsets (an earlier answer's `provenance.offsets`), recomputed from the archive: the
//! events below each offset are read with Polars from the files the manifests list (restricted
//! to the query's buckets and filters) and folded with the same states, regrouping and
//! finalization as a merged answer, so the rows equal the earlier answer's. A partition the
//! archive has not reached yet is a 409 `not_archived`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use braid_shared::{Event, SourceDef, ViewDef, ViewState};
use braid_store::columns::ColumnType;
use braid_store::events::{EventQuery, read_events};
use braid_store::manifest::{FileKind, read_archive_manifests};

use crate::answer::{self, Rows, ViewQuery};
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
    let root = inner.sql.root();
    let (view_def, source_def, cells) = (Arc::clone(view), Arc::clone(source), query.clone());
    let asked = offsets.clone();
    let state = tokio::task::spawn_blocking(move || {
        fold(&*storage, &root, &view_def, &source_def, &cells, &asked)
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
        state,
        named,
        inner.config.serve.max_rows,
    )?)
}

fn fold(
    storage: &dyn braid_store::Storage,
    root: &std::path::Path,
    view: &Arc<ViewDef>,
    source: &SourceDef,
    query: &ViewQuery,
    offsets: &BTreeMap<i32, i64>,
) -> Result<ViewState, ApiError> {
    let manifests = read_archive_manifests(storage, &source.topic).map_err(|error| {
        tracing::error!(%error, "reading the archive manifests for an as-of answer");
        ApiError::internal("reading the archive manifests failed; the server log says why")
    })?;
    // Events whose bucket starts in [from, to).
    let g = view.granularity_ms;
    let align_up = |t: i64| t.saturating_add((g - t.rem_euclid(g)) % g);
    let (from_ms, to_ms) = (align_up(query.from_ms), align_up(query.to_ms));
    let fields: Vec<(String, ColumnType)> = source
        .fields
        .iter()
        .map(|f| (f.name.clone(), ColumnType::of(f.kind)))
        .collect();
    // Only the fields the view reads are read back; the others stay null in the folded events.
    let mut needed: Vec<usize> = view.group_by.iter().map(|f| f.slot).collect();
    needed.extend(
        view.metrics
            .iter()
            .filter_map(|m| m.expr.field())
            .filter_map(|name| source.slot(name)),
    );
    needed.sort_unstable();
    needed.dedup();
    let read_fields: Vec<(String, ColumnType)> =
        needed.iter().map(|&slot| fields[slot].clone()).collect();
    let filters: Vec<(String, ColumnType, braid_shared::Value)> = query
        .filters
        .iter()
        .map(|(i, value)| {
            let slot = view.group_by[*i].slot;
            (fields[slot].0.clone(), fields[slot].1, value.clone())
        })
        .collect();
    let mut state = ViewState::new(Arc::clone(view));
    for (&partition, &offset) in offsets {
        if offset == 0 {
            continue;
        }
        let manifest = manifests.iter().find(|m| m.partition == partition);
        let end = manifest.and_then(|m| m.end()).unwrap_or(0);
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
        let files: Vec<PathBuf> = manifest
            .into_iter()
            .flat_map(|m| &m.entries)
            .filter(|e| e.from < offset)
            .flat_map(|e| &e.files)
            .filter(|f| {
                f.kind == FileKind::Events
                    && f.source == source.name
                    && f.time_range_ms
                        .is_none_or(|(min, max)| min < to_ms && max >= from_ms)
            })
            .map(|f| braid_store::layout::local(root, &f.path))
            .collect();
        let read = read_events(
            &files,
            &read_fields,
            &EventQuery {
                partition,
                from_offset: 0,
                to_offset: offset,
                from_ms,
                to_ms,
                filters: filters.clone(),
                limit: usize::MAX,
            },
        )
        .map_err(|error| {
            tracing::error!(%error, "reading archived events for an as-of answer");
            ApiError::internal("reading archived events failed; the server log says why")
        })?;
        let events: Vec<Event> = read
            .into_iter()
            .map(|e| {
                let mut values = vec![braid_shared::Value::Null; fields.len()];
                for (&slot, value) in needed.iter().zip(e.values) {
                    values[slot] = value;
                }
                Event {
                    time_ms: e.time_ms,
                    values,
                }
            })
            .collect();
        state.apply(&events);
    }
    Ok(state)
}
