//! The archiver: its own consumer group reads every source topic and appends each partition's
//! messages to the master dataset, a range of offsets at a time. The per-partition manifest
//! decides where a partition resumes (Kafka's committed offsets are advisory), so a restart,
//! also after kill -9, continues exactly after the last published offset.
//!
//! - `plan`: the archive's own check of the sources' field names.
//! - `partition`: a partition's buffer and its flush (files, then the manifest entry).
//! - `rebalance`: take-up (orphan clean-up, seek) and release (flush) of partitions.
//! - `compact`: merging runs of small files, and removing retired ones.
//! - `writer`: [`ArchiveWriter`], the archiver's writes without a broker (benchmarks).

mod compact;
mod partition;
mod plan;
mod rebalance;
mod writer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use braid_kafka::{BorrowedMessage, Commit, ConsumerThread, Message as _};
use braid_shared::plan::Plan;
use braid_shared::{Config, TopicPartition};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::files::now_ms;

pub(crate) use partition::PartitionBuffer;
pub(crate) use plan::check_field_names;
use rebalance::ArchivePartitions;
pub use writer::ArchiveWriter;

const MAX_POLL_BATCH: usize = 10_000;
/// How long a file replaced by compaction stays readable for runs that listed it before.
pub const RETIRED_GRACE: Duration = Duration::from_secs(3600);
const RETIRE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) struct Shared {
    plan: Plan,
    storage: Arc<dyn braid_store::Storage>,
    /// Names this writer in its files' names (see [`partition::file_name`]).
    token: String,
    /// Only the consumer thread (poll loop and rebalance callbacks) takes this lock.
    partitions: Mutex<BTreeMap<TopicPartition, PartitionBuffer>>,
    /// Published archive end per partition held, for readers.
    archived: RwLock<BTreeMap<TopicPartition, i64>>,
    lag: RwLock<BTreeMap<TopicPartition, i64>>,
}

impl Shared {
    fn publish_end(&self, tp: &TopicPartition, end: Option<i64>) {
        if let Ok(mut archived) = self.archived.write() {
            match end {
                Some(end) => archived.insert(tp.clone(), end),
                None => archived.remove(tp),
            };
        }
    }
}

/// What a running archiver reports.
#[derive(Clone)]
pub struct ArchiveHandle {
    shared: Arc<Shared>,
}

impl ArchiveHandle {
    /// Per partition held, the offset below which everything is archived.
    pub fn archived(&self) -> BTreeMap<TopicPartition, i64> {
        self.shared
            .archived
            .read()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Per partition held, messages on the broker not yet archived (from librdkafka statistics).
    pub fn lag(&self) -> BTreeMap<TopicPartition, i64> {
        self.shared
            .lag
            .read()
            .map(|l| l.clone())
            .unwrap_or_default()
    }
}

/// A running archiver.
pub struct Archiver {
    handle: ArchiveHandle,
    thread: ConsumerThread<Error>,
}

impl Archiver {
    /// Starts archiving into `storage` on a dedicated thread until `cancel` fires.
    pub fn start(
        config: &Config,
        storage: Arc<dyn braid_store::Storage>,
        cancel: CancellationToken,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            plan: archive_plan(config)?,
            storage,
            token: crate::files::writer_token(),
            partitions: Mutex::new(BTreeMap::new()),
            archived: RwLock::new(BTreeMap::new()),
            lag: RwLock::new(BTreeMap::new()),
        });
        let topics = config.topics();
        let group = archive_group(config);
        let worker = ArchiveWorker {
            shared: Arc::clone(&shared),
            flush_interval: config.batch.flush_interval.0,
            flush_rows: config.batch.flush_rows,
            compact_files: config.batch.compact_files,
            last_retire_check: Instant::now(),
        };
        let assignment =
            braid_kafka::Assignment::for_group(config, Arc::clone(&shared.storage), &group)?;
        let thread = braid_kafka::start(
            "braid-archive",
            braid_kafka::Subscription {
                client: &braid_kafka::client_config(config, &group),
                topics: &topics,
                assignment,
            },
            Arc::new(ArchivePartitions {
                shared: Arc::clone(&shared),
            }),
            worker,
            MAX_POLL_BATCH,
            cancel,
        )?;
        tracing::info!(brokers = %config.kafka.brokers, %group, ?topics, "archiver subscribed");
        Ok(Self {
            handle: ArchiveHandle { shared },
            thread,
        })
    }

    pub fn handle(&self) -> ArchiveHandle {
        self.handle.clone()
    }

    /// Whether the thread has stopped (after cancellation or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the archive thread to stop (after cancellation or a fatal error).
    pub fn join(self) -> Result<()> {
        self.thread.join(Error::Internal)
    }
}

/// Which sources decode each topic (for writing archive ranges without a consumer).
pub(crate) fn archive_plan(config: &Config) -> Result<Plan> {
    for source in &config.sources {
        check_field_names(source)?;
    }
    Ok(Plan::new(config))
}

/// The archiver's consumer group: the configured group with an `-archive` suffix, so it reads
/// every partition independently of the speed layer.
pub fn archive_group(config: &Config) -> String {
    format!("{}-archive", config.kafka.group_id)
}

struct ArchiveWorker {
    shared: Arc<Shared>,
    flush_interval: Duration,
    flush_rows: usize,
    compact_files: usize,
    last_retire_check: Instant,
}

impl braid_kafka::Worker for ArchiveWorker {
    type Partitions = ArchivePartitions;

    /// Buffers a polled batch per partition.
    fn batch(&mut self, held: &[BorrowedMessage<'_>]) -> Result<()> {
        let shared = &self.shared;
        let ingest_ms = now_ms();
        let mut partitions = shared.partitions.lock().map_err(|_| poisoned())?;
        for message in held {
            let tp = TopicPartition::new(message.topic(), message.partition());
            // A partition revoked while the batch was collected is skipped: its next owner
            // continues from the manifest.
            let (Some(buffer), Some(plan)) =
                (partitions.get_mut(&tp), shared.plan.topic(&tp.topic))
            else {
                continue;
            };
            buffer.push(
                plan,
                message.offset(),
                message.payload().unwrap_or_default(),
                ingest_ms,
            );
        }
        Ok(())
    }

    fn plan(&self) -> &braid_shared::plan::Plan {
        &self.shared.plan
    }

    fn tick(&mut self) -> Result<Commit> {
        let retire = self.last_retire_check.elapsed() >= RETIRE_CHECK_INTERVAL;
        if retire {
            self.last_retire_check = Instant::now();
        }
        self.flush_due(false, retire)
    }

    /// Flushes every buffer when the loop was cancelled; after an error nothing more is written.
    fn finish(&mut self, clean: bool) -> Result<Commit> {
        if clean {
            self.flush_due(true, false)
        } else {
            Ok(Commit::new())
        }
    }
}

impl ArchiveWorker {
    /// Flushes the partitions whose buffer is big or old enough (all of them when `all`),
    /// compacts after each flush, and removes retired files past their grace period when
    /// `retire`. Returns the new archive ends, for Kafka.
    fn flush_due(&self, all: bool, retire: bool) -> Result<Commit> {
        let shared = &self.shared;
        let mut partitions = shared.partitions.lock().map_err(|_| poisoned())?;
        let mut commit = Commit::new();
        for (tp, buffer) in partitions.iter_mut() {
            let due = buffer.messages > 0
                && (all
                    || buffer.messages >= self.flush_rows
                    || buffer
                        .since
                        .is_some_and(|s| s.elapsed() >= self.flush_interval));
            let Some(plan) = shared.plan.topic(&tp.topic) else {
                continue;
            };
            if due {
                buffer.flush(shared.storage.as_ref(), &shared.token, plan)?;
                compact::compact(
                    shared.storage.as_ref(),
                    &shared.token,
                    &mut buffer.manifest,
                    self.compact_files,
                    self.flush_rows,
                )?;
                shared.publish_end(tp, buffer.manifest.end());
                if let Some(end) = buffer.manifest.end() {
                    commit.push((tp.clone(), end));
                }
            }
            if retire {
                compact::remove_retired(
                    shared.storage.as_ref(),
                    &mut buffer.manifest,
                    RETIRED_GRACE,
                )?;
            }
        }
        Ok(commit)
    }
}

fn poisoned() -> Error {
    Error::Internal("archive partitions lock poisoned".to_owned())
}
