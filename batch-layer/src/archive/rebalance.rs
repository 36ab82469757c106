//! Partition hand-over for the archiver. On assignment the partition's manifest is read, files
//! of the partition that the manifest does not list (a write cut short by a crash) are removed,
//! and the consumer is positioned at the manifest's end. On revocation the buffer is flushed, so
//! the next owner continues exactly there.

use std::sync::Arc;

use braid_kafka::{Broker, ResumeRecord};
use braid_shared::TopicPartition;
use braid_store::Storage;
use braid_store::layout;
use braid_store::manifest::PartitionManifest;

use super::Shared;
use super::partition::{PartitionBuffer, belongs_to};
use crate::error::{Error, Result};

pub(crate) struct ArchivePartitions {
    pub shared: Arc<Shared>,
}

impl braid_kafka::Partitions for ArchivePartitions {
    type Error = Error;

    fn take_up(&self, tp: &TopicPartition, broker: &Broker<'_>) -> Result<Option<i64>> {
        let shared = &self.shared;
        let plan = shared.plan.assigned(tp)?;
        let storage = shared.storage.as_ref();
        let manifest = PartitionManifest::read(storage, &tp.topic, tp.partition)?
            .unwrap_or_else(|| PartitionManifest::new(&tp.topic, tp.partition));
        if let Some(end) = manifest.end() {
            let (record, path) = self.resume_record(tp);
            broker.check_resume(tp, end, record, &path)?;
        }
        let removed = remove_orphans(storage, tp, &manifest)?;
        let start = manifest.end();
        tracing::info!(partition = %tp, ?start, orphans_removed = removed, "archive partition taken up");
        shared.publish_end(tp, start);
        let buffer = PartitionBuffer::new(manifest, plan.sources.len());
        if let Ok(mut partitions) = shared.partitions.lock() {
            partitions.insert(tp.clone(), buffer);
        }
        Ok(start)
    }

    /// Flushes and forgets a partition.
    fn release(&self, tp: &TopicPartition) -> Result<()> {
        let shared = &self.shared;
        let removed = shared
            .partitions
            .lock()
            .ok()
            .and_then(|mut map| map.remove(tp));
        let (Some(mut buffer), Some(plan)) = (removed, shared.plan.topic(&tp.topic)) else {
            return Ok(());
        };
        let flushed = buffer.flush(shared.storage.as_ref(), &shared.token, plan);
        shared.publish_end(tp, None);
        flushed?;
        tracing::info!(partition = %tp, end = ?buffer.manifest.end(), "archive partition released");
        Ok(())
    }

    /// Forgets a partition another archiver took over: its buffered events are not written
    /// (the new owner archives them from the manifest's end).
    fn forget(&self, tp: &TopicPartition) {
        if let Ok(mut map) = self.shared.partitions.lock() {
            map.remove(tp);
        }
        self.shared.publish_end(tp, None);
    }

    fn held(&self) -> Vec<TopicPartition> {
        self.shared
            .partitions
            .lock()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn resume_record(&self, tp: &TopicPartition) -> (ResumeRecord, std::path::PathBuf) {
        let key = layout::archive_manifest(&tp.topic, tp.partition);
        (
            ResumeRecord::ArchiveManifest,
            self.shared.storage.location(&key),
        )
    }

    /// The archive's end: lag counts what is on the broker and not yet archived.
    fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.shared
            .archived
            .read()
            .ok()
            .and_then(|a| a.get(tp).copied())
    }

    fn record_lag(&self, tp: &TopicPartition, lag: i64) {
        crate::metrics::archive_lag(&tp.topic, tp.partition, lag);
        if let Ok(mut lags) = self.shared.lag.write() {
            lags.insert(tp.clone(), lag);
        }
    }
}

/// Removes the partition's temp files and the files its manifest does not list (published
/// files, and retired ones still within their grace period, stay). Returns how many went.
pub(crate) fn remove_orphans(
    storage: &dyn Storage,
    tp: &TopicPartition,
    manifest: &PartitionManifest,
) -> Result<usize> {
    let listed: std::collections::HashSet<&str> = manifest
        .entries
        .iter()
        .flat_map(|e| e.files.iter().map(|f| f.path.as_str()))
        .chain(manifest.retired.iter().map(|r| r.path.as_str()))
        .collect();
    let manifests = format!("{}/_manifest/", layout::ARCHIVE);
    let mut removed = storage
        .remove_leftovers(
            &format!("{}/", layout::ARCHIVE),
            &format!("{}~{}~", tp.topic, tp.partition),
        )
        .map_err(braid_store::Error::from)?;
    for object in storage
        .list(&format!("{}/", layout::ARCHIVE))
        .map_err(braid_store::Error::from)?
    {
        let name = object.key.rsplit('/').next().unwrap_or_default();
        let orphan = !object.key.starts_with(&manifests)
            && belongs_to(name, tp)
            && name.ends_with(".parquet")
            && !listed.contains(object.key.as_str());
        if orphan {
            storage
                .delete(&object.key)
                .map_err(braid_store::Error::from)?;
            tracing::info!(key = %object.key, "removed an unpublished archive file");
            removed += 1;
        }
    }
    Ok(removed)
}
