//! What the batch layer publishes, described for every reader: the archive's manifest of
//! contiguous offset ranges per partition, and each snapshot's manifest. Readers list these,
//! never a data directory. Writers replace a manifest only over the version they read
//! ([`crate::storage::put_over`]), so a writer that lost its partition is refused.

use std::collections::BTreeMap;

use braid_shared::{Coverage, TopicPartition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout;
use crate::storage::{Storage, Version, put_over};

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
    /// The stored version this copy was read as or last published as (`None`: not stored
    /// yet). Publishing replaces only that version.
    #[serde(skip)]
    pub held: Option<Version>,
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
    /// Storage key (path relative to the storage dir).
    pub path: String,
    pub rows: u64,
    /// File size; a file of another size is damaged.
    pub bytes: u64,
    /// Event-time range of the rows, epoch ms (events files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range_ms: Option<(i64, i64)>,
}

impl ArchiveFile {
    /// The file as a local file, for readers that scan files in place (Polars, DuckDB): remote
    /// storage downloads it into its cache.
    pub fn local(&self, storage: &dyn Storage) -> Result<std::path::PathBuf> {
        storage
            .local_file(&self.path)?
            .ok_or_else(|| Error::ArchiveFile {
                path: self.path.clone().into(),
                reason: "listed in the manifest but not in storage".to_owned(),
            })
    }
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
            held: None,
        }
    }

    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }

    /// The manifest's storage key.
    pub fn key(&self) -> String {
        layout::archive_manifest(&self.topic, self.partition)
    }

    /// The next offset to archive: the end of the last range, if any.
    pub fn end(&self) -> Option<i64> {
        self.entries.last().map(|e| e.to)
    }

    /// Checks the version and that ranges are non-empty and contiguous.
    pub fn check(&self) -> std::result::Result<(), braid_shared::Invalid> {
        self.problems().map_err(braid_shared::Invalid)
    }

    fn problems(&self) -> std::result::Result<(), String> {
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

    /// Reads and checks the manifest of a partition; `None` when there is none.
    pub fn read(storage: &dyn Storage, topic: &str, partition: i32) -> Result<Option<Self>> {
        Self::read_key(storage, &layout::archive_manifest(topic, partition))
    }

    fn read_key(storage: &dyn Storage, key: &str) -> Result<Option<Self>> {
        let Some(object) = storage.get(key)? else {
            return Ok(None);
        };
        let codec = Error::codec("archive manifest", key);
        let mut manifest: Self = match serde_json::from_slice(&object.bytes) {
            Ok(manifest) => manifest,
            Err(e) => return Err(codec(e.to_string())),
        };
        if let Err(reason) = manifest.problems() {
            return Err(codec(reason));
        }
        manifest.held = Some(object.version);
        Ok(Some(manifest))
    }

    /// Publishes the manifest over the version it holds; a writer whose copy is no longer the
    /// stored one (another took the partition over) gets [`Error::Conflict`].
    pub fn publish(&mut self, storage: &dyn Storage) -> Result<()> {
        let key = self.key();
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Encode {
            what: "archive manifest",
            reason: e.to_string(),
        })?;
        let version =
            put_over(storage, &key, &json, self.held.as_ref())?.ok_or(Error::Conflict { key })?;
        self.held = Some(version);
        Ok(())
    }
}

/// Every partition manifest of a topic's archive, ordered by partition.
pub fn read_archive_manifests(
    storage: &dyn Storage,
    topic: &str,
) -> Result<Vec<PartitionManifest>> {
    let prefix = layout::archive_manifests(topic);
    let mut manifests = Vec::new();
    for listed in storage.list(&prefix)? {
        let name = &listed.key[prefix.len()..];
        if name.contains('/') || !name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        if let Some(manifest) = PartitionManifest::read_key(storage, &listed.key)? {
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
    /// Storage key of the cell file.
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
    /// Reads the snapshot manifest at `key` (as a pointer names it).
    pub fn read(storage: &dyn Storage, key: &str) -> Result<Self> {
        let codec = Error::codec("snapshot manifest", key);
        let Some(object) = storage.get(key)? else {
            return Err(codec("is missing".to_owned()));
        };
        let manifest: Self = match serde_json::from_slice(&object.bytes) {
            Ok(manifest) => manifest,
            Err(e) => return Err(codec(e.to_string())),
        };
        if manifest.version != SNAPSHOT_MANIFEST_VERSION {
            return Err(codec(format!(
                "unknown version {} (expected {SNAPSHOT_MANIFEST_VERSION})",
                manifest.version
            )));
        }
        Ok(manifest)
    }

    /// Writes the manifest of a new snapshot; its key is written once.
    pub fn write(&self, storage: &dyn Storage) -> Result<String> {
        let key = layout::snapshot_manifest(&self.run_id);
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Encode {
            what: "snapshot manifest",
            reason: e.to_string(),
        })?;
        match put_over(storage, &key, &json, None)? {
            Some(_) => Ok(key),
            None => Err(Error::Conflict { key }),
        }
    }
}

/// A fingerprint as written in manifests.
pub fn fingerprint_hex(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

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
        assert!(m.check().unwrap_err().0.contains("ends at 25"));
        m.entries = vec![entry(5, 5)];
        assert!(m.check().unwrap_err().0.contains("empty"));
    }

    #[test]
    fn a_writer_that_lost_the_partition_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let mut first = PartitionManifest::new("t", 3);
        first.entries = vec![entry(0, 10)];
        first.publish(&storage).unwrap();
        // A second writer takes the partition over and moves the manifest on ...
        let mut second = PartitionManifest::read(&storage, "t", 3).unwrap().unwrap();
        assert_eq!(second.held, first.held);
        second.entries.push(entry(10, 20));
        second.publish(&storage).unwrap();
        // ... and the first, still holding the old version, is refused.
        first.entries.push(entry(10, 30));
        assert!(matches!(
            first.publish(&storage),
            Err(Error::Conflict { .. })
        ));
        let stored = read_archive_manifests(&storage, "t").unwrap();
        assert_eq!(stored, [second]);
        assert_eq!(stored[0].end(), Some(20));
    }
}
