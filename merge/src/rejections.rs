//! Rejected events of a source from every layer, each once: the speed layer's log and the
//! archive's rejected files, merged by (partition, offset). `GET /v1/rejected/{source}` pages
//! them ([`page`]); `rejected_<source>` in SQL is the same list ([`merged`]).

use std::collections::BTreeMap;

use braid_columnar::rejected::read_archived_rejected;
use braid_shared::RejectedRecord;
use braid_store::Storage;
use braid_store::rejected::read_rejected;
use serde::Serialize;

/// One rejection and the layers that logged it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedRejection {
    #[serde(flatten)]
    pub record: RejectedRecord,
    /// `speed` (the speed layer's log) and/or `archive` (the archive's rejected files).
    pub layers: Vec<&'static str>,
}

/// Every rejection of `source` (on `topic`), by (partition, offset); the speed layer's record
/// when both layers hold it (it carries when the speed layer read it).
pub fn merged(
    storage: &dyn Storage,
    topic: &str,
    source: &str,
) -> braid_columnar::Result<BTreeMap<(i32, i64), ListedRejection>> {
    let speed = read_rejected(storage, topic)?;
    let archived = read_archived_rejected(storage, topic, source)?;
    let mut merged: BTreeMap<(i32, i64), ListedRejection> = BTreeMap::new();
    for (record, layer) in speed
        .into_iter()
        .map(|r| (r, "speed"))
        .chain(archived.into_iter().map(|r| (r, "archive")))
    {
        if record.source != source {
            continue;
        }
        let listed = merged
            .entry((record.partition, record.offset))
            .or_insert_with(|| ListedRejection {
                record,
                layers: Vec::new(),
            });
        if !listed.layers.contains(&layer) {
            listed.layers.push(layer);
        }
    }
    Ok(merged)
}

/// One page of a source's rejections.
pub struct RejectionPage {
    /// Rejections of the source (of the reason asked) in every layer, each once.
    pub total: usize,
    /// At most the limit, ordered by (partition, offset), after the position asked.
    pub events: Vec<ListedRejection>,
    /// Whether more follow the page.
    pub more: bool,
}

/// The rejections of `source` (on `topic`) of `reason` (any without), after the (partition,
/// offset) `after`, at most `limit`.
pub fn page(
    storage: &dyn Storage,
    (topic, source): (&str, &str),
    reason: Option<&str>,
    after: Option<(i32, i64)>,
    limit: usize,
) -> braid_columnar::Result<RejectionPage> {
    let merged: BTreeMap<(i32, i64), ListedRejection> = merged(storage, topic, source)?
        .into_iter()
        .filter(|(_, listed)| reason.is_none_or(|code| listed.record.reason.code() == code))
        .collect();
    let start = match after {
        Some(position) => std::ops::Bound::Excluded(position),
        None => std::ops::Bound::Unbounded,
    };
    let mut rest = merged.range((start, std::ops::Bound::Unbounded));
    let events: Vec<ListedRejection> = rest.by_ref().take(limit).map(|(_, l)| l.clone()).collect();
    Ok(RejectionPage {
        total: merged.len(),
        more: rest.next().is_some(),
        events,
    })
}
