//! `GET /v1/status` and `GET /v1/rejected/{source}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use braid_merge::rejections::{self, ListedRejection};
use braid_shared::RejectReason;
use serde::Serialize;
use utoipa::ToSchema;

use super::batch::ListParams;
use braid_shared::text::abbreviate;

use crate::error::{ApiError, ErrorBody};
use crate::extract::SourceRequest;
use crate::query::Cursor;
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
    /// When that snapshot was published (RFC 3339); its age is how stale the batch part is.
    pub snapshot_published_at: Option<String>,
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
            snapshot_published_at: snapshot.pointer.as_ref().map(|p| p.finished_at.clone()),
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

/// What `GET /v1/rejected` cursors start with.
const REJECTED_CURSOR: &str = "rejected.v1:";

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedList {
    pub source: String,
    /// Rejections of the source (with `reason`: of that reason) in every layer, each once.
    pub total: usize,
    /// At most `limit`, ordered by (partition, offset), after `cursor`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<ListedRejection>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Events of a source that could not be read, with their reasons: the speed layer's log and the
/// archive's rejected files merged, each rejection once, ordered by (partition, offset), paged.
#[utoipa::path(get, path = "/v1/rejected/{source}", tag = "operations",
    params(("source" = String, Path, description = "a source's name"), ListParams,
        ("reason" = Option<String>, Query, description = "only rejections of this reason code"),
        ("cursor" = Option<String>, Query, description = "the `next_cursor` of the previous page")),
    responses((status = 200, body = RejectedList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rejected(
    State(state): State<AppState>,
    SourceRequest { source, params }: SourceRequest,
) -> Result<Json<RejectedList>, ApiError> {
    params.only(&["limit", "reason", "cursor"])?;
    let limit = params.limit(100, state.0.config.serve.max_rows.max(1))?;
    let reason = params.get("reason").map(reason_code).transpose()?;
    let after = params
        .get("cursor")
        .map(|c| Cursor::decode(REJECTED_CURSOR, c))
        .transpose()?
        .map(|c| (c.partition, c.offset));
    let storage = Arc::clone(&state.0.storage);
    let (topic, name) = (source.topic.clone(), source.name.clone());
    let reason = reason.map(str::to_owned);
    let page = tokio::task::spawn_blocking(move || {
        let of = (topic.as_str(), name.as_str());
        rejections::page(storage.as_ref(), of, reason.as_deref(), after, limit)
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading rejected events: {e}")))?
    .map_err(|error| {
        tracing::error!(%error, source = %source.name, "reading rejected events");
        ApiError::internal("reading rejected events failed; the server log says why")
    })?;
    let next_cursor = match (page.more, page.events.last()) {
        (true, Some(last)) => {
            let (partition, offset) = (last.record.partition, last.record.offset);
            Some(Cursor { partition, offset }.encode(REJECTED_CURSOR))
        }
        _ => None,
    };
    Ok(Json(RejectedList {
        source: source.name.clone(),
        total: page.total,
        events: page.events,
        next_cursor,
    }))
}

/// A rejection reason code; a 400 naming every code otherwise.
fn reason_code(code: &str) -> Result<&str, ApiError> {
    RejectReason::CODES
        .contains(&code)
        .then_some(code)
        .ok_or_else(|| {
            ApiError::parameter(
                "reason",
                format!(
                    "{:?} is not a reason code; one of {}",
                    abbreviate(code),
                    RejectReason::CODES.join(", ")
                ),
            )
        })
}
