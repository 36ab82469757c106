//! The storage directory's layout, shared by every layer, and durable file writes.
//!
//! ```text
//! <storage.dir>/
//!   archive/source=<s>/date=<d>/*.parquet   the master dataset (Hive layout), per source and date
//!   archive/rejected/source=<s>/*.parquet  messages the archiver could not read
//!   archive/_manifest/<topic>/<p>.json     contiguous offset ranges of a partition and their files
//!   batch/CURRENT.json                 SnapshotPointer of the published snapshot
//!   batch/snapshots/<run>/             a snapshot's manifest.json and cell files (<view>.parquet)
//!   batch/history/<run>.json           one batch run's record
//!   batch/LOCK                         held by the process running a recompute
//!   speed/checkpoints/<topic>/<p>.ckpt speed state and next offset of one partition
//!   speed/rejected/<topic>/<p>.jsonl   events the speed layer could not read
//! ```

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::coverage::SnapshotPointer;
use crate::event::RejectReason;

/// How much of a rejected message is kept.
pub const REJECTED_RAW_LIMIT: usize = 4096;

/// A message a layer could not read, kept with where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub source: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: RejectReason,
    /// The message, as UTF-8 with invalid bytes replaced, cut at [`REJECTED_RAW_LIMIT`] bytes.
    pub raw: String,
    pub raw_bytes: usize,
    /// When it was rejected, epoch milliseconds.
    pub rejected_at_ms: i64,
}

impl RejectedRecord {
    /// Keeps a bounded, printable copy of `raw`.
    pub fn bounded_raw(raw: &[u8]) -> String {
        let cut = &raw[..raw.len().min(REJECTED_RAW_LIMIT)];
        String::from_utf8_lossy(cut).into_owned()
    }
}

/// Reads the rejected records of one topic's partitions as written by the speed layer, oldest
/// first per partition. Lines that do not parse (a torn last line) are skipped.
pub fn read_rejected(dir: &Path, topic: &str) -> io::Result<Vec<RejectedRecord>> {
    let topic_dir = speed_rejected_dir(dir).join(topic);
    let mut files: Vec<PathBuf> = match fs::read_dir(&topic_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    files.sort();
    let mut records = Vec::new();
    for file in files {
        let text = fs::read(&file)?;
        records.extend(
            text.split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .filter_map(|line| serde_json::from_slice::<RejectedRecord>(line).ok()),
        );
    }
    Ok(records)
}

pub fn archive_dir(dir: &Path) -> PathBuf {
    dir.join("archive")
}

pub fn archive_manifest_dir(dir: &Path) -> PathBuf {
    archive_dir(dir).join("_manifest")
}

pub fn archive_manifest_path(dir: &Path, topic: &str, partition: i32) -> PathBuf {
    archive_manifest_dir(dir)
        .join(topic)
        .join(format!("{partition}.json"))
}

pub fn snapshot_dir(dir: &Path, run_id: &str) -> PathBuf {
    dir.join("batch").join("snapshots").join(run_id)
}

pub fn batch_history_dir(dir: &Path) -> PathBuf {
    dir.join("batch").join("history")
}

pub fn snapshot_pointer_path(dir: &Path) -> PathBuf {
    dir.join("batch").join("CURRENT.json")
}

pub fn speed_checkpoint_path(dir: &Path, topic: &str, partition: i32) -> PathBuf {
    dir.join("speed")
        .join("checkpoints")
        .join(topic)
        .join(format!("{partition}.ckpt"))
}

pub fn speed_rejected_dir(dir: &Path) -> PathBuf {
    dir.join("speed").join("rejected")
}

pub fn speed_rejected_path(dir: &Path, topic: &str, partition: i32) -> PathBuf {
    speed_rejected_dir(dir)
        .join(topic)
        .join(format!("{partition}.jsonl"))
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix, and
/// the new content survives a crash once this returns: temp file, fsync, rename, fsync(dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temp, path)?;
    sync_dir(dir)
}

/// Makes a directory's entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads the published snapshot pointer, if any.
pub fn read_snapshot_pointer(dir: &Path) -> crate::Result<Option<SnapshotPointer>> {
    let path = snapshot_pointer_path(dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| crate::Error::Codec {
                what: "snapshot pointer",
                reason: format!("{}: {e}", path.display()),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::Error::Io { path, source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content() {
        let dir = std::env::temp_dir().join(format!("braid-storage-test-{}", std::process::id()));
        let path = dir.join("a").join("file.bin");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp files left behind");
        fs::remove_dir_all(dir).unwrap();
    }
}
