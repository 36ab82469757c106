//! Where everything lives: the storage keys of every format, relative to the storage root.
//!
//! ```text
//! archive/source=<s>/date=<d>/*.parquet    the master dataset (Hive layout), per source and date
//! archive/rejected/source=<s>/*.parquet   messages the archiver could not read
//! archive/_manifest/<topic>/<p>.json      contiguous offset ranges of a partition and their files
//! batch/CURRENT.json                      SnapshotPointer of the published snapshot
//! batch/snapshots/<run>/                  a snapshot's manifest.json and cell files (<view>.parquet)
//! batch/history/<run>.json                one batch run's record
//! batch/lease.json                        the run lease: which recompute runs, until when
//! speed/checkpoints/<topic>/<p>.ckpt      speed state and next offset of one partition
//! speed/rejected/<topic>/<p>.json         manifest of the chunks of events the speed layer rejected
//! speed/rejected/<topic>/<p>/<n>.jsonl    one chunk: the rejections between two checkpoints
//! fraud/alerts/<topic>/<p>/<offset>.json  one fraud alert, created once (its id is the event's)
//! groups/<group>/members/<member>.json    a live process of a layer's group (`membership`)
//! groups/<group>/partitions/<topic>/<p>.json  the lease of a partition: which member reads it
//! ```
//!
//! Readers start from a manifest (the pointer, an archive or rejected-log manifest) and read
//! only the objects it names; they never list data files.

use std::path::{Path, PathBuf};

pub const ARCHIVE: &str = "archive";
pub const SNAPSHOT_POINTER: &str = "batch/CURRENT.json";
pub const SNAPSHOTS: &str = "batch/snapshots";
pub const HISTORY: &str = "batch/history";
pub const BATCH_LEASE: &str = "batch/lease.json";
pub const FRAUD_ALERTS: &str = "fraud/alerts/";

pub fn fraud_alert(topic: &str, partition: i32, offset: i64) -> String {
    format!("{FRAUD_ALERTS}{topic}/{partition}/{offset:020}.json")
}

pub fn archive_manifests(topic: &str) -> String {
    format!("{ARCHIVE}/_manifest/{topic}/")
}

pub fn archive_manifest(topic: &str, partition: i32) -> String {
    format!("{}{partition}.json", archive_manifests(topic))
}

pub fn snapshot(run_id: &str) -> String {
    format!("{SNAPSHOTS}/{run_id}")
}

pub fn snapshot_manifest(run_id: &str) -> String {
    format!("{SNAPSHOTS}/{run_id}/manifest.json")
}

pub fn history(run_id: &str) -> String {
    format!("{HISTORY}/{run_id}.json")
}

/// Runs requested of a batch instance in another process, until it takes them.
pub const REQUESTS: &str = "batch/requests";

pub fn request(run_id: &str) -> String {
    format!("{REQUESTS}/{run_id}.json")
}

pub fn speed_checkpoint(topic: &str, partition: i32) -> String {
    format!("speed/checkpoints/{topic}/{partition}.ckpt")
}

pub fn rejected_manifests(topic: &str) -> String {
    format!("speed/rejected/{topic}/")
}

pub fn rejected_manifest(topic: &str, partition: i32) -> String {
    format!("speed/rejected/{topic}/{partition}.json")
}

pub fn rejected_chunks(topic: &str, partition: i32) -> String {
    format!("speed/rejected/{topic}/{partition}/")
}

pub fn rejected_chunk(topic: &str, partition: i32, seq: u64) -> String {
    format!("{}{seq:010}.jsonl", rejected_chunks(topic, partition))
}

/// The single-file log older versions appended to; migrated into chunks on take-up.
pub fn legacy_rejected_log(topic: &str, partition: i32) -> String {
    format!("speed/rejected/{topic}/{partition}.jsonl")
}

/// A key's place under a local storage root (for formats written in place, such as Parquet).
pub fn local(root: &Path, key: &str) -> PathBuf {
    key.split('/')
        .fold(root.to_owned(), |path, part| path.join(part))
}
