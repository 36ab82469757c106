//! Events written into the archive without a broker, exactly as the archiver writes them:
//! decoded by every source of the topic, buffered per partition, flushed as Parquet files and
//! published in the partition manifests. For benchmarks (`braid bench batch`, `bench audit`),
//! which archive millions of generated events in seconds.

use std::sync::Arc;

use braid_shared::Config;
use braid_shared::plan::Plan;
use braid_store::Storage;
use braid_store::manifest::PartitionManifest;

use super::{PartitionBuffer, archive_plan};
use crate::error::{Error, Result};
use crate::files::{now_ms, writer_token};

/// A writer of one topic's partitions into an archive that holds none of them yet.
pub struct ArchiveWriter {
    plan: Plan,
    storage: Arc<dyn Storage>,
    /// Names this writer in its files' names.
    token: String,
    ingest_ms: i64,
    flush_rows: usize,
    buffers: Vec<PartitionBuffer>,
}

impl ArchiveWriter {
    /// A writer of `partitions` partitions of `config`'s first topic into `storage`, flushing
    /// a partition every `batch.flush_rows` events.
    pub fn new(config: &Config, storage: Arc<dyn Storage>, partitions: i32) -> Result<Self> {
        let plan = archive_plan(config)?;
        let topic = plan
            .topics
            .first()
            .ok_or_else(|| Error::Internal("the config has no source to archive".into()))?;
        let buffers = (0..partitions)
            .map(|p| {
                let manifest = PartitionManifest::new(&topic.topic, p);
                PartitionBuffer::new(manifest, topic.sources.len())
            })
            .collect();
        Ok(Self {
            plan,
            storage,
            token: writer_token(),
            ingest_ms: now_ms(),
            flush_rows: config.batch.flush_rows,
            buffers,
        })
    }

    /// Appends `payload` at the next offset of the `partition`-th partition.
    pub fn push(&mut self, partition: usize, payload: &[u8]) -> Result<()> {
        let topic = &self.plan.topics[0];
        let count = self.buffers.len();
        let buffer = self.buffers.get_mut(partition).ok_or_else(|| {
            Error::Internal(format!("partition {partition} of {count} written to"))
        })?;
        let offset = buffer.next.unwrap_or(0);
        buffer.push(topic, offset, payload, self.ingest_ms);
        if buffer.messages >= self.flush_rows {
            buffer.flush(self.storage.as_ref(), &self.token, topic)?;
        }
        Ok(())
    }

    /// Writes and publishes what every partition holds.
    pub fn flush(&mut self) -> Result<()> {
        let topic = &self.plan.topics[0];
        for buffer in &mut self.buffers {
            buffer.flush(self.storage.as_ref(), &self.token, topic)?;
        }
        Ok(())
    }
}
