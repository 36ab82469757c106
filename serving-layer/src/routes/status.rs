//! `GET /v1/status` and `GET /v1/rejected/{source}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use braid_shared::RejectedRecord;
use braid_store::rejected::read_rejected;
use serde::Serialize;
use utoipa::ToSchema;

use super::batch::ListParams;
use crate::error::abbreviate;
use crate::error::{ApiError, ErrorBody};
use crate::query::Params;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// The configured brokers (`embedded` for the in-process one).
    pub brokers: String,
    pub speed: SpeedStatus,
    pub batch: BatchStatus,
    pub serve: ServeStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpeedStatus {
    /// Whether a speed layer runs in this process.
    pub running: bool,
    /// Per `topic/partition` held: position, lag in messages, newest message time.
    #[schema(value_type = Object)]
    pub partitions: BTreeMap<String, braid_shared::PartitionStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchStatus {
    /// Whether a batch layer (archiver and scheduler) runs in this process.
    pub running: bool,
    /// The snapshot answering queries.
    pub snapshot_run_id: Option<String>,
    #[schema(value_type = Object)]
    pub coverage: BTreeMap<String, i64>,
    /// Why the newest published snapshot could not be loaded, if so.
    pub snapshot_error: Option<String>,
    #[schema(value_type = Object)]
    pub last_run: Option<braid_store::RunRecord>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServeStatus {
    pub listen: String,
    pub uptime_seconds: u64,
}

/// Per layer: state, broker, positions and lag per partition, the last batch run.
#[utoipa::path(get, path = "/v1/status", tag = "operations", responses((status = 200, body = Status)))]
pub async fn status(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    let inner = &state.0;
    let history = inner.history.clone();
    let last_run = tokio::task::spawn_blocking(move || history.list(1))
        .await
        .map_err(|e| ApiError::internal(format!("reading the run history: {e}")))??
        .into_iter()
        .next();
    let snapshot = inner.snapshot.current();
    let partitions = inner
        .backends
        .speed
        .as_ref()
        .map(|s| s.status())
        .unwrap_or_default()
        .into_iter()
        .map(|(tp, s)| (tp.to_string(), s))
        .collect();
    Ok(Json(Status {
        brokers: inner.config.kafka.brokers.clone(),
        speed: SpeedStatus {
            running: inner.backends.speed.is_some(),
            partitions,
        },
        batch: BatchStatus {
            running: inner.backends.batch.is_some(),
            snapshot_run_id: snapshot.pointer.as_ref().map(|p| p.run_id.clone()),
            coverage: snapshot
                .coverage()
                .0
                .iter()
                .map(|(tp, o)| (tp.to_string(), *o))
                .collect(),
            snapshot_error: inner.snapshot.last_error(),
            last_run,
        },
        serve: ServeStatus {
            listen: inner.config.serve.listen.to_string(),
            uptime_seconds: inner.started.elapsed().as_secs(),
        },
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedList {
    pub source: String,
    /// Rejected events of the source held by the speed layer's logs.
    pub total: usize,
    /// The newest `limit`, newest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<RejectedRecord>,
}

/// Events of a source that could not be read, with their reasons, newest first.
#[utoipa::path(get, path = "/v1/rejected/{source}", tag = "operations",
    params(("source" = String, Path, description = "a source's name"), ListParams),
    responses((status = 200, body = RejectedList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rejected(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<RejectedList>, ApiError> {
    let params = Params::parse(raw.as_deref())?;
    params.only(&["limit"])?;
    let limit = params.limit(100, 10_000)?;
    let config = &state.0.config;
    let source = config.source(&name).ok_or_else(|| {
        ApiError::not_found(
            "unknown_source",
            format!("no source {:?}", abbreviate(&name)),
        )
    })?;
    let storage = Arc::clone(&state.0.storage);
    let topic = source.topic.clone();
    let mut records = tokio::task::spawn_blocking(move || read_rejected(storage.as_ref(), &topic))
        .await
        .map_err(|e| ApiError::internal(format!("reading rejected events: {e}")))?
        .map_err(|e| ApiError::internal(format!("reading rejected events: {e}")))?;
    records.retain(|r| r.source == name);
    records.sort_by(|a, b| {
        (b.rejected_at_ms, &b.topic, b.partition, b.offset).cmp(&(
            a.rejected_at_ms,
            &a.topic,
            a.partition,
            a.offset,
        ))
    });
    let total = records.len();
    records.truncate(limit);
    Ok(Json(RejectedList {
        source: name,
        total,
        events: records,
    }))
}
