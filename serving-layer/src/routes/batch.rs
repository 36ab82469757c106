//! `POST /v1/batch/runs`, `GET /v1/batch/runs`, `GET /v1/batch/runs/{id}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::query::Params;
use crate::state::AppState;

/// Records listed at most.
const MAX_LIST: usize = 1000;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Recompute every view from the whole archive instead of incrementally.
    #[serde(default)]
    pub full: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    pub run_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    #[schema(value_type = Vec<Object>)]
    pub runs: Vec<braid_store::RunRecord>,
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Records to list, 1 to 1000 (default 50).
    limit: Option<usize>,
}

/// Starts a batch recompute now (queued behind a running one).
#[utoipa::path(post, path = "/v1/batch/runs", tag = "batch",
    request_body(content = Option<RunRequest>, description = "optional; `{\"full\": true}` for a full recompute"),
    responses(
        (status = 202, body = RunAccepted),
        (status = 400, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many runs queued"),
        (status = 503, body = ErrorBody, description = "no batch layer runs in this process"),
    ))]
pub async fn start_run(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("the body is not {{\"full\": true|false}}: {e}"),
            )
        })?
    };
    let control = state.0.backends.batch.clone().ok_or_else(|| {
        ApiError::unavailable(
            "batch_unavailable",
            "no batch layer runs in this process (start it with --layers including batch, or run `braid batch`)",
        )
    })?;
    let run_id = tokio::task::spawn_blocking(move || control.request(request.full))
        .await
        .map_err(|e| ApiError::internal(format!("queueing the run: {e}")))??;
    Ok((StatusCode::ACCEPTED, Json(RunAccepted { run_id })))
}

/// The run history, newest first.
#[utoipa::path(get, path = "/v1/batch/runs", tag = "batch", params(ListParams),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<RunList>, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    params.only(&["limit"])?;
    let limit = params.limit(50, MAX_LIST)?;
    let history = state.0.history.clone();
    let runs = tokio::task::spawn_blocking(move || history.list(limit))
        .await
        .map_err(|e| ApiError::internal(format!("listing runs: {e}")))??;
    Ok(Json(RunList { runs }))
}

/// One run: state, coverage, rows read, duration, error.
#[utoipa::path(get, path = "/v1/batch/runs/{id}", tag = "batch",
    params(("id" = String, Path, description = "a run id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<braid_store::RunRecord>, ApiError> {
    braid_store::check_run_id(&id)?;
    let history = state.0.history.clone();
    let record = tokio::task::spawn_blocking(move || history.get(&id))
        .await
        .map_err(|e| ApiError::internal(format!("reading the run: {e}")))??;
    Ok(Json(record))
}
