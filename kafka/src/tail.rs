//! The events the archive has not reached yet, read from the broker: a consumer assigned to one
//! partition (no group membership, nothing committed) reads from an offset up to the partition's
//! end as it was when the read began.

use std::time::{Duration, Instant};

use braid_shared::Config;
use rdkafka::config::ClientConfig;

use crate::error::{Error, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// Longest time one tail read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A reader of one topic's partitions.
pub struct Tail {
    consumer: BaseConsumer,
    topic: String,
}

impl Tail {
    pub fn new(config: &Config, topic: &str) -> Result<Self> {
        let mut client = ClientConfig::new();
        for (key, value) in config
            .kafka
            .consumer_settings(&format!("{}-audit", config.kafka.group_id))
        {
            if key != "statistics.interval.ms" && key != "group.instance.id" {
                client.set(key, value);
            }
        }
        let consumer: BaseConsumer = client.create().map_err(|source| Error::Client {
            what: "a reader of the broker's tail".to_owned(),
            source,
        })?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
        })
    }

    /// The topic's partitions.
    pub fn partitions(&self) -> Result<Vec<i32>> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), READ_TIMEOUT)
            .map_err(|e| Error::Unanswered(format!("the broker did not answer: {e}")))?;
        let mut partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        partitions.sort_unstable();
        Ok(partitions)
    }

    /// Messages of `partition` from offset `from` up to its end as of now, handed to `take` in
    /// offset order until it returns `false`.
    pub fn read(
        &self,
        partition: i32,
        from: i64,
        mut take: impl FnMut(i64, &[u8]) -> bool,
    ) -> Result<()> {
        let unanswered = |what: String| Error::Unanswered(what);
        let (_, end) = self
            .consumer
            .fetch_watermarks(&self.topic, partition, READ_TIMEOUT)
            .map_err(|e| {
                unanswered(format!(
                    "the broker did not answer for partition {partition}: {e}"
                ))
            })?;
        if from >= end {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, partition, Offset::Offset(from))?;
        self.consumer
            .assign(&assignment)
            .map_err(|e| unanswered(format!("cannot read partition {partition}: {e}")))?;
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut next = from;
        while next < end {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(unanswered(format!(
                    "reading partition {partition} from the broker took longer than {} s",
                    READ_TIMEOUT.as_secs()
                )));
            }
            match self.consumer.poll(left.min(Duration::from_millis(200))) {
                None => {}
                Some(Err(e)) => {
                    return Err(unanswered(format!("reading partition {partition}: {e}")));
                }
                Some(Ok(message)) => {
                    if message.partition() != partition || message.offset() < next {
                        continue;
                    }
                    next = message.offset() + 1;
                    if !take(message.offset(), message.payload().unwrap_or_default()) {
                        break;
                    }
                }
            }
        }
        let _ = self.consumer.unassign();
        Ok(())
    }
}
