//! `POST /v1/sql`: one read-only DuckDB query over `events_<source>`, `rejected_<source>` and
//! `view_<name>`, bounded in time and rows.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use braid_shared::CellQuery;
use braid_store::columns::ColumnType;
use braid_store::manifest::{FileKind, read_archive_manifests};
use serde::Deserialize;

use crate::answer::{self, Regroup};
use crate::error::{ApiError, ErrorBody};
use crate::sql::{Column, Kind, SqlAnswer, SqlError, Table};
use crate::state::{AppState, now_ms};

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
        (status = 503, body = ErrorBody, description = "every SQL slot is busy"),
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
    let session = engine.open(request.sql, known).await.map_err(api_error)?;
    let deadline = session.deadline();
    let gathered = tokio::time::timeout_at(deadline, gather(&state, &session.tables)).await;
    let tables = match gathered {
        Err(_) => return Err(api_error(session.timed_out())),
        Ok(tables) => tables?,
    };
    let answer = session.finish(tables).await.map_err(api_error)?;
    Ok(Json(answer))
}

/// The named tables' data.
async fn gather(state: &AppState, names: &BTreeSet<String>) -> Result<Vec<Table>, ApiError> {
    let inner = &state.0;
    let config = &inner.config;
    let mut tables = Vec::new();
    for source in &config.sources {
        let events = format!("events_{}", source.name).to_lowercase();
        let rejected = format!("rejected_{}", source.name).to_lowercase();
        if names.contains(&events) {
            let storage = Arc::clone(&inner.storage);
            let (topic, name) = (source.topic.clone(), source.name.clone());
            let files = tokio::task::spawn_blocking(move || {
                let manifests = read_archive_manifests(storage.as_ref(), &topic)?;
                // Local files for DuckDB: remote storage downloads them into its cache.
                let mut files = Vec::new();
                for file in manifests
                    .iter()
                    .flat_map(|m| &m.entries)
                    .flat_map(|e| &e.files)
                    .filter(|f| f.kind == FileKind::Events && f.source == name)
                {
                    files.push(file.local(storage.as_ref())?);
                }
                Ok::<_, braid_store::Error>(files)
            })
            .await
            .map_err(|e| ApiError::internal(format!("reading the archive manifests: {e}")))?
            .map_err(storage_error)?;
            tables.push(Table::Events {
                name: events,
                fields: source
                    .fields
                    .iter()
                    .map(|f| (f.name.clone(), ColumnType::of(f.kind)))
                    .collect(),
                files,
            });
        }
        if names.contains(&rejected) {
            let storage = Arc::clone(&inner.storage);
            let (topic, name) = (source.topic.clone(), source.name.clone());
            let merged = tokio::task::spawn_blocking(move || {
                crate::rejections::merged(storage.as_ref(), &topic, &name)
            })
            .await
            .map_err(|e| ApiError::internal(format!("reading rejected events: {e}")))?
            .map_err(storage_error)?;
            let listed: Vec<_> = merged.into_values().collect();
            let column = |name: &str,
                          kind: Kind,
                          f: &dyn Fn(&crate::rejections::ListedRejection) -> serde_json::Value| {
                Column::new(name, kind, listed.iter().map(f).collect())
            };
            tables.push(Table::Rows {
                name: rejected,
                columns: vec![
                    column("topic", Kind::Text, &|l| l.record.topic.clone().into()),
                    column("partition", Kind::Int, &|l| l.record.partition.into()),
                    column("offset", Kind::Int, &|l| l.record.offset.into()),
                    column("reason", Kind::Text, &|l| l.record.reason.code().into()),
                    column("detail", Kind::Text, &|l| {
                        serde_json::to_string(&l.record.reason)
                            .unwrap_or_default()
                            .into()
                    }),
                    column("raw", Kind::Text, &|l| l.record.raw.clone().into()),
                    column("raw_bytes", Kind::Int, &|l| l.record.raw_bytes.into()),
                    column("rejected_at", Kind::Time, &|l| {
                        l.record.rejected_at_ms.into()
                    }),
                    column("layers", Kind::Text, &|l| l.layers.join(",").into()),
                ],
            });
        }
    }
    for view in &config.views {
        let name = format!("view_{}", view.name).to_lowercase();
        if !names.contains(&name) {
            continue;
        }
        let Some(source) = config.source(&view.source) else {
            continue;
        };
        let sources = answer::Sources {
            snapshot: &inner.snapshot,
            speed: inner.backends.speed.as_deref(),
        };
        let regroup = Regroup {
            from_ms: 0,
            step_ms: Some(view.granularity_ms),
            group_by: (0..view.group_by.len()).collect(),
        };
        let grouped = answer::grouped(
            sources,
            view,
            &source.topic,
            &CellQuery::all(),
            &regroup,
            now_ms(),
        )
        .await?;
        let mut columns = vec![Column::new("bucket", Kind::Time, Vec::new())];
        columns.extend(view.group_by.iter().map(|f| {
            let kind = match source.fields.get(f.slot).map(|s| s.kind) {
                Some(braid_shared::view::FieldKind::String) => Kind::Text,
                Some(braid_shared::view::FieldKind::Int) => Kind::Int,
                _ => Kind::Auto,
            };
            Column::new(&f.name, kind, Vec::new())
        }));
        columns.extend(view.metrics.iter().map(|m| {
            let kind = match m.expr {
                braid_shared::MetricExpr::Count
                | braid_shared::MetricExpr::ApproxDistinct { .. } => Kind::Int,
                braid_shared::MetricExpr::TopK { .. } => Kind::Text,
                _ => Kind::Auto,
            };
            Column::new(&m.name, kind, Vec::new())
        }));
        for ((bucket, group), states) in grouped.groups {
            columns[0].values.push(bucket.into());
            for (i, value) in group.iter().enumerate() {
                columns[1 + i].values.push(value.to_json());
            }
            let at = 1 + view.group_by.len();
            for (i, (metric, state)) in view.metrics.iter().zip(states.iter()).enumerate() {
                columns[at + i].values.push(state.finalize(&metric.expr));
            }
        }
        tables.push(Table::Rows { name, columns });
    }
    Ok(tables)
}

fn storage_error(error: braid_store::Error) -> ApiError {
    tracing::error!(%error, "reading storage for a SQL query");
    ApiError::internal("reading storage failed; the server log says why")
}

fn api_error(error: SqlError) -> ApiError {
    match error {
        SqlError::Refused(why) => ApiError::bad_request("sql_refused", why),
        SqlError::Failed(why) => ApiError::bad_request("sql_error", why),
        SqlError::Timeout(limit) => ApiError::new(
            crate::error::ErrorKind::Timeout,
            "sql_timeout",
            format!(
                "the query ran longer than serve.sql_timeout ({}) and was interrupted",
                braid_shared::config::format_duration(limit)
            ),
        ),
        SqlError::Busy(slots) => ApiError::unavailable(
            "sql_busy",
            format!("{slots} SQL queries are running (serve.sql_concurrency); try again shortly"),
        ),
        SqlError::Internal(why) => {
            tracing::error!(error = %why, "SQL engine");
            ApiError::internal("the SQL engine failed; the server log says why")
        }
    }
}
