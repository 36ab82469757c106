//! `GET /v1/events/{source}`: the audit trail. Every event of a source with event time in
//! `[from, to)` matching the field filters: archived ones read with Polars from the files the
//! partition manifests list (pruned by the files' event-time ranges and offsets), the ones the
//! archive has not reached yet from the broker. Ordered by (partition, offset) and paged with a
//! cursor holding the last (partition, offset) listed, so a page never skips or repeats an
//! event, whatever the archiver flushes or compacts meanwhile: each offset below a partition's
//! archived end is read from the archive, each one at or above it from the broker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use braid_shared::{Decoder, SourceDef, Value};
use braid_store::columns::ColumnType;
use braid_store::events::{EventQuery, read_events};
use braid_store::manifest::{FileKind, PartitionManifest, read_archive_manifests};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, abbreviate};
use crate::query::{Cursor, Params, format_time, parse_range, parse_value};
use crate::state::{AppState, now_ms};
use crate::tail::Tail;

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
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<EventPage>, ApiError> {
    let config = Arc::clone(&state.0.config);
    let source = config.source(&name).cloned().ok_or_else(|| {
        ApiError::not_found(
            "unknown_source",
            format!("no source {:?}", abbreviate(&name)),
        )
    })?;
    let params = Params::parse(raw.as_deref())?;
    let request = Request::parse(&source, &params, now_ms(), config.serve.max_rows.max(1))?;
    let storage = Arc::clone(&state.0.storage);
    let tail = tail(&state, &config, &source.topic)?;
    tokio::task::spawn_blocking(move || {
        let manifests =
            read_archive_manifests(storage.as_ref(), &source.topic).map_err(|error| {
                tracing::error!(%error, "reading the archive manifests for events");
                ApiError::internal("reading the archive manifests failed; the server log says why")
            })?;
        let tail = tail
            .lock()
            .map_err(|_| ApiError::internal("the broker reader failed earlier"))?;
        page(&tail, &source, storage.as_ref(), &manifests, &request)
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading events: {e}")))?
    .map(Json)
}

struct Request {
    from_ms: i64,
    to_ms: i64,
    filters: Vec<(usize, ColumnType, Value)>,
    limit: usize,
    after: Option<Cursor>,
}

impl Request {
    fn parse(
        source: &SourceDef,
        params: &Params,
        now_ms: i64,
        max_rows: usize,
    ) -> Result<Self, ApiError> {
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
            let kind = source.fields[slot].kind;
            let value = parse_value(name, text, kind)?;
            filters.push((slot, ColumnType::of(kind), value));
        }
        Ok(Self {
            from_ms,
            to_ms,
            filters,
            limit: params.limit(100, max_rows)?,
            after: params
                .get("cursor")
                .map(|c| Cursor::decode(EVENTS_CURSOR, c))
                .transpose()?,
        })
    }

    fn matches(&self, time_ms: i64, values: &[Value]) -> bool {
        (self.from_ms..self.to_ms).contains(&time_ms)
            && self
                .filters
                .iter()
                .all(|(slot, _, value)| values.get(*slot).unwrap_or(&Value::Null) == value)
    }
}

/// The topic's broker reader, made on first use.
fn tail(
    state: &AppState,
    config: &braid_shared::Config,
    topic: &str,
) -> Result<Arc<std::sync::Mutex<Tail>>, ApiError> {
    let mut tails = state
        .0
        .tails
        .lock()
        .map_err(|_| ApiError::internal("the broker readers failed earlier"))?;
    if let Some(tail) = tails.get(topic) {
        return Ok(Arc::clone(tail));
    }
    let tail = Arc::new(std::sync::Mutex::new(
        Tail::new(config, topic).map_err(|why| ApiError::unavailable("broker_unavailable", why))?,
    ));
    tails.insert(topic.to_owned(), Arc::clone(&tail));
    Ok(tail)
}

fn page(
    tail: &Tail,
    source: &SourceDef,
    storage: &dyn braid_store::Storage,
    manifests: &[PartitionManifest],
    request: &Request,
) -> Result<EventPage, ApiError> {
    let unavailable = |why: String| ApiError::unavailable("broker_unavailable", why);
    let mut partitions: Vec<i32> = tail.partitions().map_err(unavailable)?;
    partitions.extend(manifests.iter().map(|m| m.partition));
    partitions.sort_unstable();
    partitions.dedup();
    let by_partition: BTreeMap<i32, &PartitionManifest> =
        manifests.iter().map(|m| (m.partition, m)).collect();
    let fields: Vec<(String, ColumnType)> = source
        .fields
        .iter()
        .map(|f| (f.name.clone(), ColumnType::of(f.kind)))
        .collect();
    let filters: Vec<(String, ColumnType, Value)> = request
        .filters
        .iter()
        .map(|(slot, ty, value)| (fields[*slot].0.clone(), *ty, value.clone()))
        .collect();
    let decoder = Decoder::new(source);
    let mut events = Vec::new();
    for partition in partitions {
        if events.len() == request.limit {
            break;
        }
        let start = match request.after {
            Some(c) if partition < c.partition => continue,
            Some(c) if partition == c.partition => c.offset.saturating_add(1),
            _ => 0,
        };
        let name = format!("{}/{partition}", source.topic);
        let manifest = by_partition.get(&partition);
        let archived_end = manifest.and_then(|m| m.end()).unwrap_or(0);
        if let Some(manifest) = manifest.filter(|_| start < archived_end) {
            // Range by range in offset order, each in windows of offsets that start at what
            // the page still needs and grow fourfold while filters leave them short: a page
            // decodes about a page's worth of rows (the files' row groups are skipped by
            // their offset statistics), not the rest of a range.
            for entry in manifest.entries.iter().filter(|e| e.to > start) {
                let files = files(entry, source, storage, request).map_err(|error| {
                    tracing::error!(%error, "reading archive files for events");
                    ApiError::internal("reading the archive failed; the server log says why")
                })?;
                if files.is_empty() {
                    continue;
                }
                let mut from = start.max(entry.from);
                let mut width = (request.limit - events.len()) as i64;
                while from < entry.to && events.len() < request.limit {
                    let to = entry.to.min(from.saturating_add(width));
                    let query = EventQuery {
                        partition,
                        from_offset: from,
                        to_offset: to,
                        from_ms: request.from_ms,
                        to_ms: request.to_ms,
                        filters: filters.clone(),
                        limit: request.limit - events.len(),
                    };
                    let read = read_events(&files, &fields, &query).map_err(|error| {
                        tracing::error!(%error, partition = %name, "reading archived events");
                        ApiError::internal(
                            "reading archived events failed; the server log says why",
                        )
                    })?;
                    events.extend(read.into_iter().map(|e| AuditEvent {
                        partition: name.clone(),
                        offset: e.offset,
                        event_time: format_time(e.time_ms),
                        event: object(source, &e.values),
                        archived: true,
                    }));
                    from = to;
                    width = width.saturating_mul(4);
                }
                if events.len() == request.limit {
                    break;
                }
            }
        }
        if events.len() == request.limit {
            break;
        }
        tail.read(partition, start.max(archived_end), |offset, payload| {
            if let Ok(event) = decoder.decode(payload)
                && request.matches(event.time_ms, &event.values)
            {
                events.push(AuditEvent {
                    partition: name.clone(),
                    offset,
                    event_time: format_time(event.time_ms),
                    event: object(source, &event.values),
                    archived: false,
                });
            }
            events.len() < request.limit
        })
        .map_err(unavailable)?;
    }
    let next_cursor = events.last().map(|last| {
        let partition = last
            .partition
            .rsplit_once('/')
            .map_or(0, |(_, p)| p.parse().unwrap_or(0));
        Cursor {
            partition,
            offset: last.offset,
        }
        .encode(EVENTS_CURSOR)
    });
    Ok(EventPage {
        events,
        next_cursor,
    })
}

/// An archive range's event files of the source that may hold events of the request: pruned
/// by the files' event-time ranges.
fn files(
    entry: &braid_store::manifest::ArchiveEntry,
    source: &SourceDef,
    storage: &dyn braid_store::Storage,
    request: &Request,
) -> Result<Vec<PathBuf>, braid_store::Error> {
    entry
        .files
        .iter()
        .filter(|file| {
            file.kind == FileKind::Events
                && file.source == source.name
                && file
                    .time_range_ms
                    .is_none_or(|(min, max)| min < request.to_ms && max >= request.from_ms)
        })
        .map(|file| file.local(storage))
        .collect()
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
