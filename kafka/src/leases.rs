//! A layer's partitions through partition leases in storage ([`braid_store::membership`])
//! instead of a broker's consumer group: the consumer is assigned the partitions of its share
//! by hand, between polls, on the consumer thread, with the same take-up and release the group
//! protocol's callbacks run ([`Partitions`]).
//!
//! Every step (after each poll) compares the partitions held with this member's share of the
//! topics' partitions. A partition no longer its share is released (the layer's work on it made
//! durable) and its lease given back; one newly its share is taken once its lease is free (its
//! previous holder gave it back, left or expired), taken up and assigned at the offset the layer
//! resumes from. A member whose own record went unrenewed past most of the TTL (a paused
//! process, storage refusing writes) has no share: it releases everything, and first drops,
//! without writing, any partition whose lease another member has taken meanwhile.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_shared::{Config, TopicPartition};
use braid_store::Storage;
use braid_store::membership::Membership;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::context::{Context, Partitions};
use crate::error::Error;

/// How often the topics' partition lists are read from the broker.
const LIST_EVERY: Duration = Duration::from_secs(5);
/// How long a partition listing waits for the broker (the first one: [`FIRST_LIST_TIMEOUT`]).
const LIST_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a lease still held by another member is asked for again.
const TAKE_AGAIN_AFTER: Duration = Duration::from_millis(250);

/// How a layer's consumer gets its partitions.
pub enum Assignment {
    /// Kafka's consumer group protocol: the broker's group coordinator deals the partitions.
    Group,
    /// Partition leases in storage.
    Leases(Membership),
}

impl Assignment {
    /// The assignment `config` asks for, for the layer's consumer group `group`: joins the
    /// group's membership in `storage` when it is leases.
    pub fn for_group(
        config: &Config,
        storage: Arc<dyn Storage>,
        group: &str,
    ) -> Result<Self, Error> {
        Ok(match config.kafka.assignment {
            braid_shared::config::Assignment::Group => Self::Group,
            braid_shared::config::Assignment::Leases => Self::Leases(Membership::join(
                storage,
                group,
                config.kafka.instance_id.as_deref(),
                config.kafka.session_timeout(),
            )?),
        })
    }
}

/// The consumer thread's side of the leases: what it holds and when it looks again.
pub(crate) struct Leases {
    membership: Membership,
    topics: Vec<String>,
    partitions: BTreeSet<TopicPartition>,
    listed_at: Option<Instant>,
    assigned: BTreeSet<TopicPartition>,
    /// Partitions released whose lease could not be given back yet (storage refused).
    giving_back: BTreeSet<TopicPartition>,
    take_after: Instant,
}

impl Leases {
    pub fn new(membership: Membership, topics: &[&str]) -> Self {
        Self {
            membership,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            partitions: BTreeSet::new(),
            listed_at: None,
            assigned: BTreeSet::new(),
            giving_back: BTreeSet::new(),
            take_after: Instant::now(),
        }
    }

    /// Brings the consumer's assignment in line with this member's share.
    pub fn step<P: Partitions>(
        &mut self,
        consumer: &BaseConsumer<Context<P>>,
    ) -> Result<(), P::Error> {
        if !self.membership.is_current() {
            self.drop_lost(consumer)?;
        }
        self.give_back_pending();
        self.list(consumer);
        let share = self.membership.share(&self.partitions);
        let leaving: Vec<TopicPartition> = self.assigned.difference(&share).cloned().collect();
        for tp in leaving {
            self.release(consumer, &tp)?;
        }
        if Instant::now() < self.take_after {
            return Ok(());
        }
        let mut waiting = false;
        for tp in share.difference(&self.assigned.clone()) {
            match self.membership.take(tp) {
                Ok(true) => self.take_up(consumer, tp)?,
                Ok(false) => waiting = true,
                Err(error) => {
                    tracing::warn!(partition = %tp, %error, "taking the partition's lease failed; trying again");
                    waiting = true;
                }
            }
        }
        if waiting {
            self.take_after = Instant::now() + TAKE_AGAIN_AFTER;
        }
        Ok(())
    }

    /// Releases everything held and leaves the group (the loop ended; the layer's work is
    /// durable).
    pub fn leave<P: Partitions>(
        mut self,
        consumer: &BaseConsumer<Context<P>>,
    ) -> Result<(), P::Error> {
        let mut result = Ok(());
        for tp in self.assigned.clone() {
            result = result.and(self.release(consumer, &tp));
        }
        if let Err(error) = self.membership.leave() {
            tracing::warn!(%error, "leaving the group failed");
        }
        result
    }

    /// Reads the topics' partition lists when due; a broker that does not answer leaves the
    /// last list in place.
    fn list<P: Partitions>(&mut self, consumer: &BaseConsumer<Context<P>>) {
        if self.listed_at.is_some_and(|at| at.elapsed() < LIST_EVERY) {
            return;
        }
        let timeout = if self.listed_at.is_none() {
            FIRST_LIST_TIMEOUT
        } else {
            LIST_TIMEOUT
        };
        self.listed_at = Some(Instant::now());
        let mut listed = BTreeSet::new();
        for topic in &self.topics {
            match consumer.fetch_metadata(Some(topic), timeout) {
                Ok(metadata) => {
                    for t in metadata.topics() {
                        if t.error().is_some() {
                            continue;
                        }
                        for p in t.partitions() {
                            listed.insert(TopicPartition::new(t.name(), p.id()));
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%topic, %error, "listing the topic's partitions failed; keeping the last list");
                    return;
                }
            }
        }
        if listed != self.partitions {
            tracing::info!(partitions = listed.len(), "topic partitions listed");
            consumer.context().partitions.listed(&listed);
            self.partitions = listed;
        }
    }

    /// A member not renewed in time may have lost leases: partitions another member took are
    /// dropped without writing anything (their next owner resumes from the layer's records).
    /// A partition whose lease storage cannot read is dropped too, and its lease given back
    /// once storage answers (another member may be waiting for it).
    fn drop_lost<P: Partitions>(
        &mut self,
        consumer: &BaseConsumer<Context<P>>,
    ) -> Result<(), P::Error> {
        for tp in self.assigned.clone() {
            match self.membership.holds(&tp) {
                Ok(true) => continue,
                Ok(false) => {
                    tracing::warn!(partition = %tp, "another member took the partition while this one was not heard; dropped");
                }
                Err(error) => {
                    tracing::warn!(partition = %tp, %error, "cannot tell whether the partition's lease is still held; dropping the partition");
                    self.giving_back.insert(tp.clone());
                }
            }
            consumer.context().partitions.forget(&tp);
            self.unassign(consumer, &tp)?;
        }
        Ok(())
    }

    fn take_up<P: Partitions>(
        &mut self,
        consumer: &BaseConsumer<Context<P>>,
        tp: &TopicPartition,
    ) -> Result<(), P::Error> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.topic, tp.partition);
        let taken = consumer
            .context()
            .assign(consumer, std::slice::from_ref(tp), &mut tpl)
            .and_then(|()| {
                consumer
                    .incremental_assign(&tpl)
                    .map_err(|e| Error::from(e).into())
            });
        if let Err(error) = taken {
            // The layer may hold part of it: nothing of it is written by this member again.
            consumer.context().partitions.forget(tp);
            let _ = self.membership.give_back(tp);
            return Err(error);
        }
        self.assigned.insert(tp.clone());
        Ok(())
    }

    fn release<P: Partitions>(
        &mut self,
        consumer: &BaseConsumer<Context<P>>,
        tp: &TopicPartition,
    ) -> Result<(), P::Error> {
        consumer.context().release(std::slice::from_ref(tp))?;
        self.unassign(consumer, tp)?;
        self.giving_back.insert(tp.clone());
        self.give_back_pending();
        Ok(())
    }

    /// Gives back the leases of released partitions; one storage refused is tried again at the
    /// next step (until then its next owner waits).
    fn give_back_pending(&mut self) {
        self.giving_back.retain(|tp| match self.membership.give_back(tp) {
            Ok(()) => false,
            Err(error) => {
                tracing::warn!(partition = %tp, %error, "giving the partition's lease back failed; trying again");
                true
            }
        });
    }

    fn unassign<P: Partitions>(
        &mut self,
        consumer: &BaseConsumer<Context<P>>,
        tp: &TopicPartition,
    ) -> Result<(), P::Error> {
        self.assigned.remove(tp);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Invalid)
            .map_err(Error::from)?;
        consumer.incremental_unassign(&tpl).map_err(Error::from)?;
        Ok(())
    }
}
