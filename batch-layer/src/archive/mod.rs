//! The archiver: its own consumer group reads every source topic and appends each partition's
//! messages to the master dataset, a range of offsets at a time. The per-partition manifest
//! decides where a partition resumes (Kafka's committed offsets are advisory), so a restart,
//! also after kill -9, continues exactly after the last published offset.
//!
//! - `plan`: which sources decode each topic.
//! - `partition`: a partition's buffer and its flush (files, then the manifest entry).
//! - `rebalance`: take-up (orphan clean-up, seek) and release (flush) of partitions.
//! - `compact`: merging runs of small files, and removing retired ones.

mod compact;
mod partition;
mod plan;
mod rebalance;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use braid_shared::{Config, TopicPartition};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::files::now_ms;

pub(crate) use partition::PartitionBuffer;
pub(crate) use plan::{Plan, TopicPlan, check_field_names};
use rebalance::ArchiveContext;

const POLL_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_POLL_BATCH: usize = 10_000;
/// How long a file replaced by compaction stays readable for runs that listed it before.
pub const RETIRED_GRACE: Duration = Duration::from_secs(3600);
const RETIRE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

struct Settings {
    flush_interval: Duration,
    flush_rows: usize,
    compact_files: usize,
}

pub(crate) struct Shared {
    plan: Plan,
    dir: PathBuf,
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
    thread: JoinHandle<Result<()>>,
}

impl Archiver {
    /// Starts archiving on a dedicated thread until `cancel` fires.
    pub fn start(config: &Config, cancel: CancellationToken) -> Result<Self> {
        let shared = Arc::new(Shared {
            plan: Plan::new(config)?,
            dir: config.storage.dir.clone(),
            partitions: Mutex::new(BTreeMap::new()),
            archived: RwLock::new(BTreeMap::new()),
            lag: RwLock::new(BTreeMap::new()),
        });
        let context = ArchiveContext {
            shared: Arc::clone(&shared),
            fatal: Mutex::new(None),
        };
        let consumer: BaseConsumer<ArchiveContext> =
            client_config(config).create_with_context(context)?;
        let topics = config.topics();
        consumer.subscribe(&topics)?;
        let group = archive_group(config);
        tracing::info!(brokers = %config.kafka.brokers, %group, ?topics, "archiver subscribed");
        let settings = Settings {
            flush_interval: config.batch.flush_interval.0,
            flush_rows: config.batch.flush_rows,
            compact_files: config.batch.compact_files,
        };
        let thread = std::thread::Builder::new()
            .name("braid-archive".to_owned())
            .spawn(move || run(consumer, settings, cancel))
            .map_err(Error::io("spawning the archive thread"))?;
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
        self.thread
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("the archive thread panicked".to_owned())))
    }
}

/// Which sources decode each topic (for writing archive ranges without a consumer).
pub(crate) fn archive_plan(config: &Config) -> Result<Plan> {
    Plan::new(config)
}

/// The archiver's consumer group: the configured group with an `-archive` suffix, so it reads
/// every partition independently of the speed layer.
pub fn archive_group(config: &Config) -> String {
    format!("{}-archive", config.kafka.group_id)
}

fn client_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in config.kafka.consumer_settings(&archive_group(config)) {
        client.set(key, value);
    }
    client
}

fn run(
    consumer: BaseConsumer<ArchiveContext>,
    settings: Settings,
    cancel: CancellationToken,
) -> Result<()> {
    let shared = Arc::clone(&consumer.context().shared);
    let mut last_retire_check = Instant::now();
    let result = loop {
        if cancel.is_cancelled() {
            break Ok(());
        }
        if let Some(error) = consumer
            .context()
            .fatal
            .lock()
            .ok()
            .and_then(|mut f| f.take())
        {
            break Err(error);
        }
        poll_batch(&consumer, &shared);
        let retire = last_retire_check.elapsed() >= RETIRE_CHECK_INTERVAL;
        if retire {
            last_retire_check = Instant::now();
        }
        match flush_due(&consumer, &shared, &settings, false, retire) {
            Ok(()) => {}
            Err(error) => break Err(error),
        }
    };
    let flushed = match &result {
        Ok(()) => flush_due(&consumer, &shared, &settings, true, false),
        Err(_) => Ok(()),
    };
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared.partitions.lock().is_ok_and(|p| !p.is_empty()) && Instant::now() < deadline {
        let _ = consumer.poll(POLL_TIMEOUT);
    }
    drop(consumer);
    match &result {
        Ok(()) => tracing::info!("archiver stopped"),
        Err(error) => tracing::error!(%error, "archiver failed"),
    }
    result.and(flushed)
}

/// Polls up to a batch of messages (waiting only for the first) into the partition buffers.
fn poll_batch(consumer: &BaseConsumer<ArchiveContext>, shared: &Shared) {
    let mut timeout = POLL_TIMEOUT;
    let mut held = Vec::new();
    for _ in 0..MAX_POLL_BATCH {
        match consumer.poll(timeout) {
            None => break,
            Some(Err(error)) => {
                tracing::warn!(%error, "kafka consumer error");
                break;
            }
            Some(Ok(message)) => {
                held.push(message);
                timeout = Duration::ZERO;
            }
        }
    }
    if held.is_empty() {
        return;
    }
    let ingest_ms = now_ms();
    let Ok(mut partitions) = shared.partitions.lock() else {
        return;
    };
    for message in &held {
        let tp = TopicPartition::new(message.topic(), message.partition());
        // A partition revoked while the batch was collected is skipped: its next owner
        // continues from the manifest.
        let (Some(buffer), Some(plan)) = (partitions.get_mut(&tp), shared.plan.topic(&tp.topic))
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
}

/// Flushes the partitions whose buffer is big or old enough (all of them when `all`), compacts
/// after each flush, and removes retired files past their grace period when `retire`.
fn flush_due(
    consumer: &BaseConsumer<ArchiveContext>,
    shared: &Shared,
    settings: &Settings,
    all: bool,
    retire: bool,
) -> Result<()> {
    let Ok(mut partitions) = shared.partitions.lock() else {
        return Err(Error::Internal(
            "archive partitions lock poisoned".to_owned(),
        ));
    };
    let mut offsets = TopicPartitionList::new();
    for (tp, buffer) in partitions.iter_mut() {
        let due = buffer.messages > 0
            && (all
                || buffer.messages >= settings.flush_rows
                || buffer
                    .since
                    .is_some_and(|s| s.elapsed() >= settings.flush_interval));
        let Some(plan) = shared.plan.topic(&tp.topic) else {
            continue;
        };
        if due {
            buffer.flush(&shared.dir, plan)?;
            compact::compact(
                &shared.dir,
                &mut buffer.manifest,
                settings.compact_files,
                settings.flush_rows,
            )?;
            shared.publish_end(tp, buffer.manifest.end());
            if let Some(end) = buffer.manifest.end() {
                offsets.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(end))?;
            }
        }
        if retire {
            compact::remove_retired(&shared.dir, &mut buffer.manifest, RETIRED_GRACE)?;
        }
    }
    // Advisory, for lag tools: the manifest decides where a partition resumes.
    if offsets.count() > 0
        && let Err(error) = consumer.commit(&offsets, CommitMode::Async)
    {
        tracing::debug!(%error, "advisory offset commit failed");
    }
    Ok(())
}
