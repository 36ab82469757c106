//! The audit trail's event pages. Every event of a source with event time in `[from, to)`
//! matching the field filters: archived ones read with Polars from the files the partition
//! manifests list (pruned by the files' event-time ranges and offsets), the ones the archive has
//! not reached yet from the broker. Ordered by (partition, offset) and paged after the last
//! (partition, offset) listed, so a page never skips or repeats an event, whatever the archiver
//! flushes or compacts meanwhile: each offset below a partition's archived end is read from the
//! archive, each one at or above it from the broker.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use braid_columnar::columns::ColumnType;
use braid_columnar::events::{EventQuery, read_events};
use braid_kafka::Tail;
use braid_shared::{Config, Decoder, SourceDef, Value};
use braid_store::Storage;
use braid_store::manifest::{ArchiveEntry, FileKind, PartitionManifest, read_archive_manifests};

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The broker did not answer for the events the archive has not reached yet.
    #[error("{0}")]
    BrokerUnavailable(String),
    /// The archive could not be read; the message is for the server's log.
    #[error("{what}: {reason}")]
    Archive { what: &'static str, reason: String },
}

/// Which events a page holds.
#[derive(Debug, Clone)]
pub struct EventRequest {
    /// Event time `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Required values, by slot of the source's fields.
    pub filters: Vec<(usize, Value)>,
    /// At most this many events.
    pub limit: usize,
    /// Only events after this (partition, offset).
    pub after: Option<(i32, i64)>,
}

impl EventRequest {
    fn matches(&self, time_ms: i64, values: &[Value]) -> bool {
        (self.from_ms..self.to_ms).contains(&time_ms)
            && self
                .filters
                .iter()
                .all(|(slot, value)| values.get(*slot).unwrap_or(&Value::Null) == value)
    }
}

/// One event of a page.
#[derive(Debug, Clone)]
pub struct FoundEvent {
    pub partition: i32,
    pub offset: i64,
    pub time_ms: i64,
    /// By slot of the source's fields.
    pub values: Vec<Value>,
    /// Read from the archive (else from the broker, not archived yet).
    pub archived: bool,
}

/// Reads event pages; keeps one broker reader per topic, made on first use (one connection,
/// reused by every page).
pub struct EventPages {
    config: Arc<Config>,
    storage: Arc<dyn Storage>,
    tails: Mutex<HashMap<String, Arc<Mutex<Tail>>>>,
}

impl EventPages {
    pub fn new(config: Arc<Config>, storage: Arc<dyn Storage>) -> Self {
        Self {
            config,
            storage,
            tails: Mutex::default(),
        }
    }

    /// The page of `source`'s events `request` asks for. Blocks on the archive and the broker:
    /// call it from a blocking thread.
    pub fn page(
        &self,
        source: &SourceDef,
        request: &EventRequest,
    ) -> Result<Vec<FoundEvent>, EventsError> {
        let tail = self.tail(&source.topic)?;
        let manifests =
            read_archive_manifests(self.storage.as_ref(), &source.topic).map_err(|e| {
                EventsError::Archive {
                    what: "reading the archive manifests",
                    reason: e.to_string(),
                }
            })?;
        let tail = tail
            .lock()
            .map_err(|_| unavailable("the broker reader failed earlier"))?;
        page(&tail, source, self.storage.as_ref(), &manifests, request)
    }

    /// The topic's broker reader, made on first use.
    fn tail(&self, topic: &str) -> Result<Arc<Mutex<Tail>>, EventsError> {
        let mut tails = self
            .tails
            .lock()
            .map_err(|_| unavailable("the broker readers failed earlier"))?;
        if let Some(tail) = tails.get(topic) {
            return Ok(Arc::clone(tail));
        }
        let tail = Tail::new(&self.config, topic).map_err(unavailable)?;
        let tail = Arc::new(Mutex::new(tail));
        tails.insert(topic.to_owned(), Arc::clone(&tail));
        Ok(tail)
    }
}

fn unavailable(why: impl std::fmt::Display) -> EventsError {
    EventsError::BrokerUnavailable(why.to_string())
}

fn page(
    tail: &Tail,
    source: &SourceDef,
    storage: &dyn Storage,
    manifests: &[PartitionManifest],
    request: &EventRequest,
) -> Result<Vec<FoundEvent>, EventsError> {
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
        .map(|(slot, value)| (fields[*slot].0.clone(), fields[*slot].1, value.clone()))
        .collect();
    let decoder = Decoder::new(source);
    let mut events = Vec::new();
    for partition in partitions {
        if events.len() == request.limit {
            break;
        }
        let start = match request.after {
            Some((p, _)) if partition < p => continue,
            Some((p, offset)) if partition == p => offset.saturating_add(1),
            _ => 0,
        };
        let manifest = by_partition.get(&partition);
        let archived_end = manifest.and_then(|m| m.end()).unwrap_or(0);
        if let Some(manifest) = manifest.filter(|_| start < archived_end) {
            // Range by range in offset order, each in windows of offsets that start at what
            // the page still needs and grow fourfold while filters leave them short: a page
            // decodes about a page's worth of rows (the files' row groups are skipped by
            // their offset statistics), not the rest of a range.
            for entry in manifest.entries.iter().filter(|e| e.to > start) {
                let files =
                    files(entry, source, storage, request).map_err(|e| EventsError::Archive {
                        what: "reading the archive",
                        reason: e.to_string(),
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
                    let read = read_events(&files, source, &fields, &query).map_err(|e| {
                        EventsError::Archive {
                            what: "reading archived events",
                            reason: format!("{}/{partition}: {e}", source.topic),
                        }
                    })?;
                    events.extend(read.into_iter().map(|e| FoundEvent {
                        partition,
                        offset: e.offset,
                        time_ms: e.time_ms,
                        values: e.values,
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
        let mut registry_down = None;
        tail.read(partition, start.max(archived_end), |offset, payload| {
            let decoded = match decoder.decode(payload) {
                Err(braid_shared::RejectReason::SchemaUnavailable { message }) => {
                    registry_down = Some(message);
                    return false;
                }
                decoded => decoded,
            };
            if let Ok(event) = decoded
                && request.matches(event.time_ms, &event.values)
            {
                events.push(FoundEvent {
                    partition,
                    offset,
                    time_ms: event.time_ms,
                    values: event.values,
                    archived: false,
                });
            }
            events.len() < request.limit
        })
        .map_err(unavailable)?;
        if let Some(why) = registry_down {
            return Err(unavailable(why));
        }
    }
    Ok(events)
}

/// An archive range's event files of the source that may hold events of the request: pruned
/// by the files' event-time ranges.
fn files(
    entry: &ArchiveEntry,
    source: &SourceDef,
    storage: &dyn Storage,
    request: &EventRequest,
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
