//! Braid's Kafka clients, written once: the consumer core the archiver and the speed layer
//! share, the producer and the tail reader the other components use.
//!
//! Each layer reads every source topic as its own group (partition leases in storage, or a Kafka
//! consumer group) and decides for itself where
//! a partition resumes (the archive's manifest, the speed layer's checkpoint): Kafka's committed
//! offsets are advisory, for lag tools. The layers differ only in what they do with a partition
//! (buffer and flush, or restore, apply and checkpoint), which they say by implementing
//! [`Partitions`] (hand-over) and [`Worker`] (the work of the loop); the loop, the rebalance
//! dispatch, the fatal-error slot, statistics-to-lag and the drain on shutdown are here.
//!
//! - `settings`: the librdkafka client settings of a layer's consumer group.
//! - `producer`: keyed messages to a topic, acknowledged before `publish` returns.
//! - `generate`: the synthetic payments generator produced at a steady rate.
//! - `tail`: a reader of one topic's partitions outside any group (events the archive has not
//!   reached yet, a topic's partition list).
//! - `context`: the rebalance and statistics callbacks around a layer's [`Partitions`].
//! - `consumer`: the owned consumer thread and its poll loop around a layer's [`Worker`].
//! - `leases`: a layer's partitions through partition leases in storage instead of a consumer
//!   group ([`Assignment`]).
//! - `error`: the crate's error type.
//! - `admin`: creating a topic on a real broker (benches and tests).

mod admin;
mod consumer;
mod context;
mod error;
mod generate;
mod leases;
mod producer;
mod settings;
mod tail;

pub use admin::create_topic;
pub use consumer::{Commit, ConsumerThread, Subscription, Worker, start};
pub use context::{Broker, Partitions};
pub use error::{Error, Result, ResumeRecord};
pub use generate::{GeneratorPlan, generate};
pub use leases::Assignment;
pub use producer::TopicProducer;
pub use rdkafka::message::{BorrowedMessage, Message};
pub use settings::client_config;
pub use tail::Tail;
