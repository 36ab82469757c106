//! `GET /v1/views/{view}?...&as_of=<topic/p:offset,...>`: the query as it stood at exactly
//! those offsets (an earlier answer's `provenance.offsets`), recomputed from the archive
//! (`braid_merge::as_of`). A partition the archive has not reached yet is a 409
//! `not_archived`.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_merge::answer::{self, Rows, ViewQuery};
use braid_shared::{SourceDef, ViewDef};

use braid_shared::text::abbreviate;

use crate::error::ApiError;
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
        braid_merge::as_of::groups(&*storage, &view_def, &source_def, &cells, &asked)
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
