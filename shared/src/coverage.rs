//! Offset coverage: what a batch snapshot includes, per Kafka partition, and how the speed layer
//! is asked for exactly the rest.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::aggregate::MetricState;
use crate::error::{Error, Result};
use crate::event::Value;
use crate::view::{GroupKey, PointKey, ViewState};

/// A Kafka topic partition, written `topic/partition` in files and answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

impl std::str::FromStr for TopicPartition {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (topic, partition) = text
            .rsplit_once('/')
            .ok_or_else(|| format!("{text:?} is not topic/partition"))?;
        let partition = partition
            .parse()
            .map_err(|_| format!("{text:?} has no partition number"))?;
        Ok(Self::new(topic, partition))
    }
}

impl Serialize for TopicPartition {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicPartition {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Per partition, the offset below which every event is included. A partition not listed is
/// covered below offset 0, i.e. not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Coverage(pub BTreeMap<TopicPartition, i64>);

impl Coverage {
    /// The covered offset of a partition (0 when not listed).
    pub fn of(&self, tp: &TopicPartition) -> i64 {
        self.0.get(tp).copied().unwrap_or(0)
    }

    /// Checks that every offset falls on a segment boundary.
    pub fn check_aligned(&self, segment_size: u64) -> Result<()> {
        let size = i64::try_from(segment_size).unwrap_or(i64::MAX);
        match self
            .0
            .iter()
            .find(|(_, offset)| **offset < 0 || **offset % size != 0)
        {
            None => Ok(()),
            Some((tp, offset)) => Err(Error::CoverageMisaligned(format!(
                "coverage of {tp} at offset {offset} is not a multiple of the segment size {segment_size}"
            ))),
        }
    }
}

/// The published batch snapshot, as the batch layer announces it (`batch/CURRENT.json`, see
/// `braid_store::layout`). Readers use nothing the pointer does not name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPointer {
    pub run_id: String,
    pub coverage: Coverage,
    /// RFC 3339 time the snapshot was published.
    pub finished_at: String,
    /// Storage key of the snapshot's manifest.
    pub manifest: String,
}

/// Which cells of a view a reader wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellQuery {
    /// Bucket starts from this time (inclusive, epoch ms) ...
    pub from_ms: i64,
    /// ... to this time (exclusive).
    pub to_ms: i64,
    /// Required values, by index into the view's `group_by`.
    pub filters: Vec<(usize, Value)>,
}

impl CellQuery {
    /// Every cell.
    pub fn all() -> Self {
        Self {
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            filters: Vec::new(),
        }
    }

    /// The cells of one group key in the buckets `[from_ms, to_ms)`.
    pub fn point(key: &PointKey, (from_ms, to_ms): (i64, i64)) -> Self {
        Self {
            from_ms,
            to_ms,
            filters: key.group.0.iter().cloned().enumerate().collect(),
        }
    }

    /// The one group key the filters name, when they name a value for each of a view's
    /// `fields` group-by fields (a point read); `None` otherwise.
    pub fn point_key(&self, fields: usize) -> Option<GroupKey> {
        if fields == 0 || self.filters.len() != fields {
            return None;
        }
        let mut key = vec![None; fields];
        for (i, value) in &self.filters {
            match key.get_mut(*i) {
                Some(slot @ None) => *slot = Some(value.clone()),
                _ => return None,
            }
        }
        key.into_iter()
            .collect::<Option<Box<[Value]>>>()
            .map(GroupKey)
    }
}

/// The speed layer's part of an answer: cells above a coverage, and how far it has read.
#[derive(Debug, Clone)]
pub struct SpeedCells {
    pub state: ViewState,
    /// Per partition held, as of this read: `position` is the next offset to be applied
    /// (everything below it is in `state`), with the lag seen at the same moment.
    pub partitions: BTreeMap<TopicPartition, PartitionStatus>,
    /// Partitions of the topic no speed instance answered for (a rebalance under way, an
    /// instance gone): their events above the coverage are not in `state`. Always empty when
    /// the speed layer runs in the same process.
    pub missing: Vec<TopicPartition>,
}

/// One partition's cells above a coverage, as the speed instance holding it read them.
#[derive(Debug, Clone)]
pub struct PartitionCells {
    pub tp: TopicPartition,
    pub status: PartitionStatus,
    pub state: ViewState,
}

impl SpeedCells {
    /// The cells of `parts` (states of `view`, each already selected by the query asked),
    /// merged into one state: the first part's state is the base, taken, not copied.
    pub fn merged(
        view: &std::sync::Arc<crate::ViewDef>,
        parts: impl IntoIterator<Item = PartitionCells>,
        missing: Vec<TopicPartition>,
    ) -> Result<Self> {
        let mut state: Option<ViewState> = None;
        let mut partitions = BTreeMap::new();
        for part in parts {
            partitions.insert(part.tp, part.status);
            match &mut state {
                None => state = Some(part.state),
                Some(state) => state.merge(&part.state)?,
            }
        }
        Ok(Self {
            state: state.unwrap_or_else(|| ViewState::new(std::sync::Arc::clone(view))),
            partitions,
            missing,
        })
    }

    /// Visits the cells of one group key in the buckets `[from_ms, to_ms)`, as
    /// [`SpeedReader::visit_point`] does; with `statuses`, says where they were read from.
    pub fn visit_point(
        self,
        key: &PointKey,
        (from_ms, to_ms): (i64, i64),
        statuses: bool,
        visit: &mut dyn FnMut(i64, &[MetricState]) -> Result<()>,
    ) -> Result<SpeedPositions> {
        self.state.visit_point(key, from_ms, to_ms, visit)?;
        Ok(SpeedPositions {
            partitions: if statuses {
                self.partitions
            } else {
                BTreeMap::new()
            },
            missing: self.missing,
        })
    }

    /// Per partition held, the next offset to be applied.
    pub fn positions(&self) -> BTreeMap<TopicPartition, i64> {
        self.partitions
            .iter()
            .map(|(tp, s)| (tp.clone(), s.position))
            .collect()
    }
}

/// One partition as the speed layer holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The next offset to apply: everything below it is held (or covered by the batch layer).
    pub position: i64,
    /// Messages on the broker not yet applied, as of the last broker statistics.
    pub lag_messages: Option<i64>,
    /// Kafka timestamp (epoch ms) of the newest message applied.
    pub last_message_ms: Option<i64>,
}

/// How the serving layer (and fraud features) read the speed layer: one read shape, the cells of
/// a view matching a query above a coverage ([`SpeedReader::read`]); `visit_point` and
/// `read_async` are the same read, done without copying cells or without blocking a thread.
pub trait SpeedReader: Send + Sync {
    /// Every partition the speed layer holds now.
    fn status(&self) -> BTreeMap<TopicPartition, PartitionStatus>;

    /// The cells of `view` matching `query`, from events at or above `coverage` only. Fails with
    /// [`Error::CoverageDropped`] when the speed layer has already dropped events the coverage
    /// needs (a newer snapshot was published): re-read the snapshot pointer and ask again; with
    /// [`Error::CoverageMisaligned`] for a coverage off the segment grid (a bug).
    fn read(&self, view: &str, query: &CellQuery, coverage: &Coverage) -> Result<SpeedCells>;

    /// Visits, without copying them, the cells of one group key of `view` in the buckets
    /// `[from_ms, to_ms)` from events at or above `coverage`: the cells [`SpeedReader::read`]
    /// would select for that key, for a reader that folds them (fraud features), not keeps
    /// them. With `statuses`, says where they were read from as `read` does; otherwise
    /// [`SpeedPositions::partitions`] is left empty.
    fn visit_point(
        &self,
        view: &str,
        key: &PointKey,
        (from_ms, to_ms): (i64, i64),
        coverage: &Coverage,
        statuses: bool,
        visit: &mut dyn FnMut(i64, &[MetricState]) -> Result<()>,
    ) -> Result<SpeedPositions> {
        let span = (from_ms, to_ms);
        self.read(view, &CellQuery::point(key, span), coverage)?
            .visit_point(key, span, statuses, visit)
    }

    /// [`SpeedReader::read`] for a reader that waits on the network (speed instances in other
    /// processes): a future the caller's runtime drives, so no thread blocks while the answers
    /// travel. `None`, the default, for a reader that answers from memory: call `read`.
    fn read_async<'a>(
        &'a self,
        _view: &'a str,
        _query: &'a CellQuery,
        _coverage: &'a Coverage,
    ) -> Option<SpeedFuture<'a>> {
        None
    }
}

/// What [`SpeedReader::read_async`] answers with.
pub type SpeedFuture<'a> = Pin<Box<dyn Future<Output = Result<SpeedCells>> + Send + 'a>>;

/// Where the cells of a [`SpeedReader::visit_point`] were read from: [`SpeedCells`] without
/// the cells.
#[derive(Debug, Clone, Default)]
pub struct SpeedPositions {
    pub partitions: BTreeMap<TopicPartition, PartitionStatus>,
    pub missing: Vec<TopicPartition>,
}
