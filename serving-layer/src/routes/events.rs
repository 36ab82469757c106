//! `GET /v1/events/{source}`: the audit trail's event pages (`braid_merge::events`), paged
//! with a cursor holding the last (partition, offset) listed.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use braid_merge::events::{EventRequest, FoundEvent};
use braid_shared::text::format_time;
use braid_shared::{SourceDef, Value};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::SourceRequest;
use crate::query::{Cursor, Params, parse_range, parse_value};
use crate::state::{AppState, now_ms};

/// What `GET /v1/events` cursors start with.
const EVENTS_CURSOR: &str = "events.v1:";

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// At most `limit`, ordered by (partition, offset), after `cursor`.
    pub events: Vec<AuditEvent>,
    /// The position after the last event listed: pass it as `cursor` for the next page (and
    /// again later, to poll for newer events). `null` on an empty page: nothing more for now.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    /// `topic/partition`.
    pub partition: String,
    pub offset: i64,
    pub event_time: String,
    /// The event's fields as Braid read them.
    #[schema(value_type = Object)]
    pub event: serde_json::Map<String, serde_json::Value>,
    /// Whether it came from the archive (else from the broker, not archived yet).
    pub archived: bool,
}

/// Raw events of a source, archived and not yet archived, each with partition and offset.
#[utoipa::path(get, path = "/v1/events/{source}", tag = "audit",
    params(("source" = String, Path, description = "a source's name"),
        ("from" = String, Query, description = "event time from (inclusive): RFC 3339, epoch ms or now[-duration]"),
        ("to" = String, Query, description = "event time to (exclusive)"),
        ("<field>" = Option<String>, Query, description = "only events with this value of a field of the source"),
        ("limit" = Option<usize>, Query, description = "events per page, 1 to serve.max_rows (default 100)"),
        ("cursor" = Option<String>, Query, description = "the `next_cursor` of the previous page")),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorBody, description = "a bad parameter"),
        (status = 404, body = ErrorBody, description = "no such source"),
        (status = 503, body = ErrorBody, description = "the broker did not answer for the events not archived yet"),
    ))]
pub async fn events(
    State(state): State<AppState>,
    SourceRequest { source, params }: SourceRequest,
) -> Result<Json<EventPage>, ApiError> {
    let max_rows = state.0.config.serve.max_rows.max(1);
    let request = parse(&source, &params, now_ms(), max_rows)?;
    let pages = Arc::clone(&state.0.events);
    let read = Arc::clone(&source);
    let found = tokio::task::spawn_blocking(move || pages.page(&read, &request))
        .await
        .map_err(|e| ApiError::internal(format!("reading events: {e}")))??;
    Ok(Json(EventPage::of(&source, found)))
}

/// The request's range, filters (any field of the source), limit and cursor.
fn parse(
    source: &SourceDef,
    params: &Params,
    now_ms: i64,
    max_rows: usize,
) -> Result<EventRequest, ApiError> {
    let (from_ms, to_ms) = parse_range(params.get("from"), params.get("to"), now_ms)?;
    let mut filters = Vec::new();
    for (name, text) in params.pairs() {
        if ["from", "to", "limit", "cursor"].contains(&name.as_str()) {
            continue;
        }
        let Some(slot) = source.slot(name) else {
            let fields: Vec<&str> = source.fields.iter().map(|f| f.name.as_str()).collect();
            return Err(ApiError::parameter(
                name,
                format!(
                    "is not a parameter of this endpoint nor a field of source {:?} (filters apply to: {})",
                    source.name,
                    fields.join(", ")
                ),
            ));
        };
        filters.push((slot, parse_value(name, text, source.fields[slot].kind)?));
    }
    Ok(EventRequest {
        from_ms,
        to_ms,
        filters,
        limit: params.limit(100, max_rows)?,
        after: params
            .get("cursor")
            .map(|c| Cursor::decode(EVENTS_CURSOR, c))
            .transpose()?
            .map(|c| (c.partition, c.offset)),
    })
}

impl EventPage {
    fn of(source: &SourceDef, found: Vec<FoundEvent>) -> Self {
        let next_cursor = found.last().map(|last| {
            Cursor {
                partition: last.partition,
                offset: last.offset,
            }
            .encode(EVENTS_CURSOR)
        });
        let events = found
            .into_iter()
            .map(|e| AuditEvent {
                partition: format!("{}/{}", source.topic, e.partition),
                offset: e.offset,
                event_time: format_time(e.time_ms),
                event: object(source, &e.values),
                archived: e.archived,
            })
            .collect();
        Self {
            events,
            next_cursor,
        }
    }
}

fn object(source: &SourceDef, values: &[Value]) -> serde_json::Map<String, serde_json::Value> {
    source
        .fields
        .iter()
        .zip(values)
        .filter(|(_, v)| !matches!(v, Value::Null))
        .map(|(field, value)| (field.name.clone(), value.to_json()))
        .collect()
}
