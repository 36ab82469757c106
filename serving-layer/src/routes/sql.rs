//! `POST /v1/sql`: one read-only DuckDB query over `events_<source>`, `rejected_<source>` and
//! `view_<name>`, bounded in time and rows.

use std::collections::BTreeSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;

use crate::error::{ApiError, ErrorBody};
use crate::sql::{SqlAnswer, gather};
use crate::state::AppState;

/// Longest statement accepted, in bytes.
const MAX_SQL_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

/// Runs one read-only query.
#[utoipa::path(post, path = "/v1/sql", tag = "audit",
    request_body(content = Object, description = r#"{"sql": "SELECT ..."}: one read-only query over events_<source>, rejected_<source> and view_<name>"#),
    responses(
        (status = 200, body = SqlAnswer),
        (status = 400, body = ErrorBody, description = "not a single read-only query over Braid's tables, or DuckDB's error running it"),
        (status = 408, body = ErrorBody, description = "the query ran past serve.sql_timeout and was interrupted"),
        (status = 503, body = ErrorBody, description = "every SQL slot is busy, or (`incomplete`) a view_ table's partition is held by no live speed instance right now"),
    ))]
pub async fn sql(State(state): State<AppState>, body: Bytes) -> Result<Json<SqlAnswer>, ApiError> {
    let request: SqlRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!(r#"the body must be {{"sql": "<one SELECT>"}}: {e}"#),
        )
    })?;
    if request.sql.trim().is_empty() {
        return Err(ApiError::parameter("sql", "is empty"));
    }
    if request.sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::parameter(
            "sql",
            format!(
                "is {} bytes; at most {MAX_SQL_BYTES} are accepted",
                request.sql.len()
            ),
        ));
    }
    let inner = &state.0;
    let config = &inner.config;
    let known: BTreeSet<String> = config
        .sources
        .iter()
        .flat_map(|s| [format!("events_{}", s.name), format!("rejected_{}", s.name)])
        .chain(config.views.iter().map(|v| format!("view_{}", v.name)))
        .map(|name| name.to_lowercase())
        .collect();
    let engine = &inner.sql;
    let session = engine.open(request.sql, known).await?;
    let gathering = gather(
        &inner.config,
        &inner.storage,
        state.sources(),
        &session.tables,
    );
    let tables = match tokio::time::timeout_at(session.deadline(), gathering).await {
        Err(_) => return Err(session.timed_out().into()),
        Ok(tables) => tables?,
    };
    Ok(Json(session.finish(tables).await?))
}
