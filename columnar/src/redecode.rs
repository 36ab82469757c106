//! Archive files written before their source read some field (a view added later, a field
//! declared later or with another type): their rows come from decoding the messages every file
//! keeps (`_message`) again with the source's decoder, so a view over any field is recomputed
//! from all of history. Files whose columns are current are scanned as they are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use braid_shared::{Decoder, Event, SourceDef};
use polars::prelude::*;

use crate::columns::{ArchiveRow, ColumnType, INGEST_TIME, MESSAGE, OFFSET, PARTITION};
use crate::error::{Error, Result};

/// Whether the file at `path` lacks a column `source` reads (or holds it as another type) but
/// keeps its messages, so its rows must be decoded again.
pub(crate) fn is_stale(path: &Path, source: &SourceDef) -> Result<bool> {
    let schema = file_schema(path)?;
    if schema.get(MESSAGE).is_none() {
        return Ok(false);
    }
    Ok(source.fields.iter().any(|field| {
        schema
            .get(&field.name)
            .is_none_or(|dtype| *dtype != ColumnType::of(field.kind).dtype())
    }))
}

/// The columns of the archive file at `path`. Archive files never change once written (their
/// names are unique), so each footer is read once per process.
pub fn file_schema(path: &Path) -> Result<SchemaRef> {
    type Known = Mutex<HashMap<PathBuf, SchemaRef>>;
    static KNOWN: LazyLock<Known> = LazyLock::new(Known::default);
    /// Files remembered at most; forgotten all at once beyond (a read is cheap).
    const MOST: usize = 100_000;
    if let Some(schema) = KNOWN.lock().ok().and_then(|known| known.get(path).cloned()) {
        return Ok(schema);
    }
    let schema =
        LazyFrame::scan_parquet(PlRefPath::try_from_path(path)?, crate::events::scan_args())?
            .collect_schema()
            .map_err(|e| damaged(path, e))?;
    if let Ok(mut known) = KNOWN.lock() {
        if known.len() >= MOST {
            known.clear();
        }
        known.insert(path.to_owned(), SchemaRef::clone(&schema));
    }
    Ok(schema)
}

/// The rows of the file at `path` (offsets `[from, to)` of them, or all) with every field of
/// `source` decoded again from their messages, laid out as the archive writes them. A message
/// the source's decoder now rejects is left out, as the speed layer leaves it out.
pub(crate) fn decoded(
    path: &Path,
    source: &SourceDef,
    offsets: Option<(i64, i64)>,
) -> Result<DataFrame> {
    let mut frame =
        LazyFrame::scan_parquet(PlRefPath::try_from_path(path)?, crate::events::scan_args())?
            .select([col(PARTITION), col(OFFSET), col(INGEST_TIME), col(MESSAGE)]);
    if let Some((from, to)) = offsets {
        frame = frame.filter(col(OFFSET).gt_eq(lit(from)).and(col(OFFSET).lt(lit(to))));
    }
    let frame = frame.collect().map_err(|e| damaged(path, e))?;
    let column = |name: &str| frame.column(name).map_err(|e| damaged(path, e));
    let partition = column(PARTITION)?
        .i32()
        .map_err(|e| damaged(path, e))?
        .get(0)
        .unwrap_or(0);
    let offsets = column(OFFSET)?.i64().map_err(|e| damaged(path, e))?.clone();
    let ingest = column(INGEST_TIME)?
        .i64()
        .map_err(|e| damaged(path, e))?
        .clone();
    let messages = column(MESSAGE)?
        .binary()
        .map_err(|e| damaged(path, e))?
        .clone();
    let decoder = Decoder::new(source);
    let mut events: Vec<(i64, i64, Event, &[u8])> = Vec::with_capacity(frame.height());
    for ((offset, ingest), message) in offsets.iter().zip(ingest.iter()).zip(messages.iter()) {
        let (Some(offset), Some(message)) = (offset, message) else {
            continue;
        };
        match decoder.decode(message) {
            Ok(event) => events.push((offset, ingest.unwrap_or(0), event, message)),
            // The schema registry is down: no recompute without these rows.
            Err(braid_shared::RejectReason::SchemaUnavailable { message }) => {
                return Err(Error::ArchiveFile {
                    path: path.to_owned(),
                    reason: message,
                });
            }
            // Accepted when archived, so read then; a message that no longer decodes (a
            // field's declared type changed since) is left out, as it would be now.
            Err(_) => {}
        }
    }
    let rows: Vec<ArchiveRow<'_>> = events
        .iter()
        .map(|(offset, ingest_ms, event, message)| ArchiveRow {
            offset: *offset,
            ingest_ms: *ingest_ms,
            event,
            message,
        })
        .collect();
    crate::columns::events_frame(source, partition, &rows).map_err(|e| damaged(path, e))
}

fn damaged(path: &Path, error: PolarsError) -> Error {
    Error::ArchiveFile {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}
