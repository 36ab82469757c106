//! Producers: keyed messages to one topic, each acknowledged before `publish` returns (the
//! fraud alerts topic, `fraud.alerts_topic`, whose alerts must reach the topic before the
//! checkpoint that covers their events).

use std::time::Duration;

use crate::error::{Error, Result};

/// Counts deliveries that failed, so a flush can tell that every message reached the topic.
#[derive(Default)]
struct Deliveries {
    failed: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, (): ()) {
        if result.is_err() {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A producer of keyed messages to one topic.
pub struct TopicProducer {
    producer: rdkafka::producer::BaseProducer<Deliveries>,
    topic: String,
}

impl TopicProducer {
    /// A producer for `topic` (`what` names it in errors) with the `[kafka]` settings (`brokers`, pass-through settings a
    /// producer understands).
    pub fn new(kafka: &braid_shared::config::KafkaConfig, what: &str, topic: &str) -> Result<Self> {
        let mut client = rdkafka::ClientConfig::new();
        for (key, value) in kafka.producer_settings() {
            client.set(key, value);
        }
        let producer = client
            .set("bootstrap.servers", &kafka.brokers)
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .map_err(|source| Error::Client {
                what: format!("the producer for {what} {topic:?}"),
                source,
            })?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Produces `messages` (key, payload) in order and waits until every one is acknowledged.
    pub fn publish(&self, messages: &[(String, Vec<u8>)]) -> Result<()> {
        use rdkafka::producer::Producer as _;
        let failed_before = self
            .producer
            .context()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed);
        for (key, payload) in messages {
            let mut record = rdkafka::producer::BaseRecord::<str, [u8]>::to(&self.topic)
                .key(key.as_str())
                .payload(payload);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        self.producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                    Err((error, _)) => {
                        return Err(Error::Produce(format!(
                            "producing {key:?} to {}: {error}",
                            self.topic
                        )));
                    }
                }
            }
        }
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| Error::Produce(format!("flushing alerts to {}: {e}", self.topic)))?;
        let failed = self
            .producer
            .context()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed);
        if failed > failed_before {
            return Err(Error::Produce(format!(
                "{} messages were not delivered to {}",
                failed - failed_before,
                self.topic
            )));
        }
        Ok(())
    }
}
