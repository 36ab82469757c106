//! Partition hand-over for the archiver. On assignment the partition's manifest is read, files
//! of the partition that the manifest does not list (a write cut short by a crash) are removed,
//! and the consumer is positioned at the manifest's end. On revocation the buffer is flushed, so
//! the next owner continues exactly there.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_shared::TopicPartition;
use braid_shared::manifest::PartitionManifest;
use braid_shared::storage::{archive_dir, archive_manifest_path};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::Shared;
use super::partition::{PartitionBuffer, belongs_to};
use crate::error::{Error, Result};
use crate::files::TEMP_SUFFIX;

const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct ArchiveContext {
    pub shared: Arc<Shared>,
    /// A failure inside a rebalance callback, picked up by the poll loop, which stops.
    pub fatal: Mutex<Option<Error>>,
}

impl ClientContext for ArchiveContext {
    /// librdkafka's periodic statistics: archive lag per partition, at no request cost.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let archived = self
            .shared
            .archived
            .read()
            .map(|a| a.clone())
            .unwrap_or_default();
        for (topic, stats) in &statistics.topics {
            for (&partition, p) in &stats.partitions {
                if partition < 0 || p.hi_offset < 0 {
                    continue;
                }
                let tp = TopicPartition::new(topic.clone(), partition);
                let Some(&end) = archived.get(&tp) else {
                    continue;
                };
                let lag = (p.hi_offset - end).max(0);
                crate::metrics::archive_lag(topic, partition, lag);
                if let Ok(mut lags) = self.shared.lag.write() {
                    lags.insert(tp, lag);
                }
            }
        }
    }
}

impl ConsumerContext for ArchiveContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let listed: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, &listed, tpl).and_then(|()| {
                    if cooperative {
                        consumer.incremental_assign(tpl)
                    } else {
                        consumer.assign(tpl)
                    }
                    .map_err(Error::from)
                })
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let released = self.release(&listed);
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                released.and(unassigned.map_err(Error::from))
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; releasing all partitions");
                let all: Vec<TopicPartition> = self
                    .shared
                    .partitions
                    .lock()
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                let released = self.release(&all);
                released.and(consumer.unassign().map_err(Error::from))
            }
        };
        if let Err(error) = outcome {
            tracing::error!(%error, "archive partition hand-over failed");
            if let Ok(mut fatal) = self.fatal.lock() {
                fatal.get_or_insert(error);
            }
        }
    }
}

impl ArchiveContext {
    fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        wanted: &[TopicPartition],
        tpl: &mut TopicPartitionList,
    ) -> Result<()> {
        let shared = &self.shared;
        for tp in wanted {
            let plan = shared.plan.topic(&tp.topic).ok_or_else(|| {
                Error::Internal(format!("assigned {tp}, a topic no source reads"))
            })?;
            let path = archive_manifest_path(&shared.dir, &tp.topic, tp.partition);
            let manifest = PartitionManifest::read(&path)?
                .unwrap_or_else(|| PartitionManifest::new(&tp.topic, tp.partition));
            if let Some(end) = manifest.end() {
                let (_, high) =
                    consumer.fetch_watermarks(&tp.topic, tp.partition, WATERMARK_TIMEOUT)?;
                if high < end {
                    return Err(Error::OffsetsBehindArchive {
                        tp: tp.clone(),
                        high_watermark: high,
                        archived: end,
                        path,
                    });
                }
            }
            let removed = remove_orphans(&shared.dir, tp, &manifest)?;
            let start = manifest.end();
            tracing::info!(partition = %tp, ?start, orphans_removed = removed, "archive partition assigned");
            tpl.set_partition_offset(
                &tp.topic,
                tp.partition,
                start.map_or(Offset::Beginning, Offset::Offset),
            )?;
            shared.publish_end(tp, start);
            let buffer = PartitionBuffer::new(manifest, plan.sources.len());
            if let Ok(mut partitions) = shared.partitions.lock() {
                partitions.insert(tp.clone(), buffer);
            }
        }
        Ok(())
    }

    /// Flushes and forgets partitions.
    fn release(&self, partitions: &[TopicPartition]) -> Result<()> {
        let shared = &self.shared;
        let mut result = Ok(());
        for tp in partitions {
            let removed = shared
                .partitions
                .lock()
                .ok()
                .and_then(|mut map| map.remove(tp));
            let (Some(mut buffer), Some(plan)) = (removed, shared.plan.topic(&tp.topic)) else {
                continue;
            };
            match buffer.flush(&shared.dir, plan) {
                Ok(()) => {
                    tracing::info!(partition = %tp, end = ?buffer.manifest.end(), "archive partition released");
                }
                Err(error) => result = result.and(Err(error)),
            }
            shared.publish_end(tp, None);
        }
        result
    }
}

/// Removes the partition's temp files and the files its manifest does not list (published
/// files, and retired ones still within their grace period, stay). Returns how many went.
pub(crate) fn remove_orphans(
    dir: &Path,
    tp: &TopicPartition,
    manifest: &PartitionManifest,
) -> Result<usize> {
    let listed: std::collections::HashSet<std::path::PathBuf> = manifest
        .entries
        .iter()
        .flat_map(|e| e.files.iter().map(|f| dir.join(&f.path)))
        .chain(manifest.retired.iter().map(|r| dir.join(&r.path)))
        .collect();
    let mut removed = 0;
    let mut stack = vec![archive_dir(dir)];
    while let Some(current) = stack.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&current)(e)),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if entry.file_name() != "_manifest" {
                    stack.push(path);
                }
                continue;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if !belongs_to(name, tp) {
                continue;
            }
            let orphan = (name.starts_with('.') && name.ends_with(TEMP_SUFFIX))
                || (name.ends_with(".parquet") && !listed.contains(&path));
            if orphan {
                std::fs::remove_file(&path).map_err(Error::io(&path))?;
                tracing::info!(path = %path.display(), "removed an unpublished archive file");
                removed += 1;
            }
        }
    }
    Ok(removed)
}
