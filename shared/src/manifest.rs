//! What the batch layer publishes, described for every reader: the archive's manifest of
//! contiguous offset ranges per partition, and each snapshot's manifest. Readers list these,
//! never a directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::coverage::{Coverage, TopicPartition};
use crate::error::{Error, Result};

/// Version of [`PartitionManifest`] files.
pub const ARCHIVE_MANIFEST_VERSION: u32 = 1;
/// Version of [`SnapshotManifest`] files.
pub const SNAPSHOT_MANIFEST_VERSION: u32 = 1;

/// The archive of one Kafka partition: contiguous offset ranges, each with the Parquet files
/// holding its events (one per source and event date) and its rejected messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionManifest {
    pub version: u32,
    pub topic: String,
    pub partition: i32,
    /// Ordered; each entry starts where the previous one ends.
    pub entries: Vec<ArchiveEntry>,
    /// Files replaced by compaction, deleted once no reader can still be using them.
    #[serde(default)]
    pub retired: Vec<RetiredFile>,
}

/// Offsets `[from, to)` of a partition, all archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    pub from: i64,
    pub to: i64,
    pub files: Vec<ArchiveFile>,
    /// When the range was published, epoch ms.
    pub written_at_ms: i64,
}

/// What an archive file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// Decoded events of one source and event date.
    Events,
    /// Messages one source could not read, with their reasons.
    Rejected,
}

/// One immutable Parquet file of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveFile {
    pub source: String,
    pub kind: FileKind,
    /// Path relative to the storage dir.
    pub path: String,
    pub rows: u64,
    /// File size; a file of another size is damaged.
    pub bytes: u64,
    /// Event-time range of the rows, epoch ms (events files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range_ms: Option<(i64, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredFile {
    pub path: String,
    pub retired_at_ms: i64,
}

impl PartitionManifest {
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            version: ARCHIVE_MANIFEST_VERSION,
            topic: topic.to_owned(),
            partition,
            entries: Vec::new(),
            retired: Vec::new(),
        }
    }

    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }

    /// The next offset to archive: the end of the last range, if any.
    pub fn end(&self) -> Option<i64> {
        self.entries.last().map(|e| e.to)
    }

    /// Checks the version and that ranges are non-empty and contiguous.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.version != ARCHIVE_MANIFEST_VERSION {
            return Err(format!(
                "unknown archive manifest version {} (expected {ARCHIVE_MANIFEST_VERSION})",
                self.version
            ));
        }
        let mut previous: Option<i64> = None;
        for entry in &self.entries {
            if entry.from >= entry.to || entry.from < 0 {
                return Err(format!(
                    "empty or negative range [{}, {})",
                    entry.from, entry.to
                ));
            }
            if let Some(end) = previous
                && end != entry.from
            {
                return Err(format!(
                    "gap or overlap: a range ends at {end}, the next starts at {}",
                    entry.from
                ));
            }
            previous = Some(entry.to);
        }
        Ok(())
    }

    /// Reads and checks a manifest file; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io {
                    path: path.to_owned(),
                    source: e,
                });
            }
        };
        let codec = |reason: String| Error::Codec {
            what: "archive manifest",
            reason: format!("{}: {reason}", path.display()),
        };
        let manifest: Self = serde_json::from_slice(&bytes).map_err(|e| codec(e.to_string()))?;
        manifest.check().map_err(codec)?;
        Ok(Some(manifest))
    }
}

/// Every partition manifest of a topic's archive, ordered by partition.
pub fn read_archive_manifests(dir: &Path, topic: &str) -> Result<Vec<PartitionManifest>> {
    let topic_dir = crate::storage::archive_manifest_dir(dir).join(topic);
    let entries = match std::fs::read_dir(&topic_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                path: topic_dir,
                source: e,
            });
        }
    };
    let mut manifests = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_manifest = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'));
        if !is_manifest {
            continue;
        }
        if let Some(manifest) = PartitionManifest::read(&path)? {
            manifests.push(manifest);
        }
    }
    manifests.sort_by_key(|m| m.partition);
    Ok(manifests)
}

/// A published batch snapshot: its coverage and, per view, the cell files that make it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub version: u32,
    pub run_id: String,
    /// RFC 3339.
    pub created_at: String,
    pub coverage: Coverage,
    pub views: BTreeMap<String, ViewSnapshot>,
}

/// One view of a snapshot: the merge of its layers' cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewSnapshot {
    /// The view definition's fingerprint, hex; cells of another definition are never merged.
    pub fingerprint: String,
    /// Cell files; merging all of them gives the view at the snapshot's coverage. A full
    /// recompute writes one; each incremental run adds one for the offsets it added.
    pub layers: Vec<SnapshotLayer>,
}

/// Cells computed by one run from the archive offsets `[from, to)` of every partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotLayer {
    pub run_id: String,
    /// Path relative to the storage dir.
    pub path: String,
    pub from: Coverage,
    pub to: Coverage,
    pub cells: u64,
    /// Archive rows folded into these cells.
    pub rows: u64,
    pub bytes: u64,
}

impl ViewSnapshot {
    pub fn cells_upper_bound(&self) -> u64 {
        self.layers.iter().map(|l| l.cells).sum()
    }
}

impl SnapshotManifest {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
        let manifest: Self = serde_json::from_slice(&bytes).map_err(|e| Error::Codec {
            what: "snapshot manifest",
            reason: format!("{}: {e}", path.display()),
        })?;
        if manifest.version != SNAPSHOT_MANIFEST_VERSION {
            return Err(Error::Codec {
                what: "snapshot manifest",
                reason: format!(
                    "{}: unknown version {} (expected {SNAPSHOT_MANIFEST_VERSION})",
                    path.display(),
                    manifest.version
                ),
            });
        }
        Ok(manifest)
    }
}

/// A fingerprint as written in manifests.
pub fn fingerprint_hex(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(from: i64, to: i64) -> ArchiveEntry {
        ArchiveEntry {
            from,
            to,
            files: Vec::new(),
            written_at_ms: 0,
        }
    }

    #[test]
    fn contiguous_ranges_pass_and_gaps_fail() {
        let mut m = PartitionManifest::new("t", 0);
        m.entries = vec![entry(0, 10), entry(10, 25)];
        assert_eq!(m.check(), Ok(()));
        assert_eq!(m.end(), Some(25));
        m.entries.push(entry(26, 30));
        assert!(m.check().unwrap_err().contains("ends at 25"));
        m.entries = vec![entry(5, 5)];
        assert!(m.check().unwrap_err().contains("empty"));
    }
}
