//! Compaction: a run of small consecutive ranges of a partition becomes one range with one file
//! per source and date, so recomputes never read thousands of tiny files. The replaced files are
//! retired in the manifest and removed after a grace period, as a run may still be reading them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use braid_store::Storage;
use braid_store::manifest::{ArchiveEntry, ArchiveFile, PartitionManifest, RetiredFile};
use polars::prelude::*;

use super::partition::{file_name, publish_with_files};
use crate::error::Result;
use crate::files::{now_ms, parquet_bytes, read_parquet};

/// Most ranges merged at once.
const MAX_MERGE: usize = 64;

fn entry_rows(entry: &ArchiveEntry) -> u64 {
    entry.files.iter().map(|f| f.rows).sum()
}

/// Merges the first run of at least `min_entries` consecutive ranges that each hold fewer than
/// `small_rows` rows (at most `2 * small_rows` rows together). Returns whether it merged.
pub(crate) fn compact(
    storage: &dyn Storage,
    token: &str,
    manifest: &mut PartitionManifest,
    min_entries: usize,
    small_rows: usize,
) -> Result<bool> {
    let small = |e: &ArchiveEntry| entry_rows(e) < small_rows as u64;
    let mut start = 0;
    let window = loop {
        let Some(first) = manifest.entries[start..].iter().position(small) else {
            return Ok(false);
        };
        let first = start + first;
        // Merged ranges stay within twice the flush size, so a merge is bounded in memory.
        let mut rows = 0;
        let len = manifest.entries[first..]
            .iter()
            .take(MAX_MERGE)
            .take_while(|e| {
                rows += entry_rows(e);
                small(e) && rows <= 2 * small_rows as u64
            })
            .count();
        if len >= min_entries {
            break first..first + len;
        }
        start = first + len.max(1);
    };
    let merged = &manifest.entries[window.clone()];
    let (from, to) = (merged[0].from, merged[merged.len() - 1].to);
    let tp = manifest.topic_partition();
    let name = file_name(&tp, from, to, token);
    // Files of one kind, source and directory (the date) become one file.
    let mut groups: BTreeMap<(String, String, String), Vec<&ArchiveFile>> = BTreeMap::new();
    for file in merged.iter().flat_map(|e| &e.files) {
        let parent = Path::new(&file.path)
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or("")
            .to_owned();
        let kind = format!("{:?}", file.kind);
        groups
            .entry((kind, file.source.clone(), parent))
            .or_default()
            .push(file);
    }
    let mut files = Vec::new();
    let mut written: Vec<(String, Vec<u8>)> = Vec::new();
    for ((_, source, parent), parts) in groups {
        let mut frame: Option<DataFrame> = None;
        for part in &parts {
            let df = read_parquet(storage, &part.path)?;
            match &mut frame {
                None => frame = Some(df),
                Some(all) => {
                    if let Err(error) = all.vstack_mut(&df) {
                        // A schema change between ranges: leave them as they are.
                        tracing::warn!(%error, partition = %tp, "ranges not compacted: their files differ in schema");
                        return Ok(false);
                    }
                }
            }
        }
        let Some(mut frame) = frame else { continue };
        frame.rechunk_mut();
        let rel = format!("{parent}/{name}");
        let bytes = parquet_bytes(&mut frame)?;
        let ranges = parts.iter().filter_map(|p| p.time_range_ms);
        let time_range_ms = ranges
            .clone()
            .map(|r| r.0)
            .min()
            .zip(ranges.map(|r| r.1).max());
        files.push(ArchiveFile {
            source,
            kind: parts[0].kind,
            path: rel.clone(),
            rows: parts.iter().map(|p| p.rows).sum(),
            bytes: bytes.len() as u64,
            time_range_ms,
        });
        written.push((rel, bytes));
    }
    let now = now_ms();
    let retired: Vec<RetiredFile> = merged
        .iter()
        .flat_map(|e| &e.files)
        .map(|f| RetiredFile {
            path: f.path.clone(),
            retired_at_ms: now,
        })
        .collect();
    let count = retired.len();
    publish_with_files(storage, manifest, &written, |manifest| {
        manifest.entries.splice(
            window,
            [ArchiveEntry {
                from,
                to,
                files,
                written_at_ms: now,
            }],
        );
        manifest.retired.extend(retired);
    })?;
    tracing::info!(partition = %tp, from, to, files = count, "compacted archive ranges");
    crate::metrics::compacted(count as u64);
    Ok(true)
}

/// Deletes retired files older than `grace`.
pub(crate) fn remove_retired(
    storage: &dyn Storage,
    manifest: &mut PartitionManifest,
    grace: Duration,
) -> Result<()> {
    let cutoff = now_ms() - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let (expired, kept): (Vec<RetiredFile>, Vec<RetiredFile>) = manifest
        .retired
        .drain(..)
        .partition(|r| r.retired_at_ms <= cutoff);
    manifest.retired = kept;
    if expired.is_empty() {
        return Ok(());
    }
    manifest.publish(storage)?;
    for file in expired {
        storage
            .delete(&file.path)
            .map_err(braid_store::Error::from)?;
    }
    Ok(())
}
