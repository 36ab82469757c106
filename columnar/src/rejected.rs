//! The archive's rejected files read back (the speed layer's rejected log is `braid-store`'s).

use braid_shared::RejectedRecord;
use braid_store::Storage;
use braid_store::manifest::{FileKind, read_archive_manifests};
use polars::prelude::*;

use crate::columns::{INGEST_TIME, OFFSET, PARTITION};
use crate::error::{Error, Result};

/// The rejections of `source` in the archive's rejected files, from the files the archive
/// manifests of `topic` list (one read of each manifest, so a compaction under the read is seen
/// before or after, never halfway). `rejected_at_ms` is when the archiver consumed the message.
pub fn read_archived_rejected(
    storage: &dyn Storage,
    topic: &str,
    source: &str,
) -> Result<Vec<RejectedRecord>> {
    let mut records = Vec::new();
    for manifest in read_archive_manifests(storage, topic)? {
        let files = manifest.entries.iter().flat_map(|e| &e.files);
        for file in files.filter(|f| f.kind == FileKind::Rejected && f.source == source) {
            let damaged = |reason: String| Error::Codec {
                what: "archive rejected file",
                key: file.path.clone(),
                reason,
            };
            let Some(object) = storage.get(&file.path)? else {
                continue;
            };
            let df = ParquetReader::new(std::io::Cursor::new(object.bytes))
                .finish()
                .map_err(|e| damaged(e.to_string()))?;
            let column = |name: &str| {
                df.column(name)
                    .map_err(|e| damaged(e.to_string()))?
                    .cast(&match name {
                        PARTITION => DataType::Int32,
                        "raw_bytes" => DataType::UInt64,
                        "detail" | "raw" => DataType::String,
                        _ => DataType::Int64,
                    })
                    .map_err(|e| damaged(e.to_string()))
            };
            let (partition, offset, ingest) =
                (column(PARTITION)?, column(OFFSET)?, column(INGEST_TIME)?);
            let (detail, raw, raw_bytes) =
                (column("detail")?, column("raw")?, column("raw_bytes")?);
            let bad = |e: PolarsError| damaged(e.to_string());
            let (partition, offset, ingest) = (
                partition.i32().map_err(bad)?,
                offset.i64().map_err(bad)?,
                ingest.i64().map_err(bad)?,
            );
            let (detail, raw, raw_bytes) = (
                detail.str().map_err(bad)?,
                raw.str().map_err(bad)?,
                raw_bytes.u64().map_err(bad)?,
            );
            for row in 0..df.height() {
                let missing = || damaged(format!("row {row} has an empty column"));
                let reason = serde_json::from_str(detail.get(row).ok_or_else(missing)?)
                    .map_err(|e| damaged(format!("row {row}: {e}")))?;
                records.push(RejectedRecord {
                    source: source.to_owned(),
                    topic: topic.to_owned(),
                    partition: partition.get(row).ok_or_else(missing)?,
                    offset: offset.get(row).ok_or_else(missing)?,
                    reason,
                    raw: raw.get(row).unwrap_or_default().to_owned(),
                    raw_bytes: usize::try_from(raw_bytes.get(row).unwrap_or_default())
                        .unwrap_or(usize::MAX),
                    rejected_at_ms: ingest.get(row).ok_or_else(missing)?,
                });
            }
        }
    }
    Ok(records)
}
