//! `GET /v1/lineage/{view}`: where one cell's number comes from (`braid_merge::lineage`): the
//! merged value, the batch snapshot's layers with the archive files and offset ranges that fed
//! each, and the speed layer's offset ranges above the coverage.

use axum::Json;
use axum::extract::State;
use braid_merge::lineage::{self, BatchLineage, SpeedLineage};
use braid_shared::text::format_time;
use braid_shared::view::FieldKind;
use braid_shared::{CellQuery, ViewDef};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::ViewRequest;
use crate::query::{Params, parse_time, parse_value};
use crate::state::{AppState, now_ms};

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
        (status = 503, body = ErrorBody, description = "`incomplete`: a partition is held by no live speed instance right now"),
    ))]
pub async fn lineage(
    State(state): State<AppState>,
    request: ViewRequest,
) -> Result<Json<Lineage>, ApiError> {
    let ViewRequest {
        view,
        source,
        params,
    } = request;
    let now = now_ms();
    let cell = Cell::parse(&view, &source, &params, now)?;
    let (sources, storage) = (state.sources(), &state.0.storage);
    let found = lineage::lineage(sources, storage, &view, &source.topic, &cell.query, now).await?;
    let value = view
        .metrics
        .iter()
        .zip(found.states.iter())
        .map(|(metric, state)| (metric.name.clone(), state.finalize(&metric.expr)))
        .collect();
    Ok(Json(Lineage {
        view: view.name.clone(),
        bucket: format_time(cell.query.from_ms),
        key: cell.key,
        value,
        batch: found.batch,
        speed: found.speed,
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
