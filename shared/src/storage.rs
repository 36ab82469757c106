//! The storage directory's layout, shared by every layer, and durable file writes.
//!
//! ```text
//! <storage.dir>/
//!   batch/CURRENT.json                 SnapshotPointer of the published snapshot
//!   speed/checkpoints/<topic>/<p>.ckpt speed state and next offset of one partition
//!   speed/rejected/<topic>/<p>.jsonl   events the speed layer could not read
//! ```

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::coverage::SnapshotPointer;

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
