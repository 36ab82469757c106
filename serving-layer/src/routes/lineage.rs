//! `GET /v1/lineage/{view}`: where one cell's number comes from. The merged value, the batch
//! snapshot's cell-file layers with the archive files and offset ranges that fed each, and the
//! speed layer's offset ranges above the coverage, all from the one read the value was merged
//! from. Re-reading exactly those ranges and folding the events of the cell's key and bucket
//! gives the value.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use braid_shared::view::FieldKind;
use braid_shared::{CellQuery, TopicPartition, ViewDef};
use braid_store::manifest::{
    FileKind, PartitionManifest, SnapshotManifest, read_archive_manifests,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::query::{Params, parse_time, parse_value};
use crate::state::{AppState, now_ms};
use braid_merge::answer::{self, Regroup};
use braid_shared::time::format_time;

#[derive(Debug, Serialize, ToSchema)]
pub struct Lineage {
    pub view: String,
    /// The cell's bucket start.
    pub bucket: String,
    /// The cell's group-by values.
    #[schema(value_type = Object)]
    pub key: serde_json::Map<String, serde_json::Value>,
    /// The merged metrics of the cell, as `GET /v1/views/{view}` answers them.
    #[schema(value_type = Object)]
    pub value: serde_json::Map<String, serde_json::Value>,
    /// The batch snapshot's part; `null` before the first snapshot.
    pub batch: Option<BatchLineage>,
    /// The speed layer's part; `null` when no speed layer runs in this process.
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

/// The lineage of one cell: its merged value, the batch run, layers, archive files and offset
/// ranges that fed it, and the speed layer's ranges above the coverage.
#[utoipa::path(get, path = "/v1/lineage/{view}", tag = "audit",
    params(("view" = String, Path, description = "the view's name"),
        ("bucket" = String, Query, description = "the cell's bucket start: RFC 3339 or epoch ms, on the view's granularity"),
        ("<field>" = Option<String>, Query, description = "every group-by field of the view, with the cell's value")),
    responses(
        (status = 200, body = Lineage),
        (status = 400, body = ErrorBody, description = "a missing or bad parameter"),
        (status = 404, body = ErrorBody, description = "no such view, or no event in that cell"),
    ))]
pub async fn lineage(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Lineage>, ApiError> {
    let inner = &state.0;
    let config = &inner.config;
    let (view, source) = super::view_and_source(config, &name)?;
    let params = Params::parse(raw.as_deref())?;
    let now = now_ms();
    let cell = Cell::parse(view, source, &params, now)?;
    let sources = state.sources();
    let regroup = Regroup {
        from_ms: cell.query.from_ms,
        step_ms: Some(view.granularity_ms),
        group_by: (0..view.group_by.len()).collect(),
    };
    let grouped = answer::grouped(sources, view, &source.topic, &cell.query, &regroup, now).await?;
    let Some((_, states)) = grouped.groups.into_iter().next() else {
        return Err(ApiError::not_found(
            "no_cell",
            format!(
                "view {:?} has no event of that key in the bucket starting {}",
                view.name,
                format_time(cell.query.from_ms)
            ),
        ));
    };
    let value = view
        .metrics
        .iter()
        .zip(states.iter())
        .map(|(metric, state)| (metric.name.clone(), state.finalize(&metric.expr)))
        .collect();
    let provenance = grouped.provenance;
    let batch = match (&provenance.batch, grouped.snapshot.manifest.clone()) {
        (Some(batch), Some(manifest)) => {
            let storage = Arc::clone(&inner.storage);
            let (view, topic) = (Arc::clone(view), source.topic.clone());
            let bucket = (cell.query.from_ms, cell.query.to_ms);
            let layers = tokio::task::spawn_blocking(move || {
                let archive = read_archive_manifests(storage.as_ref(), &topic)?;
                Ok::<_, braid_store::Error>(layers(&manifest, &archive, &view, &topic, bucket))
            })
            .await
            .map_err(|e| ApiError::internal(format!("reading the archive manifests: {e}")))?
            .map_err(|error| {
                tracing::error!(%error, "reading the archive manifests for a lineage");
                ApiError::internal("reading the archive manifests failed; the server log says why")
            })?;
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
    Ok(Json(Lineage {
        view: view.name.clone(),
        bucket: format_time(cell.query.from_ms),
        key: cell.key,
        value,
        batch,
        speed,
    }))
}

/// One cell of a view, as named by the query string.
struct Cell {
    query: CellQuery,
    key: serde_json::Map<String, serde_json::Value>,
}

impl Cell {
    /// `bucket` (on the view's granularity) and every group-by field, nothing else.
    fn parse(
        view: &ViewDef,
        source: &braid_shared::SourceDef,
        params: &Params,
        now_ms: i64,
    ) -> Result<Self, ApiError> {
        let fields: Vec<&str> = view.group_by.iter().map(|f| f.name.as_str()).collect();
        let mut allowed = vec!["bucket"];
        allowed.extend(&fields);
        params.only(&allowed)?;
        let bucket = parse_time("bucket", params.get("bucket"), now_ms)?;
        let granularity = view.granularity_ms;
        if bucket.rem_euclid(granularity) != 0 {
            return Err(ApiError::parameter(
                "bucket",
                format!(
                    "{} is not the start of a bucket of view {:?} (its buckets start every {} ms; this one starts at {})",
                    format_time(bucket),
                    view.name,
                    granularity,
                    format_time(bucket - bucket.rem_euclid(granularity))
                ),
            ));
        }
        let mut filters = Vec::new();
        let mut key = serde_json::Map::new();
        for (index, field) in view.group_by.iter().enumerate() {
            let text = params.get(&field.name).ok_or_else(|| {
                ApiError::parameter(
                    &field.name,
                    format!(
                        "is required: a cell is named by its bucket and every group-by field of view {:?} ({})",
                        view.name,
                        fields.join(", ")
                    ),
                )
            })?;
            let kind = source
                .fields
                .get(field.slot)
                .map_or(FieldKind::Scalar, |f| f.kind);
            let value = parse_value(&field.name, text, kind)?;
            key.insert(field.name.clone(), value.to_json());
            filters.push((index, value));
        }
        Ok(Self {
            query: CellQuery {
                from_ms: bucket,
                to_ms: bucket.saturating_add(granularity),
                filters,
            },
            key,
        })
    }
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
                    let holds_bucket = |file: &&braid_store::manifest::ArchiveFile| {
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
