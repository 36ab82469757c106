//! The owned consumer thread: subscribe, poll batches, hand them to the layer's [`Worker`],
//! commit what it reports durable (advisory), and on the way out make everything durable and
//! leave the group so the partitions pass to another member.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use braid_shared::TopicPartition;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::context::{Context, Partitions};
use crate::error::Error;
use crate::leases::{Assignment, Leases};

const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a stopping consumer waits for the group to take its partitions back.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Per partition, the offset below which the layer's work is durable: committed to Kafka for
/// lag tools (the layers resume from their own records, not from these).
pub type Commit = Vec<(TopicPartition, i64)>;

/// What a layer does in the poll loop. Runs on the consumer thread, between polls; the
/// rebalance callbacks ([`Partitions`]) run on the same thread, inside a poll.
pub trait Worker: Send + 'static {
    type Partitions: Partitions;

    /// Handles one polled batch: at most `max_batch` messages in poll order, possibly of
    /// partitions released while it was collected (skip those: their next owner continues
    /// from the layer's own record).
    fn batch(
        &mut self,
        messages: &[BorrowedMessage<'_>],
    ) -> Result<(), <Self::Partitions as Partitions>::Error>;

    /// The routing plan the layer decodes polled messages with: before a batch is handled,
    /// the loop waits until every schema its messages name is at hand (a schema registry that
    /// cannot be reached pauses the loop; nothing is rejected for it, and work resumes exactly
    /// where it stopped).
    fn plan(&self) -> &braid_shared::plan::Plan;

    /// Periodic work after every poll (checkpoints, flushes, following the batch layer).
    fn tick(&mut self) -> Result<Commit, <Self::Partitions as Partitions>::Error>;

    /// The loop ends (`clean`: it was cancelled, not stopped by an error): make what is held
    /// durable before the partitions are released.
    fn finish(&mut self, clean: bool) -> Result<Commit, <Self::Partitions as Partitions>::Error>;
}

/// A running consumer thread; joining it returns how the loop ended.
pub struct ConsumerThread<E> {
    name: String,
    thread: JoinHandle<Result<(), E>>,
}

impl<E> ConsumerThread<E> {
    /// Whether the thread has stopped (after cancellation or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the thread to stop. `panicked` makes the error for a thread that panicked.
    pub fn join(self, panicked: impl FnOnce(String) -> E) -> Result<(), E> {
        let name = self.name;
        self.thread
            .join()
            .unwrap_or_else(|_| Err(panicked(format!("the {name} thread panicked"))))
    }
}

/// What a layer's consumer reads and how it gets its partitions.
pub struct Subscription<'a> {
    /// The consumer's client settings.
    pub client: &'a ClientConfig,
    pub topics: &'a [&'a str],
    pub assignment: Assignment,
}

/// Starts a consumer of `subscription`'s topics and runs `worker` on a thread named `name`
/// until `cancel` fires or a step fails.
pub fn start<W: Worker>(
    name: &str,
    subscription: Subscription<'_>,
    partitions: Arc<W::Partitions>,
    worker: W,
    max_batch: usize,
    cancel: CancellationToken,
) -> Result<
    ConsumerThread<<W::Partitions as Partitions>::Error>,
    <W::Partitions as Partitions>::Error,
> {
    // Exported from the start, so dashboards and alerts find them before any wait.
    metrics::gauge!("braid_consumer_waiting_for_registry").set(0.0);
    metrics::counter!("braid_consumer_registry_retries_total").increment(0);
    let context = Context {
        partitions,
        fatal: Mutex::new(None),
    };
    let consumer: BaseConsumer<Context<W::Partitions>> = subscription
        .client
        .create_with_context(context)
        .map_err(Error::from)?;
    let leases = match subscription.assignment {
        Assignment::Group => {
            consumer
                .subscribe(subscription.topics)
                .map_err(Error::from)?;
            None
        }
        Assignment::Leases(membership) => Some(Leases::new(membership, subscription.topics)),
    };
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || run(consumer, leases, worker, max_batch.max(1), cancel))
        .map_err(|source| Error::Spawn {
            thread: name.to_owned(),
            source,
        })?;
    Ok(ConsumerThread {
        name: name.to_owned(),
        thread,
    })
}

fn run<W: Worker>(
    consumer: BaseConsumer<Context<W::Partitions>>,
    mut leases: Option<Leases>,
    mut worker: W,
    max_batch: usize,
    cancel: CancellationToken,
) -> Result<(), <W::Partitions as Partitions>::Error> {
    let result = poll_loop(&consumer, leases.as_mut(), &mut worker, max_batch, &cancel);
    let finished = worker.finish(result.is_ok());
    if let Ok(commit) = &finished {
        commit_advisory(&consumer, commit);
    }
    // Leave the group; the partitions are released (their work already durable).
    let left = match leases {
        Some(leases) => leases.leave(&consumer),
        None => {
            // The revocation that follows leaving releases the partitions.
            consumer.unsubscribe();
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            let partitions = Arc::clone(&consumer.context().partitions);
            while !partitions.held().is_empty() && Instant::now() < deadline {
                let _ = consumer.poll(POLL_TIMEOUT);
            }
            Ok(())
        }
    };
    let late = consumer.context().take_fatal();
    drop(consumer);
    let result = result.and(finished.map(drop)).and(left);
    let result = match (result, late) {
        (Ok(()), Some(error)) => Err(error),
        (result, _) => result,
    };
    match &result {
        Ok(()) => tracing::info!("consumer stopped"),
        Err(error) => tracing::error!(%error, "consumer failed"),
    }
    result
}

/// Polls and works until cancelled or a step fails.
fn poll_loop<W: Worker>(
    consumer: &BaseConsumer<Context<W::Partitions>>,
    mut leases: Option<&mut Leases>,
    worker: &mut W,
    max_batch: usize,
    cancel: &CancellationToken,
) -> Result<(), <W::Partitions as Partitions>::Error> {
    let mut held = Vec::with_capacity(max_batch.min(65_536));
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        if let Some(error) = consumer.context().take_fatal() {
            return Err(error);
        }
        let reset = poll_batch(consumer, max_batch, &mut held);
        if let Some(leases) = leases.as_deref_mut() {
            // Before the batch: a partition dropped here has its polled messages skipped.
            leases.step(consumer)?;
        }
        if !held.is_empty() {
            if !wait_until_ready(&*worker, &held, cancel) {
                return Ok(());
            }
            if let Some(leases) = leases.as_deref_mut() {
                // Leases renewed after a wait, and partitions lost meanwhile dropped.
                leases.step(consumer)?;
            }
            let handled = worker.batch(&held);
            held.clear();
            handled?;
        }
        if reset {
            // Everything polled before the failed fetch is handled: name what was lost.
            return Err(offsets_lost(consumer).into());
        }
        let commit = worker.tick()?;
        commit_advisory(consumer, &commit);
    }
}

/// Longest pause between two checks of a batch that cannot be handled yet.
const MAX_WAIT_STEP: Duration = Duration::from_secs(5);

/// Waits, with backoff, until the worker can handle `held`; false when cancelled first.
fn wait_until_ready<W: Worker>(
    worker: &W,
    held: &[BorrowedMessage<'_>],
    cancel: &CancellationToken,
) -> bool {
    let ready = |worker: &W| {
        let messages = held
            .iter()
            .map(|m| (m.topic(), m.payload().unwrap_or_default()));
        worker.plan().resolve(messages).map_err(|e| e.to_string())
    };
    let Err(first) = ready(worker) else {
        return true;
    };
    let started = Instant::now();
    tracing::warn!(reason = %first, "consumption paused until the schema registry answers");
    metrics::gauge!("braid_consumer_waiting_for_registry").set(1.0);
    let mut step = Duration::from_millis(100);
    let ready = loop {
        let until = Instant::now() + step;
        while Instant::now() < until {
            if cancel.is_cancelled() {
                break;
            }
            std::thread::sleep(POLL_TIMEOUT.min(until.saturating_duration_since(Instant::now())));
        }
        if cancel.is_cancelled() {
            break false;
        }
        metrics::counter!("braid_consumer_registry_retries_total").increment(1);
        match ready(worker) {
            Ok(()) => break true,
            Err(why) => tracing::debug!(reason = %why, "schema registry still unavailable"),
        }
        step = (step * 2).min(MAX_WAIT_STEP);
    };
    metrics::gauge!("braid_consumer_waiting_for_registry").set(0.0);
    if ready {
        tracing::info!(
            waited_ms = started.elapsed().as_millis() as u64,
            "the schema registry answers again; consumption resumes"
        );
    }
    ready
}

/// Polls up to `max_batch` messages into `held`, waiting only for the first. Returns whether
/// a partition's next offset is no longer on the broker (`auto.offset.reset=error`).
fn poll_batch<'c, P: Partitions>(
    consumer: &'c BaseConsumer<Context<P>>,
    max_batch: usize,
    held: &mut Vec<BorrowedMessage<'c>>,
) -> bool {
    let mut timeout = POLL_TIMEOUT;
    while held.len() < max_batch {
        match consumer.poll(timeout) {
            None => break,
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                return true;
            }
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
    false
}

/// Why a fetch found its offset gone: the partition whose next offset the broker no longer
/// holds, with the range lost, from the consumer's positions and the broker's watermarks.
fn offsets_lost<P: Partitions>(consumer: &BaseConsumer<Context<P>>) -> Error {
    let positions = match consumer.position() {
        Ok(positions) => positions,
        Err(error) => return Error::Kafka(error),
    };
    let partitions = &consumer.context().partitions;
    for element in positions.elements() {
        let tp = TopicPartition::new(element.topic().to_owned(), element.partition());
        // Before a partition's first message the consumer has no position: the layer's is
        // where it asked to start.
        let next = match element.offset() {
            Offset::Offset(next) => next,
            _ => match partitions.position(&tp) {
                Some(next) => next,
                None => continue,
            },
        };
        let Ok(watermarks) =
            consumer.fetch_watermarks(&tp.topic, tp.partition, crate::context::WATERMARK_TIMEOUT)
        else {
            continue;
        };
        let (record, path) = partitions.resume_record(&tp);
        if let Err(error) = crate::context::check_offsets(&tp, next, watermarks, record, &path) {
            return error;
        }
    }
    Error::Kafka(KafkaError::MessageConsumption(
        RDKafkaErrorCode::AutoOffsetReset,
    ))
}

/// Commits offsets to Kafka, advisory: for lag tools; the layers resume from their own records.
fn commit_advisory<P: Partitions>(consumer: &BaseConsumer<Context<P>>, commit: &Commit) {
    if commit.is_empty() {
        return;
    }
    let mut offsets = TopicPartitionList::new();
    for (tp, offset) in commit {
        if let Err(error) =
            offsets.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
        {
            tracing::debug!(%error, partition = %tp, "advisory offset not committed");
        }
    }
    if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
        tracing::debug!(%error, "advisory offset commit failed");
    }
}
