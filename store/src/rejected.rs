//! The speed layer's rejected-events log of one partition, as immutable chunks and a manifest.
//!
//! Rejections are buffered between checkpoints. Before each checkpoint the buffer becomes one
//! chunk object (`speed/rejected/<topic>/<p>/<n>.jsonl`, JSON lines, written once) and the
//! partition's manifest (`speed/rejected/<topic>/<p>.json`) lists it; the checkpoint then
//! records how many chunks it covers. Taking the partition up again keeps exactly that many
//! chunks, so messages replayed after a crash are never logged twice. Readers read the
//! manifests and the chunks they name, never a directory of chunks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_shared::RejectedRecord;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout;
use crate::storage::{Storage, Version, put_over};

/// Version of rejected-log manifests.
pub const REJECTED_MANIFEST_VERSION: u32 = 1;

/// The chunks of one partition's rejected log, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedManifest {
    pub version: u32,
    pub topic: String,
    pub partition: i32,
    pub chunks: Vec<RejectedChunk>,
    /// Sequence number of the next chunk; never reused, so a chunk key is written once.
    pub next_seq: u64,
}

/// One chunk: the records rejected between two checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedChunk {
    pub key: String,
    pub records: u64,
    pub bytes: u64,
}

/// What to keep of an existing log when a partition is taken up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The first `chunks` chunks, which the restored checkpoint covers, and from later chunks
    /// the records below `replay_from`: the replay starts there (the batch coverage may have
    /// passed the checkpoint), so it would not write them again.
    Chunks { chunks: u64, replay_from: i64 },
    /// The first `n` bytes of the single-file log of older versions, which the restored
    /// checkpoint (of the older format) covers; they become the first chunk.
    LegacyBytes(u64),
    /// Records of offsets below this: the state is rebuilt from here.
    BelowOffset(i64),
}

/// The writer of one partition's rejected log, held by the partition's owner.
pub struct RejectedLog {
    storage: Arc<dyn Storage>,
    manifest: RejectedManifest,
    held: Option<Version>,
    pending: Vec<u8>,
    pending_records: u64,
    /// When the oldest record not yet in a chunk was appended.
    pending_since: Option<Instant>,
}

impl RejectedLog {
    /// Opens the log of a partition being taken up, keeping what `keep` says.
    pub fn open(
        storage: Arc<dyn Storage>,
        topic: &str,
        partition: i32,
        keep: Keep,
    ) -> Result<Self> {
        let key = layout::rejected_manifest(topic, partition);
        let (mut manifest, held) = match storage.get(&key)? {
            Some(object) => {
                let codec = Error::codec("rejected-log manifest", &key);
                let manifest: RejectedManifest =
                    serde_json::from_slice(&object.bytes).map_err(|e| codec(e.to_string()))?;
                if manifest.version != REJECTED_MANIFEST_VERSION {
                    return Err(Error::codec("rejected-log manifest", &key)(format!(
                        "unknown version {} (expected {REJECTED_MANIFEST_VERSION})",
                        manifest.version
                    )));
                }
                (manifest, Some(object.version))
            }
            None => (
                RejectedManifest {
                    version: REJECTED_MANIFEST_VERSION,
                    topic: topic.to_owned(),
                    partition,
                    chunks: Vec::new(),
                    next_seq: 0,
                },
                None,
            ),
        };
        let before: Vec<String> = manifest.chunks.iter().map(|c| c.key.clone()).collect();
        let legacy_key = layout::legacy_rejected_log(topic, partition);
        let legacy = storage
            .get(&legacy_key)?
            .map(|o| o.bytes)
            .unwrap_or_default();
        let mut log = Self {
            storage: Arc::clone(&storage),
            manifest: RejectedManifest::default(),
            held,
            pending: Vec::new(),
            pending_records: 0,
            pending_since: None,
        };
        match keep {
            Keep::Chunks {
                chunks: n,
                replay_from,
            } => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if manifest.chunks.len() < n {
                    return Err(Error::codec("rejected-log manifest", &key)(format!(
                        "lists {} chunks but the checkpoint covers {n}",
                        manifest.chunks.len()
                    )));
                }
                for chunk in &manifest.chunks[n..] {
                    if let Some(object) = storage.get(&chunk.key)? {
                        log.buffer_lines(&object.bytes, |r| r.offset < replay_from);
                    }
                }
                manifest.chunks.truncate(n);
            }
            Keep::LegacyBytes(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if legacy.len() < n {
                    return Err(Error::codec("rejected log", &legacy_key)(format!(
                        "has {} bytes but the checkpoint covers {n}",
                        legacy.len()
                    )));
                }
                log.buffer_lines(&legacy[..n], |_| true);
            }
            Keep::BelowOffset(offset) => {
                let keep = |r: &RejectedRecord| r.offset < offset;
                for chunk in &manifest.chunks {
                    if let Some(object) = storage.get(&chunk.key)? {
                        log.buffer_lines(&object.bytes, keep);
                    }
                }
                log.buffer_lines(&legacy, keep);
                manifest.chunks.clear();
            }
        }
        log.manifest = manifest;
        // Publish what is kept (the rewritten records become one chunk), then drop the rest.
        log.sync()?;
        log.write_manifest()?;
        let kept: Vec<&str> = log.manifest.chunks.iter().map(|c| c.key.as_str()).collect();
        for stale in before.iter().filter(|k| !kept.contains(&k.as_str())) {
            storage.delete(stale)?;
        }
        // Chunks written after the last manifest (a crash between the two) are nobody's.
        let listed = storage.list(&layout::rejected_chunks(topic, partition))?;
        for orphan in listed.iter().filter(|l| !kept.contains(&l.key.as_str())) {
            storage.delete(&orphan.key)?;
        }
        if !legacy.is_empty() || storage.get(&legacy_key)?.is_some() {
            storage.delete(&legacy_key)?;
        }
        Ok(log)
    }

    /// Buffers the complete lines of `bytes` that parse and pass `keep`.
    fn buffer_lines(&mut self, bytes: &[u8], keep: impl Fn(&RejectedRecord) -> bool) {
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let kept = line.ends_with(b"\n")
                && serde_json::from_slice::<RejectedRecord>(line).is_ok_and(|r| keep(&r));
            if kept {
                self.pending.extend_from_slice(line);
                self.pending_records += 1;
            }
        }
    }

    pub fn append(&mut self, record: &RejectedRecord) {
        if let Ok(mut line) = serde_json::to_vec(record) {
            line.push(b'\n');
            self.pending.extend_from_slice(&line);
            self.pending_records += 1;
            self.pending_since.get_or_insert_with(Instant::now);
        }
    }

    /// Writes the pending records as a chunk once the oldest has waited `after`, so rejections
    /// are listed within about that long without a chunk per poll batch.
    pub fn sync_if_due(&mut self, after: Duration) -> Result<()> {
        if self
            .pending_since
            .is_some_and(|since| since.elapsed() >= after)
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes what was appended since the last sync as one chunk and lists it in the manifest;
    /// returns the number of chunks, which the checkpoint records.
    pub fn sync(&mut self) -> Result<u64> {
        if !self.pending.is_empty() {
            let key = loop {
                let seq = self.manifest.next_seq;
                self.manifest.next_seq += 1;
                let key =
                    layout::rejected_chunk(&self.manifest.topic, self.manifest.partition, seq);
                if put_over(self.storage.as_ref(), &key, &self.pending, None)?.is_some() {
                    break key;
                }
                // A chunk left by a crash before its manifest: take the next number.
            };
            self.manifest.chunks.push(RejectedChunk {
                key,
                records: self.pending_records,
                bytes: self.pending.len() as u64,
            });
            self.write_manifest()?;
            self.pending.clear();
            self.pending_records = 0;
        }
        self.pending_since = None;
        Ok(self.manifest.chunks.len() as u64)
    }

    fn write_manifest(&mut self) -> Result<()> {
        let key = layout::rejected_manifest(&self.manifest.topic, self.manifest.partition);
        let json = serde_json::to_vec(&self.manifest).map_err(|e| Error::Encode {
            what: "rejected-log manifest",
            reason: e.to_string(),
        })?;
        let version = put_over(self.storage.as_ref(), &key, &json, self.held.as_ref())?
            .ok_or(Error::Conflict { key })?;
        self.held = Some(version);
        Ok(())
    }
}

/// Reads the rejected records of one topic's partitions, oldest first per partition, from the
/// manifests and the chunks they list.
pub fn read_rejected(storage: &dyn Storage, topic: &str) -> Result<Vec<RejectedRecord>> {
    let prefix = layout::rejected_manifests(topic);
    let mut records = Vec::new();
    for listed in storage.list(&prefix)? {
        let name = &listed.key[prefix.len()..];
        if name.contains('/') || !name.ends_with(".json") {
            continue;
        }
        let Some(object) = storage.get(&listed.key)? else {
            continue;
        };
        let manifest: RejectedManifest = serde_json::from_slice(&object.bytes)
            .map_err(|e| Error::codec("rejected-log manifest", &listed.key)(e.to_string()))?;
        for chunk in &manifest.chunks {
            let Some(object) = storage.get(&chunk.key)? else {
                continue;
            };
            records.extend(
                object
                    .bytes
                    .split(|&b| b == b'\n')
                    .filter(|line| !line.is_empty())
                    .filter_map(|line| serde_json::from_slice::<RejectedRecord>(line).ok()),
            );
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;
    use braid_shared::RejectReason;

    fn record(offset: i64) -> RejectedRecord {
        RejectedRecord {
            source: "s".into(),
            topic: "t".into(),
            partition: 0,
            offset,
            reason: RejectReason::NotJson {
                message: "x".into(),
            },
            raw: "x".into(),
            raw_bytes: 1,
            rejected_at_ms: 0,
        }
    }

    fn offsets(storage: &dyn Storage) -> Vec<i64> {
        read_rejected(storage, "t")
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect()
    }

    #[test]
    fn a_restore_keeps_exactly_what_the_checkpoint_covers() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        let keep = |chunks, replay_from| Keep::Chunks {
            chunks,
            replay_from,
        };
        let mut log = RejectedLog::open(Arc::clone(&storage), "t", 0, keep(0, 0)).unwrap();
        log.append(&record(1));
        log.append(&record(2));
        assert_eq!(log.sync().unwrap(), 1);
        assert_eq!(log.sync().unwrap(), 1, "nothing new, no chunk");
        log.append(&record(5));
        assert_eq!(log.sync().unwrap(), 2);
        log.append(&record(7));
        drop(log); // crash: offset 7 was never synced
        assert_eq!(offsets(storage.as_ref()), [1, 2, 5]);

        // The checkpoint covered one chunk: offset 5 is replayed and must not appear twice.
        let mut log = RejectedLog::open(Arc::clone(&storage), "t", 0, keep(1, 3)).unwrap();
        assert_eq!(offsets(storage.as_ref()), [1, 2]);
        log.append(&record(5));
        assert_eq!(log.sync().unwrap(), 2);
        assert_eq!(offsets(storage.as_ref()), [1, 2, 5]);

        // The batch coverage passed the checkpoint: the replay starts at 6, so offset 5 stays.
        let mut log = RejectedLog::open(Arc::clone(&storage), "t", 0, keep(1, 6)).unwrap();
        assert_eq!(offsets(storage.as_ref()), [1, 2, 5]);
        log.append(&record(6));
        log.sync().unwrap();
        assert_eq!(offsets(storage.as_ref()), [1, 2, 5, 6]);

        // Rebuilt from offset 2: only offset 1 stays, and no chunk file is left unlisted.
        RejectedLog::open(Arc::clone(&storage), "t", 0, Keep::BelowOffset(2)).unwrap();
        assert_eq!(offsets(storage.as_ref()), [1]);
        assert_eq!(
            storage
                .list(&layout::rejected_chunks("t", 0))
                .unwrap()
                .len(),
            1
        );

        // A checkpoint that covers more than the manifest lists is a clear error.
        let error = RejectedLog::open(Arc::clone(&storage), "t", 0, keep(9, 0))
            .err()
            .unwrap();
        assert!(error.to_string().contains("covers 9"), "{error}");
    }

    #[test]
    fn the_single_file_log_of_older_versions_becomes_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        let mut legacy = Vec::new();
        for offset in [3, 4] {
            legacy.extend(serde_json::to_vec(&record(offset)).unwrap());
            legacy.push(b'\n');
        }
        let covered = legacy.len() as u64;
        legacy.extend(b"{\"torn");
        storage
            .put_if_absent(&layout::legacy_rejected_log("t", 0), &legacy)
            .unwrap();
        let mut log =
            RejectedLog::open(Arc::clone(&storage), "t", 0, Keep::LegacyBytes(covered)).unwrap();
        assert_eq!(log.sync().unwrap(), 1);
        assert_eq!(offsets(storage.as_ref()), [3, 4]);
        assert!(
            storage
                .get(&layout::legacy_rejected_log("t", 0))
                .unwrap()
                .is_none()
        );
    }
}
