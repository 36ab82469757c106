//! One partition's buffer of read messages, and its flush: Parquet files per source and event
//! date, then a new manifest entry. The manifest write is the commit point: files not in the
//! manifest are orphans, removed when the partition is next taken up.

use std::collections::BTreeMap;
use std::time::Instant;

use braid_shared::RejectedRecord;
use braid_shared::{Event, RejectReason, TopicPartition};
use braid_store::Storage;
use braid_store::manifest::{ArchiveEntry, ArchiveFile, FileKind, PartitionManifest};
use polars::prelude::*;

use crate::error::Result;
use crate::files::{create_all, now_ms, parquet_bytes};
use crate::metrics;
use braid_columnar::columns::{ArchiveRow, INGEST_TIME, OFFSET, PARTITION};
use braid_shared::plan::TopicPlan;

pub(crate) struct Archived {
    pub offset: i64,
    pub ingest_ms: i64,
    pub event: Event,
    /// The message as read: the archive keeps every field of every event.
    pub message: Box<[u8]>,
}

pub(crate) struct Rejected {
    pub offset: i64,
    pub ingest_ms: i64,
    pub reason: RejectReason,
    pub raw: String,
    pub raw_bytes: usize,
}

/// Buffered rows of one source.
#[derive(Default)]
pub(crate) struct SourceRows {
    pub events: Vec<Archived>,
    pub rejected: Vec<Rejected>,
}

pub(crate) struct PartitionBuffer {
    pub tp: TopicPartition,
    pub manifest: PartitionManifest,
    /// Next offset expected; everything below it is archived or buffered. `None` until the
    /// first message of an empty archive arrives.
    pub next: Option<i64>,
    /// Per source of the topic (same order as the plan).
    pub sources: Vec<SourceRows>,
    pub messages: usize,
    pub since: Option<Instant>,
    /// The first offset read, while the archive of the partition is still empty.
    first: Option<i64>,
}

impl PartitionBuffer {
    pub fn new(manifest: PartitionManifest, sources: usize) -> Self {
        Self {
            tp: manifest.topic_partition(),
            next: manifest.end(),
            manifest,
            sources: (0..sources).map(|_| SourceRows::default()).collect(),
            messages: 0,
            since: None,
            first: None,
        }
    }

    /// First buffered offset: where the archive ends.
    fn from(&self) -> Option<i64> {
        self.manifest.end()
    }

    /// Takes one message: decoded by every source of the topic. Messages below the next
    /// expected offset (re-delivered after a seek) are ignored.
    pub fn push(&mut self, plan: &TopicPlan, offset: i64, payload: &[u8], ingest_ms: i64) {
        if self.next.is_some_and(|next| offset < next) {
            return;
        }
        for (source, rows) in plan.sources.iter().zip(&mut self.sources) {
            match source.decoder.decode(payload) {
                Ok(event) => rows.events.push(Archived {
                    offset,
                    ingest_ms,
                    event,
                    message: payload.into(),
                }),
                Err(reason) => rows.rejected.push(Rejected {
                    offset,
                    ingest_ms,
                    reason,
                    raw: RejectedRecord::bounded_raw(payload),
                    raw_bytes: payload.len(),
                }),
            }
        }
        if self.messages == 0 {
            self.since = Some(Instant::now());
            if self.manifest.entries.is_empty() {
                tracing::info!(partition = %self.tp, offset, "archive of this partition starts");
                self.first = Some(offset);
            }
        }
        self.messages += 1;
        self.next = Some(offset + 1);
    }

    /// Writes the buffered range and publishes it in the manifest.
    /// `token` names this writer in the files' names.
    pub fn flush(&mut self, storage: &dyn Storage, token: &str, plan: &TopicPlan) -> Result<()> {
        if self.messages == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let (Some(from), Some(to)) = (self.from().or(self.first), self.next) else {
            return Ok(());
        };
        let name = file_name(&self.tp, from, to, token);
        let mut files = Vec::new();
        let mut written: Vec<(String, Vec<u8>)> = Vec::new();
        for (source, rows) in plan.sources.iter().zip(&self.sources) {
            let mut by_date: BTreeMap<String, Vec<&Archived>> = BTreeMap::new();
            for row in &rows.events {
                by_date
                    .entry(date_of(row.event.time_ms))
                    .or_default()
                    .push(row);
            }
            let mut source_files = 0;
            for (date, events) in by_date {
                let rel = format!("archive/source={}/date={date}/{name}", source.def.name);
                let mut df = events_frame(source, self.tp.partition, &events)?;
                let bytes = parquet_bytes(&mut df)?;
                let times = events.iter().map(|e| e.event.time_ms);
                let range = (times.clone().min().unwrap_or(0), times.max().unwrap_or(0));
                files.push(ArchiveFile {
                    source: source.def.name.clone(),
                    kind: FileKind::Events,
                    path: rel.clone(),
                    rows: events.len() as u64,
                    bytes: bytes.len() as u64,
                    time_range_ms: Some(range),
                });
                written.push((rel, bytes));
                source_files += 1;
            }
            if !rows.rejected.is_empty() {
                let rel = format!("archive/rejected/source={}/{name}", source.def.name);
                let mut df = rejected_frame(&self.tp, &rows.rejected)?;
                let bytes = parquet_bytes(&mut df)?;
                files.push(ArchiveFile {
                    source: source.def.name.clone(),
                    kind: FileKind::Rejected,
                    path: rel.clone(),
                    rows: rows.rejected.len() as u64,
                    bytes: bytes.len() as u64,
                    time_range_ms: None,
                });
                written.push((rel, bytes));
                source_files += 1;
            }
            metrics::archived(
                &source.def.name,
                source_files,
                rows.events.len() as u64,
                rows.rejected.len() as u64,
            );
        }
        let bytes: u64 = files.iter().map(|f| f.bytes).sum();
        publish_with_files(storage, &mut self.manifest, &written, |manifest| {
            manifest.entries.push(ArchiveEntry {
                from,
                to,
                files,
                written_at_ms: now_ms(),
            });
        })?;
        tracing::debug!(partition = %self.tp, from, to, messages = self.messages, "archived");
        for rows in &mut self.sources {
            rows.events.clear();
            rows.rejected.clear();
        }
        self.messages = 0;
        self.since = None;
        self.first = None;
        metrics::flushed(started.elapsed().as_secs_f64(), bytes);
        Ok(())
    }
}

/// Creates `files`, then publishes `manifest` with `change` made to it, over the version it
/// holds. When that fails the manifest is left as it was; when another writer's manifest
/// refused it (a conflict: certainly not published) the files are deleted. After any other
/// failure the manifest may have been stored all the same (a remote store that timed out), so
/// they stay; the next take-up removes them if no manifest lists them.
pub(crate) fn publish_with_files(
    storage: &dyn Storage,
    manifest: &mut PartitionManifest,
    files: &[(String, Vec<u8>)],
    change: impl FnOnce(&mut PartitionManifest),
) -> Result<()> {
    create_all(storage, files)?;
    let previous = manifest.clone();
    change(manifest);
    if let Err(error) = manifest.publish(storage) {
        *manifest = previous;
        if matches!(error, braid_store::Error::Conflict { .. }) {
            for (key, _) in files {
                let _ = storage.delete(key);
            }
        }
        return Err(error.into());
    }
    Ok(())
}

/// The name of the files holding offsets `[from, to)` of a partition, written by the writer
/// `token`. `~` cannot appear in a topic name, so the partition's files are told apart from
/// every other topic's.
pub(crate) fn file_name(tp: &TopicPartition, from: i64, to: i64, token: &str) -> String {
    format!(
        "{}~{}~{from:020}~{to:020}~{token}.parquet",
        tp.topic, tp.partition
    )
}

/// Whether an archive file name belongs to a partition.
pub(crate) fn belongs_to(name: &str, tp: &TopicPartition) -> bool {
    let bare = name.strip_prefix('.').unwrap_or(name);
    bare.starts_with(&format!("{}~{}~", tp.topic, tp.partition))
}

/// The UTC date of an event time, as the archive's `date=` directory names it.
pub(crate) fn date_of(time_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(time_ms).map_or_else(
        || "invalid".to_owned(),
        |t| t.format("%Y-%m-%d").to_string(),
    )
}

fn events_frame(
    source: &braid_shared::plan::SourcePlan,
    partition: i32,
    events: &[&Archived],
) -> Result<DataFrame> {
    let rows: Vec<ArchiveRow<'_>> = events
        .iter()
        .map(|e| ArchiveRow {
            offset: e.offset,
            ingest_ms: e.ingest_ms,
            event: &e.event,
            message: &e.message,
        })
        .collect();
    Ok(braid_columnar::columns::events_frame(
        &source.def,
        partition,
        &rows,
    )?)
}

fn rejected_frame(tp: &TopicPartition, rows: &[Rejected]) -> Result<DataFrame> {
    let height = rows.len();
    let columns = vec![
        Column::new("topic".into(), vec![tp.topic.as_str(); height]),
        Column::new(PARTITION.into(), vec![tp.partition; height]),
        Column::new(
            OFFSET.into(),
            rows.iter().map(|r| r.offset).collect::<Vec<_>>(),
        ),
        Column::new(
            INGEST_TIME.into(),
            rows.iter().map(|r| r.ingest_ms).collect::<Vec<_>>(),
        ),
        Column::new(
            "reason".into(),
            rows.iter().map(|r| r.reason.code()).collect::<Vec<_>>(),
        ),
        Column::new(
            "detail".into(),
            rows.iter()
                .map(|r| serde_json::to_string(&r.reason).unwrap_or_default())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "raw".into(),
            rows.iter().map(|r| r.raw.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "raw_bytes".into(),
            rows.iter().map(|r| r.raw_bytes as u64).collect::<Vec<_>>(),
        ),
    ];
    Ok(DataFrame::new(height, columns)?)
}

#[cfg(test)]
mod tests {
    use braid_store::{LocalStorage, ObjectStorage};
    use braid_testkit::moto::Moto;

    use super::*;

    /// A paused archiver (a zombie) whose partition went to a successor cannot publish over
    /// the successor's manifest when it resumes, and takes back the files it wrote.
    fn zombie_is_fenced(storage: &dyn Storage) {
        let dir = tempfile::tempdir().unwrap();
        let (_, config) = braid_testkit::config("127.0.0.1:9092", "pay", "g", dir.path(), "");
        let plan = crate::archive::archive_plan(&config).unwrap();
        let topic = plan.topic("pay").unwrap();
        let messages = braid_testkit::payments(1, 40, 1);
        let push = |buffer: &mut PartitionBuffer, range: std::ops::Range<usize>| {
            for i in range {
                buffer.push(topic, i as i64, &messages[i].payload, 0);
            }
        };

        let mut zombie = PartitionBuffer::new(PartitionManifest::new("pay", 0), 1);
        push(&mut zombie, 0..20);
        zombie.flush(storage, "zombie", topic).unwrap();
        // The partition is reassigned while the zombie is paused.
        let taken = PartitionManifest::read(storage, "pay", 0).unwrap().unwrap();
        let mut successor = PartitionBuffer::new(taken, 1);
        push(&mut successor, 20..40);
        successor.flush(storage, "successor", topic).unwrap();
        // The zombie resumes with what it had read meanwhile: refused.
        push(&mut zombie, 20..30);
        let refused = zombie.flush(storage, "zombie", topic);
        assert!(
            matches!(
                refused,
                Err(crate::Error::Store(braid_store::Error::Conflict { .. }))
            ),
            "{refused:?}"
        );

        let stored = PartitionManifest::read(storage, "pay", 0).unwrap().unwrap();
        let ranges: Vec<(i64, i64)> = stored.entries.iter().map(|e| (e.from, e.to)).collect();
        assert_eq!(ranges, [(0, 20), (20, 40)]);
        let listed: Vec<&str> = stored
            .entries
            .iter()
            .flat_map(|e| &e.files)
            .map(|f| f.path.as_str())
            .collect();
        let keys: Vec<String> = storage
            .list("archive/")
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .filter(|k| k.ends_with(".parquet"))
            .collect();
        // Every file in storage is one the manifest lists: the zombie's refused range is gone.
        assert_eq!(keys.len(), listed.len(), "{keys:?}");
        assert!(
            keys.iter().all(|k| listed.contains(&k.as_str())),
            "{keys:?}"
        );
        for (entry, writer) in stored.entries.iter().zip(["~zombie.", "~successor."]) {
            assert!(
                entry.files.iter().all(|f| f.path.contains(writer)),
                "{entry:?}"
            );
        }
    }

    #[test]
    fn a_zombie_archiver_is_fenced_in_a_local_directory() {
        let dir = tempfile::tempdir().unwrap();
        zombie_is_fenced(&LocalStorage::new(dir.path()));
    }

    #[test]
    fn a_zombie_archiver_is_fenced_in_an_s3_bucket() {
        let moto = Moto::start();
        let bucket = braid_testkit::unique("braid").to_lowercase();
        moto.create_bucket(&bucket);
        let options = moto.options();
        let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
        zombie_is_fenced(&ObjectStorage::new(&format!("s3://{bucket}/zombie"), &options).unwrap());
    }
}
