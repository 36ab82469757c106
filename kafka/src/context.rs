//! The callbacks librdkafka calls on the consumer thread: partition hand-over (rebalance) and
//! periodic statistics. A layer says what taking up and releasing a partition means for it by
//! implementing [`Partitions`]; the dispatch (eager or cooperative protocol, the error case) and
//! the fatal-error slot that stops the poll loop are written here once.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_shared::TopicPartition;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::error::{Error, ResumeRecord};

pub(crate) const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at a partition's watermarks before taking it up fails, and the pause after the
/// first failed one (growing with each).
const WATERMARK_ATTEMPTS: u32 = 6;
const WATERMARK_RETRY: Duration = Duration::from_millis(200);

/// What a layer does when Kafka hands it a partition or takes one away. Called on the consumer
/// thread, from inside `poll`.
pub trait Partitions: Send + Sync + 'static {
    type Error: From<Error> + fmt::Display + Send + 'static;

    /// Takes up a partition: restores what the layer keeps of it and returns the offset to read
    /// from (`None`: the beginning of the log). `broker` checks that the log reaches it.
    fn take_up(&self, tp: &TopicPartition, broker: &Broker<'_>)
    -> Result<Option<i64>, Self::Error>;

    /// Makes what the layer holds of a partition durable, then forgets it.
    fn release(&self, tp: &TopicPartition) -> Result<(), Self::Error>;

    /// Forgets a partition without writing anything of it: another reader has taken it over
    /// and resumes from the layer's durable records.
    fn forget(&self, tp: &TopicPartition);

    /// Every partition of the layer's topics, as last listed (partition leases list them; a
    /// consumer group does not say).
    fn listed(&self, _partitions: &std::collections::BTreeSet<TopicPartition>) {}

    /// The partitions held now.
    fn held(&self) -> Vec<TopicPartition>;

    /// How far the layer has got in a held partition (the offset lag is counted from), or
    /// `None` when it does not hold it.
    fn position(&self, tp: &TopicPartition) -> Option<i64>;

    /// Messages on the broker past [`Partitions::position`], from librdkafka's statistics.
    fn record_lag(&self, tp: &TopicPartition, lag: i64);

    /// Which of the layer's records decides where it resumes `tp`, and where it is: named
    /// when the broker no longer has the offsets the layer reads next.
    fn resume_record(&self, tp: &TopicPartition) -> (ResumeRecord, std::path::PathBuf);
}

/// Fetches the low and high watermark of one partition (topic, partition).
type Watermarks<'a> = dyn Fn(&str, i32) -> rdkafka::error::KafkaResult<(i64, i64)> + 'a;

/// The broker, as a layer taking up a partition may ask it.
pub struct Broker<'a> {
    watermarks: &'a Watermarks<'a>,
}

impl Broker<'_> {
    /// Fails when the broker's log of `tp` ends below `resume`, the offset the layer's own
    /// `record` (at `path`) continues from: the topic was recreated or truncated, and reading
    /// on would count or archive a different log as if it were the same. Fails as well when the
    /// log starts above `resume`: the broker deleted events the layer never read.
    pub fn check_resume(
        &self,
        tp: &TopicPartition,
        resume: i64,
        record: ResumeRecord,
        path: &Path,
    ) -> Result<(), Error> {
        // A broker that just lost a leader answers with a retriable error for a moment (found
        // by the torture suite: one such answer stopped the layer): ask again a few times.
        let mut attempt = 1;
        let (low_watermark, high_watermark) = loop {
            match (self.watermarks)(&tp.topic, tp.partition) {
                Ok(watermarks) => break watermarks,
                Err(error) if attempt < WATERMARK_ATTEMPTS => {
                    tracing::warn!(partition = %tp, attempt, %error, "fetching the partition's watermarks failed; asking again");
                    std::thread::sleep(WATERMARK_RETRY * attempt);
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        };
        check_offsets(tp, resume, (low_watermark, high_watermark), record, path)
    }
}

/// [`Broker::check_resume`] against watermarks already fetched.
pub(crate) fn check_offsets(
    tp: &TopicPartition,
    resume: i64,
    (low_watermark, high_watermark): (i64, i64),
    record: ResumeRecord,
    path: &Path,
) -> Result<(), Error> {
    if high_watermark < resume {
        return Err(Error::OffsetsBehind {
            tp: tp.clone(),
            high_watermark,
            resume,
            record,
            path: path.to_owned(),
        });
    }
    if low_watermark > resume {
        return Err(Error::OffsetsDeleted {
            tp: tp.clone(),
            low_watermark,
            resume,
            record,
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// The consumer's context: the layer's partitions and the slot for a failure inside a callback.
pub(crate) struct Context<P: Partitions> {
    pub partitions: Arc<P>,
    /// A failure inside a rebalance callback, picked up by the poll loop, which stops.
    pub fatal: Mutex<Option<P::Error>>,
}

impl<P: Partitions> Context<P> {
    pub fn take_fatal(&self) -> Option<P::Error> {
        self.fatal.lock().ok().and_then(|mut f| f.take())
    }

    pub(crate) fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        listed: &[TopicPartition],
        tpl: &mut TopicPartitionList,
    ) -> Result<(), P::Error> {
        let watermarks = |topic: &str, partition: i32| {
            consumer.fetch_watermarks(topic, partition, WATERMARK_TIMEOUT)
        };
        let broker = Broker {
            watermarks: &watermarks,
        };
        for tp in listed {
            let start = self.partitions.take_up(tp, &broker)?;
            tracing::info!(partition = %tp, ?start, "partition assigned");
            tpl.set_partition_offset(
                &tp.topic,
                tp.partition,
                start.map_or(Offset::Beginning, Offset::Offset),
            )
            .map_err(Error::from)?;
        }
        Ok(())
    }

    pub(crate) fn release(&self, partitions: &[TopicPartition]) -> Result<(), P::Error> {
        let mut result = Ok(());
        for tp in partitions {
            if let Err(error) = self.partitions.release(tp) {
                result = result.and(Err(error));
            }
        }
        result
    }
}

impl<P: Partitions> ClientContext for Context<P> {
    /// librdkafka's periodic statistics: lag per partition, at no request cost.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            for (&partition, p) in &stats.partitions {
                if partition < 0 || p.hi_offset < 0 {
                    continue;
                }
                let tp = TopicPartition::new(topic.clone(), partition);
                if let Some(position) = self.partitions.position(&tp) {
                    self.partitions
                        .record_lag(&tp, (p.hi_offset - position).max(0));
                }
            }
        }
    }
}

impl<P: Partitions> ConsumerContext for Context<P> {
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
                    .map_err(|e| Error::from(e).into())
                })
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let released = self.release(&listed);
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                released.and(unassigned.map_err(|e| Error::from(e).into()))
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; releasing all partitions");
                let released = self.release(&self.partitions.held());
                released.and(consumer.unassign().map_err(|e| Error::from(e).into()))
            }
        };
        if let Err(error) = outcome {
            tracing::error!(%error, "partition hand-over failed");
            if let Ok(mut fatal) = self.fatal.lock() {
                fatal.get_or_insert(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use std::cell::Cell;

    fn check(failures: u32) -> (Result<(), Error>, u32) {
        let asked = Cell::new(0);
        let watermarks = |_: &str, _: i32| {
            asked.set(asked.get() + 1);
            if asked.get() <= failures {
                Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::LeaderNotAvailable,
                ))
            } else {
                Ok((0, 500))
            }
        };
        let broker = Broker {
            watermarks: &watermarks,
        };
        let tp = TopicPartition::new("payments", 0);
        let checked =
            broker.check_resume(&tp, 100, ResumeRecord::Checkpoint, Path::new("checkpoint"));
        (checked, asked.get())
    }

    /// A leader election's moment of errors does not stop a layer taking up a partition; a
    /// broker that keeps failing does, after a bounded number of attempts.
    #[test]
    fn watermarks_are_asked_again_after_a_retriable_failure() {
        let (checked, asked) = check(2);
        assert!(checked.is_ok(), "{checked:?}");
        assert_eq!(asked, 3);
        let (checked, asked) = check(u32::MAX);
        assert!(checked.is_err());
        assert_eq!(asked, WATERMARK_ATTEMPTS);
    }
}
