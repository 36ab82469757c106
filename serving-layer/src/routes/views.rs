//! `GET /v1/views` and `GET /v1/views/{view}`: definitions with freshness, and merged rows.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use braid_merge::answer::{self, Provenance};
use braid_shared::config::format_duration;
use braid_shared::text::format_time;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::ViewRequest;
use crate::query;
use crate::state::{AppState, now_ms};

#[derive(Debug, Serialize, ToSchema)]
pub struct ViewList {
    pub views: Vec<ViewInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ViewInfo {
    pub name: String,
    pub source: String,
    pub topic: String,
    pub group_by: Vec<String>,
    pub granularity: String,
    /// Metric name -> expression, e.g. `"amount": "sum(amount)"`.
    pub metrics: BTreeMap<String, String>,
    pub freshness: Freshness,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Freshness {
    /// The batch snapshot answering this view; `null` before the first one.
    pub batch: Option<BatchFreshness>,
    /// Per `topic/partition` the speed layer holds: its position and lag.
    #[schema(value_type = Object)]
    pub speed: Option<BTreeMap<String, braid_shared::PartitionStatus>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchFreshness {
    pub run_id: String,
    pub coverage: BTreeMap<String, i64>,
    pub finished_at: String,
    /// Milliseconds since the snapshot was published.
    pub age_ms: Option<i64>,
}

/// The fixed parameters; any other parameter named like a group-by field filters on it
/// (`card_id=card-000042`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ViewParams {
    /// Start (inclusive): RFC 3339, epoch ms, or `now[-duration]`.
    from: String,
    /// End (exclusive), as `from`.
    to: String,
    /// Re-bucketing width, a multiple of the view's granularity (`5m`, `1h`). Without it each
    /// group gets one row for the whole range.
    step: Option<String>,
    /// Comma-separated group-by fields to keep; the others are merged away. Empty: totals.
    group_by: Option<String>,
    /// A metric to sort by, descending; `metric:asc` for ascending.
    order_by: Option<String>,
    /// Rows kept after sorting, 1 to `serve.max_rows`.
    limit: Option<usize>,
    /// `topic/partition:offset,...` (an earlier answer's `provenance.offsets`): the answer as it
    /// stood at exactly those offsets, recomputed from the archive (409 while the archive is
    /// behind them).
    as_of: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ViewAnswer {
    pub view: String,
    pub from: String,
    pub to: String,
    pub step: Option<String>,
    /// `{"bucket": ..., <group fields>, <metrics>}` per row.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Rows before `limit` cut them.
    pub total_rows: usize,
    pub provenance: Provenance,
}

/// Every view: its definition and how fresh its answers are.
#[utoipa::path(get, path = "/v1/views", tag = "views",
    responses((status = 200, body = ViewList)))]
pub async fn list_views(State(state): State<AppState>) -> Json<ViewList> {
    let inner = &state.0;
    let snapshot = inner.snapshot.current();
    let status = inner.backends.speed.as_ref().map(|s| s.status());
    let now = now_ms();
    let views = inner
        .config
        .views
        .iter()
        .map(|view| {
            let topic = topic_of(&inner.config, &view.source);
            ViewInfo::of(view, topic, &snapshot, status.as_ref(), now)
        })
        .collect();
    Json(ViewList { views })
}

impl ViewInfo {
    /// `view` (on `topic`) and how fresh the snapshot and the speed layer's `status` are.
    fn of(
        view: &braid_shared::ViewDef,
        topic: String,
        snapshot: &braid_merge::Snapshot,
        status: Option<&BTreeMap<braid_shared::TopicPartition, braid_shared::PartitionStatus>>,
        now: i64,
    ) -> Self {
        let batch = snapshot.pointer.as_ref().map(|p| BatchFreshness {
            run_id: p.run_id.clone(),
            coverage: p
                .coverage
                .0
                .iter()
                .filter(|(tp, _)| tp.topic == topic)
                .map(|(tp, o)| (tp.to_string(), *o))
                .collect(),
            finished_at: p.finished_at.clone(),
            age_ms: chrono::DateTime::parse_from_rfc3339(&p.finished_at)
                .ok()
                .map(|t| now - t.timestamp_millis()),
        });
        let speed = status.map(|status| {
            status
                .iter()
                .filter(|(tp, _)| tp.topic == topic)
                .map(|(tp, s)| (tp.to_string(), *s))
                .collect()
        });
        Self {
            name: view.name.clone(),
            source: view.source.clone(),
            topic,
            group_by: view.group_by.iter().map(|f| f.name.clone()).collect(),
            granularity: format_duration(std::time::Duration::from_millis(
                view.granularity_ms.unsigned_abs(),
            )),
            metrics: view
                .metrics
                .iter()
                .map(|m| (m.name.clone(), m.expr.to_string()))
                .collect(),
            freshness: Freshness { batch, speed },
        }
    }
}

fn topic_of(config: &braid_shared::Config, source: &str) -> String {
    config
        .source(source)
        .map(|s| s.topic.clone())
        .unwrap_or_default()
}

/// Merged rows of one view: the batch snapshot plus the speed layer above its coverage.
#[utoipa::path(get, path = "/v1/views/{view}", tag = "views",
    params(("view" = String, Path, description = "the view's name"), ViewParams),
    responses(
        (status = 200, body = ViewAnswer),
        (status = 400, body = ErrorBody, description = "a bad parameter, or more rows than serve.max_rows"),
        (status = 404, body = ErrorBody, description = "no such view"),
        (status = 409, body = ErrorBody, description = "as_of names an offset the archive has not reached yet"),
        (status = 503, body = ErrorBody, description = "the view is not in the published snapshot yet"),
    ))]
pub async fn get_view(
    State(state): State<AppState>,
    request: ViewRequest,
) -> Result<Json<ViewAnswer>, ApiError> {
    let ViewRequest {
        view,
        source,
        params,
    } = request;
    let max_rows = state.0.config.serve.max_rows;
    let now = now_ms();
    let query = query::parse(&view, &source, params.pairs(), now, max_rows)?;
    let merged = match params.get("as_of") {
        Some(text) => {
            let offsets = super::as_of::parse(&source, text)?;
            super::as_of::rows(&state, &view, &source, &query, offsets).await?
        }
        None => {
            let sources = state.sources();
            answer::rows(sources, &view, &source.topic, &query, max_rows, now).await?
        }
    };
    Ok(Json(ViewAnswer {
        view: view.name.clone(),
        from: format_time(query.from_ms),
        to: format_time(query.to_ms),
        step: query
            .step_ms
            .map(|ms| format_duration(std::time::Duration::from_millis(ms.unsigned_abs()))),
        rows: merged.rows,
        total_rows: merged.total_rows,
        provenance: merged.provenance,
    }))
}
