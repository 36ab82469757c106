//! Lineage: where one cell's number comes from. The batch snapshot's cell-file layers with the
//! archive files and offset ranges that fed each, and the speed layer's offset ranges above the
//! coverage, all from the one read the value was merged from. Re-reading exactly those ranges
//! and folding the events of the cell's key and bucket gives the value.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_shared::aggregate::MetricState;
use braid_shared::{CellQuery, TopicPartition, ViewDef};
use braid_store::Storage;
use braid_store::manifest::{
    ArchiveFile, FileKind, PartitionManifest, SnapshotManifest, read_archive_manifests,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::answer::{self, AnswerError, Regroup, Sources};

/// Why a cell's lineage could not be given.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    /// The cell holds no event.
    #[error("view {view:?} has no event of that key in the bucket starting at {bucket_ms} ms")]
    NoCell { view: String, bucket_ms: i64 },
    /// Partitions no live speed instance holds right now: the cell's events in them past the
    /// snapshot would be missing from both the value and the ranges.
    #[error("partitions {missing:?} are held by no live speed instance")]
    Incomplete { missing: Vec<String> },
    #[error(transparent)]
    Answer(#[from] AnswerError),
    /// The archive manifests could not be read; the message is for the server's log.
    #[error("reading the archive manifests: {0}")]
    Archive(String),
}

/// One cell's merged states and where they came from.
pub struct CellLineage {
    /// By metric of the view.
    pub states: Vec<MetricState>,
    /// The batch snapshot's part; `None` before the first snapshot.
    pub batch: Option<BatchLineage>,
    /// The speed layer's part; `None` without a speed layer.
    pub speed: Option<SpeedLineage>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchLineage {
    pub run_id: String,
    /// Per `topic/partition`, the offset below which the snapshot holds every event.
    pub coverage: BTreeMap<String, i64>,
    /// The view's cell-file layers, oldest first: merged, they are the batch part.
    pub layers: Vec<LayerLineage>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LayerLineage {
    /// The run that computed the layer.
    pub run_id: String,
    /// Per `topic/partition`, the layer's offsets `[from, to)`.
    pub from: BTreeMap<String, i64>,
    pub to: BTreeMap<String, i64>,
    /// Archive files holding events of the cell's bucket in the layer's ranges, and the
    /// offsets `[from, to)` of each that the layer read.
    pub files: Vec<FileLineage>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileLineage {
    /// Storage key of the Parquet file, relative to the storage root.
    pub path: String,
    pub partition: String,
    pub from: i64,
    pub to: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpeedLineage {
    /// Per partition, the offsets `[from, to)` the speed layer contributed: from the batch
    /// coverage to its position.
    pub ranges: Vec<SpeedRange>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpeedRange {
    pub partition: String,
    pub from: i64,
    pub to: i64,
}

/// The lineage of the one cell `cell` names (its bucket and every group-by field) in `view` (on
/// `topic`), read from `sources` as of `now_ms`; archive manifests from `storage`.
pub async fn lineage(
    sources: Sources<'_>,
    storage: &Arc<dyn Storage>,
    view: &Arc<ViewDef>,
    topic: &str,
    cell: &CellQuery,
    now_ms: i64,
) -> Result<CellLineage, LineageError> {
    let regroup = Regroup {
        from_ms: cell.from_ms,
        step_ms: Some(view.granularity_ms),
        group_by: (0..view.group_by.len()).collect(),
    };
    let grouped = answer::grouped(sources, view, topic, cell, &regroup, now_ms).await?;
    if !grouped.provenance.complete {
        return Err(LineageError::Incomplete {
            missing: grouped.provenance.missing,
        });
    }
    let Some((_, states)) = grouped.groups.into_iter().next() else {
        return Err(LineageError::NoCell {
            view: view.name.clone(),
            bucket_ms: cell.from_ms,
        });
    };
    let provenance = grouped.provenance;
    let batch = match (&provenance.batch, grouped.snapshot.manifest.clone()) {
        (Some(batch), Some(manifest)) => {
            let storage = Arc::clone(storage);
            let (view, topic) = (Arc::clone(view), topic.to_owned());
            let bucket = (cell.from_ms, cell.to_ms);
            let layers = tokio::task::spawn_blocking(move || {
                let archive = read_archive_manifests(storage.as_ref(), &topic)?;
                Ok::<_, braid_store::Error>(layers(&manifest, &archive, &view, &topic, bucket))
            })
            .await
            .map_err(|e| LineageError::Archive(e.to_string()))?
            .map_err(|e| LineageError::Archive(e.to_string()))?;
            Some(BatchLineage {
                run_id: batch.run_id.clone(),
                coverage: batch.coverage.clone(),
                layers,
            })
        }
        _ => None,
    };
    let coverage = provenance
        .batch
        .as_ref()
        .map(|b| b.coverage.clone())
        .unwrap_or_default();
    let speed = provenance.speed.map(|speed| SpeedLineage {
        ranges: speed
            .positions
            .into_iter()
            .filter_map(|(partition, position)| {
                let from = coverage.get(&partition).copied().unwrap_or(0);
                (position > from).then_some(SpeedRange {
                    partition,
                    from,
                    to: position,
                })
            })
            .collect(),
    });
    Ok(CellLineage {
        states: states.into_vec(),
        batch,
        speed,
    })
}

/// The view's layers in `manifest`, each with the archive files of `topic` holding events of
/// the bucket `[from, to)` in the layer's offset ranges.
fn layers(
    manifest: &SnapshotManifest,
    archive: &[PartitionManifest],
    view: &ViewDef,
    topic: &str,
    (bucket_from, bucket_to): (i64, i64),
) -> Vec<LayerLineage> {
    let Some(snapshot) = manifest.views.get(&view.name) else {
        return Vec::new();
    };
    let of_topic = |coverage: &braid_shared::Coverage| -> BTreeMap<String, i64> {
        coverage
            .0
            .iter()
            .filter(|(tp, _)| tp.topic == topic)
            .map(|(tp, offset)| (tp.to_string(), *offset))
            .collect()
    };
    snapshot
        .layers
        .iter()
        .map(|layer| {
            let mut files = Vec::new();
            for partition in archive {
                let tp = TopicPartition::new(topic, partition.partition);
                let (from, to) = (layer.from.of(&tp), layer.to.of(&tp));
                for entry in &partition.entries {
                    let (lo, hi) = (entry.from.max(from), entry.to.min(to));
                    if lo >= hi {
                        continue;
                    }
                    let holds_bucket = |file: &&ArchiveFile| {
                        file.kind == FileKind::Events
                            && file.source == view.source
                            && file
                                .time_range_ms
                                .is_none_or(|(min, max)| min < bucket_to && max >= bucket_from)
                    };
                    files.extend(
                        entry
                            .files
                            .iter()
                            .filter(holds_bucket)
                            .map(|file| FileLineage {
                                path: file.path.clone(),
                                partition: tp.to_string(),
                                from: lo,
                                to: hi,
                            }),
                    );
                }
            }
            LayerLineage {
                run_id: layer.run_id.clone(),
                from: of_topic(&layer.from),
                to: of_topic(&layer.to),
                files,
            }
        })
        .collect()
}
