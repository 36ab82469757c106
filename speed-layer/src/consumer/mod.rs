//! The consumer loop: one thread owns the Kafka consumer, polls messages in batches, applies each
//! batch to the views of its topic, checkpoints on a schedule, and follows published batch
//! coverage.
//!
//! `rebalance`: partition hand-over (restore and seek on assign, checkpoint on revoke).

mod rebalance;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use braid_shared::storage::read_snapshot_pointer;
use braid_shared::{Config, Coverage, TopicPartition};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::metrics;
use crate::plan::Plan;
use crate::state::{Message, Shared, SpeedHandle};

use rebalance::SpeedContext;

const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often published coverage, lag and cell gauges are refreshed.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(500);

/// A running speed layer.
pub struct SpeedLayer {
    handle: SpeedHandle,
    thread: JoinHandle<Result<()>>,
}

impl SpeedLayer {
    /// Starts consuming on a dedicated thread until `cancel` fires.
    pub fn start(config: &Config, cancel: CancellationToken) -> Result<Self> {
        let segment_size = i64::try_from(config.speed.segment_size).unwrap_or(i64::MAX);
        let storage_dir = config.storage.dir.clone();
        let coverage = read_coverage(&storage_dir, segment_size)?;
        let shared = Arc::new(Shared {
            plan: Plan::new(config),
            storage_dir,
            segment_size,
            partitions: RwLock::new(BTreeMap::new()),
            coverage: RwLock::new(coverage),
            lag: RwLock::new(BTreeMap::new()),
        });
        let context = SpeedContext {
            shared: Arc::clone(&shared),
            fatal: Mutex::new(None),
        };
        let consumer: BaseConsumer<SpeedContext> =
            client_config(config).create_with_context(context)?;
        let topics = config.topics();
        consumer.subscribe(&topics)?;
        tracing::info!(brokers = %config.kafka.brokers, group = %config.kafka.group_id, ?topics, "speed layer subscribed");
        let settings = Settings {
            max_batch: config.speed.max_batch,
            checkpoint_interval: config.speed.checkpoint_interval.0,
            checkpoint_events: config.speed.checkpoint_events,
        };
        let thread = std::thread::Builder::new()
            .name("braid-speed".to_owned())
            .spawn(move || run(consumer, settings, cancel))
            .map_err(Error::io("spawning the speed thread"))?;
        Ok(Self {
            handle: SpeedHandle { shared },
            thread,
        })
    }

    pub fn handle(&self) -> SpeedHandle {
        self.handle.clone()
    }

    /// Whether the thread has stopped (after cancellation or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the consumer thread to stop (after cancellation or a fatal error).
    pub fn join(self) -> Result<()> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("the speed thread panicked".to_owned())))
    }
}

/// The consumer's librdkafka settings (see `KafkaConfig::consumer_settings`).
fn client_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in config.kafka.consumer_settings(&config.kafka.group_id) {
        client.set(key, value);
    }
    client
}

fn read_coverage(dir: &std::path::Path, segment_size: i64) -> Result<Coverage> {
    let coverage = read_snapshot_pointer(dir)?
        .map(|p| p.coverage)
        .unwrap_or_default();
    coverage.check_aligned(u64::try_from(segment_size).unwrap_or(1))?;
    Ok(coverage)
}

struct Settings {
    max_batch: usize,
    checkpoint_interval: Duration,
    checkpoint_events: u64,
}

fn run(
    consumer: BaseConsumer<SpeedContext>,
    settings: Settings,
    cancel: CancellationToken,
) -> Result<()> {
    let shared = Arc::clone(&consumer.context().shared);
    let mut last_checkpoint = Instant::now();
    let mut last_maintenance = Instant::now();
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
        if let Err(error) = poll_batch(&consumer, &shared, settings.max_batch) {
            break Err(error);
        }
        let pending: u64 = shared.assigned().iter().map(|(_, s)| s.pending()).sum();
        if pending >= settings.checkpoint_events
            || (pending > 0 && last_checkpoint.elapsed() >= settings.checkpoint_interval)
        {
            if let Err(error) = checkpoint_all(&consumer, &shared) {
                break Err(error);
            }
            last_checkpoint = Instant::now();
        }
        if last_maintenance.elapsed() >= MAINTENANCE_INTERVAL {
            if let Err(error) = maintain(&shared) {
                break Err(error);
            }
            last_maintenance = Instant::now();
        }
    };
    // Make everything applied durable, then leave the group; the revocation that follows
    // checkpoints again (a no-op) and releases the partitions.
    let checkpointed = checkpoint_all(&consumer, &shared);
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shared.assigned().is_empty() && Instant::now() < deadline {
        let _ = consumer.poll(POLL_TIMEOUT);
    }
    drop(consumer);
    match &result {
        Ok(()) => tracing::info!("speed layer stopped"),
        Err(error) => tracing::error!(%error, "speed layer failed"),
    }
    result.and(checkpointed)
}

/// Polls up to `max_batch` messages (waiting only for the first) and applies them per partition.
fn poll_batch(
    consumer: &BaseConsumer<SpeedContext>,
    shared: &Shared,
    max_batch: usize,
) -> Result<()> {
    let mut batches: BTreeMap<(String, i32), Vec<Message<'_>>> = BTreeMap::new();
    let mut held = Vec::new();
    let mut timeout = POLL_TIMEOUT;
    for _ in 0..max_batch {
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
    let mut newest: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for message in &held {
        let key = (message.topic().to_owned(), message.partition());
        if let Some(ms) = message.timestamp().to_millis() {
            let slot = newest.entry(key.clone()).or_insert(ms);
            *slot = (*slot).max(ms);
        }
        batches.entry(key).or_default().push(Message {
            offset: message.offset(),
            payload: message.payload().unwrap_or_default(),
        });
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    for ((topic, partition), messages) in batches {
        let tp = TopicPartition::new(topic, partition);
        // A partition revoked while this batch was collected is skipped: its new owner
        // continues from the checkpoint written at revocation.
        let (Some(state), Some(plan)) = (shared.partition(&tp), shared.plan.topic(&tp.topic))
        else {
            continue;
        };
        state.apply(plan, &messages, shared.segment_size, now_ms)?;
        if let Some(&ms) = newest.get(&(tp.topic.clone(), tp.partition)) {
            state
                .last_message_ms
                .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Checkpoints every partition with unsaved events, then commits their offsets to Kafka
/// (advisory: for lag tools; restarts use the checkpoints).
fn checkpoint_all(consumer: &BaseConsumer<SpeedContext>, shared: &Shared) -> Result<()> {
    let mut offsets = TopicPartitionList::new();
    for (tp, state) in shared.assigned() {
        let Some(plan) = shared.plan.topic(&tp.topic) else {
            continue;
        };
        if state.pending() == 0 {
            continue;
        }
        let started = Instant::now();
        let bytes = checkpoint::write(shared.storage_dir(), plan, &state, shared.segment_size)?;
        metrics::checkpoint(started.elapsed().as_secs_f64(), bytes);
        let next_offset = state.progress().next_offset;
        offsets.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(next_offset))?;
    }
    if offsets.count() > 0
        && let Err(error) = consumer.commit(&offsets, CommitMode::Async)
    {
        tracing::debug!(%error, "advisory offset commit failed");
    }
    Ok(())
}

/// Follows published batch coverage (dropping covered segments) and refreshes the cell gauges.
/// Lag comes from librdkafka's statistics callback, never from a blocking request here.
fn maintain(shared: &Shared) -> Result<()> {
    let coverage = read_coverage(shared.storage_dir(), shared.segment_size)?;
    let changed = shared
        .coverage
        .read()
        .map(|c| *c != coverage)
        .unwrap_or(false);
    if changed {
        for (tp, state) in shared.assigned() {
            let dropped = state.drop_below(coverage.of(&tp), shared.segment_size);
            if dropped > 0 {
                if let Ok(mut writer) = state.writer.lock() {
                    writer.pending += 1;
                }
                let floor = state.progress().floor;
                tracing::info!(partition = %tp, floor, dropped, "dropped segments covered by the batch layer");
            }
        }
        if let Ok(mut current) = shared.coverage.write() {
            *current = coverage;
        }
    }
    for topic in &shared.plan.topics {
        let mut cells = vec![0; topic.views.len()];
        let partitions = shared
            .assigned()
            .into_iter()
            .filter(|(tp, _)| tp.topic == topic.topic);
        for (_, state) in partitions {
            for (total, n) in cells
                .iter_mut()
                .zip(state.cells_per_view(topic.views.len()))
            {
                *total += n;
            }
        }
        for (view, n) in topic.views.iter().zip(cells) {
            metrics::live_cells(&view.name, n);
        }
    }
    Ok(())
}
