//! The speed layer's part of the consumer loop (the loop itself is `braid-kafka`'s): apply each
//! polled batch to the views of its topic, checkpoint on a schedule, and follow published batch
//! coverage.
//!
//! `rebalance`: partition hand-over (restore and seek on assign, checkpoint on revoke).

mod rebalance;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use braid_kafka::{BorrowedMessage, Commit, ConsumerThread, Message as _};
use braid_shared::plan::Plan;
use braid_shared::{Config, Coverage, SpeedReader, TopicPartition};
use braid_store::Storage;
use tokio_util::sync::CancellationToken;

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::metrics;
use crate::state::{Message, Scoring, Shared, SpeedHandle};

use rebalance::SpeedPartitions;

/// How often published coverage and cell gauges are refreshed.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(500);

/// A running speed layer.
pub struct SpeedLayer {
    handle: SpeedHandle,
    thread: ConsumerThread<Error>,
}

impl SpeedLayer {
    /// Starts consuming on a dedicated thread until `cancel` fires, keeping checkpoints and
    /// rejected events in `storage`.
    pub fn start(
        config: &Config,
        storage: Arc<dyn Storage>,
        cancel: CancellationToken,
    ) -> Result<Self> {
        Self::start_scoring(config, storage, None, cancel)
    }

    /// Starts consuming, handing each run of the fraud source's events to `scorer` before it
    /// is applied.
    pub fn start_scoring(
        config: &Config,
        storage: Arc<dyn Storage>,
        scorer: Option<Arc<dyn braid_shared::fraud::EventScorer>>,
        cancel: CancellationToken,
    ) -> Result<Self> {
        let segment_size = i64::try_from(config.speed.segment_size).unwrap_or(i64::MAX);
        let coverage = read_coverage(storage.as_ref(), segment_size)?;
        crate::metrics::register_sources(config.sources.iter().map(|s| s.name.as_str()));
        let scoring = scorer
            .zip(config.fraud.as_ref())
            .map(|(scorer, fraud)| Scoring {
                source: fraud.source.name.clone(),
                scorer,
            });
        let shared = Arc::new(Shared {
            scoring,
            plan: Plan::new(config),
            storage,
            segment_size,
            partitions: RwLock::new(BTreeMap::new()),
            coverage: RwLock::new(coverage),
            lag: RwLock::new(BTreeMap::new()),
            listed: RwLock::new(BTreeSet::new()),
        });
        let topics = config.topics();
        let background = Arc::new(checkpoint::Background::start(Arc::clone(&shared))?);
        let worker = SpeedWorker {
            shared: Arc::clone(&shared),
            reader: SpeedHandle {
                shared: Arc::clone(&shared),
            },
            background: Arc::clone(&background),
            checkpoint_interval: config.speed.checkpoint_interval.0,
            checkpoint_events: config.speed.checkpoint_events,
            last_checkpoint: Instant::now(),
            last_maintenance: Instant::now(),
        };
        let assignment = braid_kafka::Assignment::for_group(
            config,
            Arc::clone(&shared.storage),
            &config.kafka.group_id,
        )?;
        let thread = braid_kafka::start(
            "braid-speed",
            braid_kafka::Subscription {
                client: &braid_kafka::client_config(config, &config.kafka.group_id),
                topics: &topics,
                assignment,
            },
            Arc::new(SpeedPartitions {
                shared: Arc::clone(&shared),
                background,
            }),
            worker,
            config.speed.max_batch,
            cancel,
        )?;
        tracing::info!(brokers = %config.kafka.brokers, group = %config.kafka.group_id, ?topics, "speed layer subscribed");
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
        self.thread.join(Error::Internal)
    }
}

fn read_coverage(storage: &dyn Storage, segment_size: i64) -> Result<Coverage> {
    let coverage = braid_store::pointer::read_pointer(storage)?
        .map(|p| p.coverage)
        .unwrap_or_default();
    coverage.check_aligned(u64::try_from(segment_size).unwrap_or(1))?;
    Ok(coverage)
}

struct SpeedWorker {
    shared: Arc<Shared>,
    /// This speed layer, as the fraud scorer reads it.
    reader: SpeedHandle,
    /// Writes the checkpoints taken on schedule, off the consumer thread.
    background: Arc<checkpoint::Background>,
    checkpoint_interval: Duration,
    checkpoint_events: u64,
    last_checkpoint: Instant,
    last_maintenance: Instant,
}

impl braid_kafka::Worker for SpeedWorker {
    type Partitions = SpeedPartitions;

    /// Applies a polled batch per partition.
    fn batch(&mut self, held: &[BorrowedMessage<'_>]) -> Result<()> {
        let shared = &self.shared;
        let mut batches: BTreeMap<(&str, i32), Vec<Message<'_>>> = BTreeMap::new();
        let mut newest: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for message in held {
            let key = (message.topic(), message.partition());
            if let Some(ms) = message.timestamp().to_millis() {
                let slot = newest.entry(key).or_insert(ms);
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
            let (Some(state), Some(plan)) = (shared.partition(&tp), shared.plan.topic(topic))
            else {
                continue;
            };
            let scoring = shared
                .scoring
                .as_ref()
                .map(|s| (s, &self.reader as &dyn SpeedReader));
            state.apply(plan, &messages, shared.segment_size, now_ms, scoring)?;
            if let Some(&ms) = newest.get(&(topic, partition)) {
                state
                    .last_message_ms
                    .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn plan(&self) -> &braid_shared::plan::Plan {
        &self.shared.plan
    }

    fn tick(&mut self) -> Result<Commit> {
        let shared = &self.shared;
        let pending: u64 = shared.assigned().iter().map(|(_, s)| s.pending()).sum();
        // What the writer thread made durable since the last tick.
        let commit = self.background.written()?;
        crate::state::list_due_rejections(shared)?;
        if pending >= self.checkpoint_events
            || (pending > 0 && self.last_checkpoint.elapsed() >= self.checkpoint_interval)
        {
            for (tp, state) in shared.assigned() {
                if let Some(plan) = shared.plan.topic(&tp.topic)
                    && state.pending() > 0
                {
                    self.background.submit(plan, &state, shared.segment_size)?;
                }
            }
            self.last_checkpoint = Instant::now();
        }
        if self.last_maintenance.elapsed() >= MAINTENANCE_INTERVAL {
            maintain(shared)?;
            self.last_maintenance = Instant::now();
        }
        Ok(commit)
    }

    /// Makes everything applied durable, whether the loop was cancelled or failed.
    fn finish(&mut self, _clean: bool) -> Result<Commit> {
        let mut commit = self.background.wait()?;
        commit.extend(checkpoint_all(&self.shared)?);
        Ok(commit)
    }
}

/// Checkpoints every partition with unsaved events now; returns their offsets for Kafka.
fn checkpoint_all(shared: &Shared) -> Result<Commit> {
    let mut commit = Commit::new();
    for (tp, state) in shared.assigned() {
        let Some(plan) = shared.plan.topic(&tp.topic) else {
            continue;
        };
        if state.pending() == 0 {
            continue;
        }
        let started = Instant::now();
        let bytes = checkpoint::write(shared, plan, &state)?;
        metrics::checkpoint(started.elapsed().as_secs_f64(), bytes);
        commit.push((tp, state.progress().next_offset));
    }
    Ok(commit)
}

/// Follows published batch coverage (dropping covered segments) and refreshes the cell gauges.
/// Lag comes from librdkafka's statistics callback, never from a blocking request here.
fn maintain(shared: &Shared) -> Result<()> {
    let coverage = read_coverage(shared.storage.as_ref(), shared.segment_size)?;
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
