//! Partition hand-over. On assignment a partition's state is restored from its checkpoint and
//! the consumer is positioned exactly after it (Kafka's committed offsets are not trusted); on
//! revocation the state is checkpointed before the partition is released, so the next owner
//! continues exactly where this one stopped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_shared::TopicPartition;
use braid_shared::storage::speed_checkpoint_path;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::checkpoint::{self, Unusable};
use crate::error::{Error, Result};
use crate::rejected::{Keep, RejectedLog};
use crate::state::{PartitionState, Progress, Shared};

const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct SpeedContext {
    pub shared: Arc<Shared>,
    /// A failure inside a rebalance callback, picked up by the poll loop, which stops.
    pub fatal: Mutex<Option<Error>>,
}

impl ClientContext for SpeedContext {
    /// librdkafka's periodic statistics: the source of per-partition lag, at no request cost.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            for (&partition, p) in &stats.partitions {
                if partition < 0 || p.hi_offset < 0 {
                    continue;
                }
                let tp = TopicPartition::new(topic.clone(), partition);
                let Some(state) = self.shared.partition(&tp) else {
                    continue;
                };
                let lag = (p.hi_offset - state.progress().next_offset).max(0);
                crate::metrics::lag(topic, partition, lag);
                if let Ok(mut lags) = self.shared.lag.write() {
                    lags.insert(tp, lag);
                }
            }
        }
    }
}

impl ConsumerContext for SpeedContext {
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
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, tpl).and_then(|()| {
                    if cooperative {
                        consumer.incremental_assign(tpl)
                    } else {
                        consumer.assign(tpl)
                    }
                    .map_err(Error::from)
                })
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let released = self.revoke(tpl);
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                released.and(unassigned.map_err(Error::from))
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; releasing all partitions");
                let all = self
                    .shared
                    .assigned()
                    .into_iter()
                    .map(|(tp, _)| tp)
                    .collect::<Vec<_>>();
                let released = self.release(&all);
                released.and(consumer.unassign().map_err(Error::from))
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

impl SpeedContext {
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) -> Result<()> {
        let wanted: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        for tp in wanted {
            let state = self.take_up(consumer, &tp)?;
            let Progress {
                next_offset: start,
                floor,
            } = state.progress();
            tracing::info!(partition = %tp, start, floor, "partition assigned");
            tpl.set_partition_offset(&tp.topic, tp.partition, Offset::Offset(start))?;
            if let Ok(mut map) = self.shared.partitions.write() {
                map.insert(tp, Arc::new(state));
            }
        }
        Ok(())
    }

    /// Restores a partition from its checkpoint, or starts it at the batch coverage.
    fn take_up(
        &self,
        consumer: &BaseConsumer<Self>,
        tp: &TopicPartition,
    ) -> Result<PartitionState> {
        let shared = &self.shared;
        let plan = shared
            .plan
            .topic(&tp.topic)
            .ok_or_else(|| Error::Internal(format!("assigned {tp}, a topic no source reads")))?;
        let coverage = shared.coverage.read().map(|c| c.of(tp)).unwrap_or(0);
        let path = speed_checkpoint_path(shared.storage_dir(), &tp.topic, tp.partition);
        let rejected_path = braid_shared::storage::speed_rejected_path(
            shared.storage_dir(),
            &tp.topic,
            tp.partition,
        );
        let restored = match std::fs::read(&path) {
            Ok(bytes) => match checkpoint::decode(plan, tp, shared.segment_size, &bytes) {
                Ok(restored) => Some(restored),
                Err(Unusable::Incompatible(why)) => {
                    tracing::warn!(partition = %tp, why, "checkpoint is for another configuration; rebuilding from the broker");
                    None
                }
                Err(Unusable::Corrupt(why)) => {
                    tracing::error!(partition = %tp, why, path = %path.display(), "checkpoint is damaged; rebuilding from the broker");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let state = match restored {
            Some(restored) => {
                let (_, high) =
                    consumer.fetch_watermarks(&tp.topic, tp.partition, WATERMARK_TIMEOUT)?;
                if high < restored.progress.next_offset {
                    return Err(Error::OffsetsBehindCheckpoint {
                        tp: tp.clone(),
                        high_watermark: high,
                        checkpoint: restored.progress.next_offset,
                        path,
                    });
                }
                let rejected =
                    RejectedLog::open(&rejected_path, Keep::Bytes(restored.rejected_len))?;
                PartitionState::new(tp.clone(), restored.progress, restored.segments, rejected)
            }
            None => {
                let rejected = RejectedLog::open(&rejected_path, Keep::BelowOffset(coverage))?;
                let start = Progress {
                    next_offset: coverage,
                    floor: coverage,
                };
                PartitionState::new(tp.clone(), start, Default::default(), rejected)
            }
        };
        state.drop_below(coverage, shared.segment_size);
        Ok(state)
    }

    fn revoke(&self, tpl: &TopicPartitionList) -> Result<()> {
        let revoked: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        self.release(&revoked)
    }

    /// Checkpoints and forgets partitions.
    fn release(&self, partitions: &[TopicPartition]) -> Result<()> {
        let mut result = Ok(());
        for tp in partitions {
            let removed = self
                .shared
                .partitions
                .write()
                .ok()
                .and_then(|mut map| map.remove(tp));
            let (Some(state), Some(plan)) = (removed, self.shared.plan.topic(&tp.topic)) else {
                continue;
            };
            match checkpoint::write(
                self.shared.storage_dir(),
                plan,
                &state,
                self.shared.segment_size,
            ) {
                Ok(_) => {
                    let next_offset = state.progress().next_offset;
                    tracing::info!(partition = %tp, next_offset, "partition released");
                }
                Err(error) => result = result.and(Err(error)),
            }
        }
        result
    }
}
