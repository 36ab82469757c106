//! One partition's state fed directly, without a broker or checkpoints: the speed layer's real
//! decode and apply path, for benchmarks (`braid bench speed`) that measure it alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use braid_shared::plan::Plan;
use braid_shared::{Config, Coverage, TopicPartition};
use braid_store::Storage;
use braid_store::rejected::{Keep, RejectedLog};

use crate::error::{Error, Result};
use crate::state::{Message, PartitionState, Progress, Shared, SpeedHandle};

/// Partition 0 of a config's first topic, applied in place.
pub struct DetachedPartition {
    shared: Arc<Shared>,
    state: Arc<PartitionState>,
}

impl DetachedPartition {
    /// Partition 0 of `config`'s first topic with its views (no fraud scoring, so its plan
    /// decodes only the fields the views use); rejected events are logged in `storage`.
    pub fn new(config: &Config, storage: Arc<dyn Storage>) -> Result<Self> {
        let views_only = Config {
            fraud: None,
            ..config.clone()
        };
        let shared = Arc::new(Shared {
            scoring: None,
            plan: Plan::new(&views_only),
            storage,
            segment_size: i64::try_from(config.speed.segment_size).unwrap_or(i64::MAX),
            partitions: RwLock::new(BTreeMap::new()),
            coverage: RwLock::new(Coverage::default()),
            lag: RwLock::new(BTreeMap::new()),
            listed: RwLock::new(BTreeSet::new()),
        });
        let topic = shared
            .plan
            .topics
            .first()
            .ok_or_else(|| Error::Internal("the config has no source".to_owned()))?;
        let tp = TopicPartition::new(topic.topic.clone(), 0);
        let rejected = RejectedLog::open(
            Arc::clone(&shared.storage),
            &tp.topic,
            0,
            Keep::BelowOffset(0),
        )?;
        let start = Progress {
            next_offset: 0,
            floor: 0,
        };
        let state = Arc::new(PartitionState::new(
            tp.clone(),
            start,
            BTreeMap::new(),
            rejected,
            None,
        ));
        if let Ok(mut partitions) = shared.partitions.write() {
            partitions.insert(tp, Arc::clone(&state));
        }
        Ok(Self { shared, state })
    }

    /// Decodes and applies `payloads` as the messages at offsets `first_offset` on; returns the
    /// events applied.
    pub fn apply(&self, first_offset: i64, payloads: &[Vec<u8>]) -> Result<u64> {
        let messages: Vec<Message<'_>> = payloads
            .iter()
            .zip(first_offset..)
            .map(|(payload, offset)| Message { offset, payload })
            .collect();
        let plan = &self.shared.plan.topics[0];
        self.state
            .apply(plan, &messages, self.shared.segment_size, 0, None)
    }

    /// A reader of the partition, as the serving layer reads the speed layer.
    pub fn reader(&self) -> SpeedHandle {
        SpeedHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Cells held, over every view.
    pub fn live_cells(&self) -> usize {
        let views = self.shared.plan.topics[0].views.len();
        self.state.cells_per_view(views).iter().sum()
    }
}
