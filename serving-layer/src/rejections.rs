//! Rejected events of a source from every layer, each once: the speed layer's log and the
//! archive's rejected files, merged by (partition, offset). `GET /v1/rejected/{source}` pages
//! them; `rejected_<source>` in SQL is the same list.

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
