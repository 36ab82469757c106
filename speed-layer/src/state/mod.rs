//! Speed state: per partition, per offset segment, one [`ViewState`] per view of the topic.
//! Segments let a published batch coverage drop exactly the events it includes.
//!
//! - `apply`: the writer side, the consumer thread decoding, scoring and applying messages.
//! - `read`: the reader side, [`SpeedHandle`], the serving layer's [`braid_shared::SpeedReader`].

mod apply;
mod read;

pub(crate) use apply::list_due_rejections;
pub use read::SpeedHandle;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use braid_shared::plan::{Plan, TopicPlan};
use braid_shared::{Coverage, Event, PartitionStatus, TopicPartition, ViewState};

use braid_store::rejected::RejectedLog;
use braid_store::{Storage, Version};

/// One consumed message, borrowed from the consumer.
pub(crate) struct Message<'a> {
    pub offset: i64,
    pub payload: &'a [u8],
}

/// The views' state over one range of `segment_size` offsets.
pub(crate) struct Segment {
    pub views: Vec<ViewState>,
    /// Every offset of the segment below this is applied.
    pub next_offset: i64,
}

/// Where a partition stands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Every offset below this has been read: applied, or, below `floor`, checked for
    /// rejections only. The consumer resumes here.
    pub next_offset: i64,
    /// Batch coverage: events below it are in a snapshot and never held here.
    pub floor: i64,
}

impl Progress {
    /// Every event below this is in the speed state or in the batch coverage.
    pub fn position(&self) -> i64 {
        self.next_offset.max(self.floor)
    }
}

/// What only the consumer thread touches.
pub(crate) struct Writer {
    pub rejected: RejectedLog,
    /// Events applied since the last checkpoint was taken.
    pub pending: u64,
    /// Decoded events, reused from batch to batch so decoding allocates nothing per message.
    pub events: Vec<Event>,
}

/// The state of one assigned partition. Readers lock the segment map and a segment only briefly;
/// the consumer decodes outside every lock and applies in small chunks, so neither side stalls
/// the other for long.
pub(crate) struct PartitionState {
    pub tp: TopicPartition,
    pub progress: RwLock<Progress>,
    /// Segment index -> segment. Only the newest segment changes.
    pub segments: RwLock<BTreeMap<i64, Arc<RwLock<Segment>>>>,
    pub writer: Mutex<Writer>,
    /// The version of the partition's checkpoint this owner read or wrote last; a checkpoint
    /// is written only over it, so an owner that lost the partition is refused. Apart from
    /// `writer`: a checkpoint is written while the consumer goes on applying.
    pub checkpoint: Mutex<Option<Version>>,
    /// A checkpoint of this partition is handed to the background writer and not written yet.
    pub writing: AtomicBool,
    /// Kafka timestamp of the newest message applied (0: none yet).
    pub last_message_ms: AtomicI64,
}

impl PartitionState {
    pub fn new(
        tp: TopicPartition,
        progress: Progress,
        segments: BTreeMap<i64, Segment>,
        rejected: RejectedLog,
        checkpoint: Option<Version>,
    ) -> Self {
        Self {
            tp,
            progress: RwLock::new(progress),
            segments: RwLock::new(
                segments
                    .into_iter()
                    .map(|(k, s)| (k, Arc::new(RwLock::new(s))))
                    .collect(),
            ),
            writer: Mutex::new(Writer {
                rejected,
                pending: 0,
                events: Vec::new(),
            }),
            checkpoint: Mutex::new(checkpoint),
            writing: AtomicBool::new(false),
            last_message_ms: AtomicI64::new(0),
        }
    }

    pub fn progress(&self) -> Progress {
        self.progress.read().map(|p| *p).unwrap_or(Progress {
            next_offset: 0,
            floor: 0,
        })
    }

    pub fn pending(&self) -> u64 {
        self.writer.lock().map(|w| w.pending).unwrap_or(0)
    }

    /// The segment of index `index`, created empty if new.
    fn segment(&self, index: i64, plan: &TopicPlan) -> crate::Result<Arc<RwLock<Segment>>> {
        if let Some(segment) = self
            .segments
            .read()
            .map_err(|_| poisoned(&self.tp))?
            .get(&index)
        {
            return Ok(Arc::clone(segment));
        }
        let mut map = self.segments.write().map_err(|_| poisoned(&self.tp))?;
        let segment = map.entry(index).or_insert_with(|| {
            Arc::new(RwLock::new(Segment {
                views: plan
                    .views
                    .iter()
                    .map(|v| ViewState::new(Arc::clone(v)))
                    .collect(),
                next_offset: 0,
            }))
        });
        Ok(Arc::clone(segment))
    }

    /// Drops the segments a batch coverage includes. `coverage` must be segment-aligned.
    /// Returns how many were dropped.
    pub fn drop_below(&self, coverage: i64, segment_size: i64) -> usize {
        let Ok(mut progress) = self.progress.write() else {
            return 0;
        };
        if coverage <= progress.floor {
            return 0;
        }
        // `next_offset` stays: the messages between it and the coverage are still read, for
        // their rejections only.
        progress.floor = coverage;
        let Ok(mut segments) = self.segments.write() else {
            return 0;
        };
        let before = segments.len();
        segments.retain(|&segment, _| segment * segment_size >= coverage);
        before - segments.len()
    }

    /// Calls `visit` with each segment at or above the batch coverage `coverage` asks from
    /// (read-locked in turn); returns the position those segments hold. Fails when events the
    /// coverage needs were already dropped for a newer snapshot.
    pub fn visit_segments(
        &self,
        tp: &TopicPartition,
        coverage: &Coverage,
        segment_size: i64,
        mut visit: impl FnMut(&Segment) -> braid_shared::Result<()>,
    ) -> braid_shared::Result<i64> {
        let covered = coverage.of(tp);
        let progress = self.progress();
        if covered < progress.floor {
            return Err(braid_shared::Error::CoverageDropped(format!(
                "{tp}: events below offset {} were dropped for a newer snapshot; asked from {covered}",
                progress.floor
            )));
        }
        // The position reported is what the visited segments hold, read under their locks.
        let mut position = progress.position();
        // Under the map's read lock, with no copy of it: the consumer never waits for the map
        // while it holds a segment's lock, so taking a segment's lock here cannot deadlock.
        let Ok(segments) = self.segments.read() else {
            return Ok(position);
        };
        // The first segment starting at or above `covered`.
        let size = segment_size.max(1);
        let first = covered.div_euclid(size) + i64::from(covered.rem_euclid(size) != 0);
        for segment in segments.range(first..).map(|(_, s)| s) {
            let Ok(segment) = segment.read() else {
                continue;
            };
            visit(&segment)?;
            position = position.max(segment.next_offset);
        }
        Ok(position)
    }

    /// The partition's status for a read that found it at `position`.
    pub fn status(&self, position: i64, lag_messages: Option<i64>) -> PartitionStatus {
        let last = self.last_message_ms.load(Ordering::Relaxed);
        PartitionStatus {
            position,
            lag_messages,
            last_message_ms: (last > 0).then_some(last),
        }
    }

    /// Every segment held, by index.
    pub fn segments(&self) -> Vec<(i64, Arc<RwLock<Segment>>)> {
        self.segments
            .read()
            .map(|map| map.iter().map(|(&k, s)| (k, Arc::clone(s))).collect())
            .unwrap_or_default()
    }

    /// Number of live cells per view.
    pub fn cells_per_view(&self, views: usize) -> Vec<usize> {
        let mut cells = vec![0; views];
        for (_, segment) in self.segments() {
            let Ok(segment) = segment.read() else {
                continue;
            };
            for (n, state) in cells.iter_mut().zip(&segment.views) {
                *n += state.len();
            }
        }
        cells
    }
}

pub(crate) fn poisoned(tp: &TopicPartition) -> crate::Error {
    crate::Error::Internal(format!("state of {tp} is unusable after a panic"))
}

/// Fraud scoring of one source's events as they are applied.
#[derive(Clone)]
pub(crate) struct Scoring {
    pub source: String,
    pub scorer: Arc<dyn braid_shared::fraud::EventScorer>,
}

/// The state the consumer thread writes and readers read.
pub(crate) struct Shared {
    pub scoring: Option<Scoring>,
    pub plan: Plan,
    pub storage: Arc<dyn Storage>,
    pub segment_size: i64,
    pub partitions: RwLock<BTreeMap<TopicPartition, Arc<PartitionState>>>,
    /// The newest batch coverage the speed layer has acted on.
    pub coverage: RwLock<Coverage>,
    /// Messages behind the broker's high watermark, per partition, from librdkafka statistics.
    pub lag: RwLock<BTreeMap<TopicPartition, i64>>,
    /// Every partition of the topics, as the consumer last listed them (empty until then, and
    /// with Kafka consumer groups): a read names those not held as missing.
    pub listed: RwLock<BTreeSet<TopicPartition>>,
}

impl Shared {
    pub fn partition(&self, tp: &TopicPartition) -> Option<Arc<PartitionState>> {
        self.partitions.read().ok()?.get(tp).cloned()
    }

    /// The listed partitions of `topic` this process does not hold.
    pub fn missing(&self, topic: &str) -> Vec<TopicPartition> {
        let Ok(listed) = self.listed.read() else {
            return Vec::new();
        };
        let held = self.partitions.read().ok();
        listed
            .iter()
            .filter(|tp| tp.topic == topic)
            .filter(|tp| !held.as_ref().is_some_and(|h| h.contains_key(*tp)))
            .cloned()
            .collect()
    }

    pub fn assigned(&self) -> Vec<(TopicPartition, Arc<PartitionState>)> {
        self.partitions
            .read()
            .map(|map| {
                map.iter()
                    .map(|(k, v)| (k.clone(), Arc::clone(v)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_shared::aggregate::MetricState;
    use braid_shared::view::PointKey;
    use braid_shared::{CellQuery, Config, SpeedReader};
    use braid_store::rejected::{Keep, read_rejected};

    fn shared(dir: &std::path::Path) -> (Config, Arc<Shared>) {
        let config = Config::from_toml(
            r#"
[[source]]
name = "s"
topic = "t"
event_time = "ts"
[[view]]
name = "v"
source = "s"
group_by = ["k"]
granularity = "1m"
[view.metrics]
n = "count"
"#,
        )
        .unwrap();
        let shared = Arc::new(Shared {
            scoring: None,
            plan: Plan::new(&config),
            storage: Arc::new(braid_store::LocalStorage::new(dir)),
            segment_size: 10,
            partitions: RwLock::new(BTreeMap::new()),
            coverage: RwLock::new(Coverage::default()),
            lag: RwLock::new(BTreeMap::new()),
            listed: RwLock::new(BTreeSet::new()),
        });
        (config, shared)
    }

    /// The payloads of `range` as messages at their index's offset.
    fn messages(payloads: &[Vec<u8>], range: std::ops::Range<usize>) -> Vec<Message<'_>> {
        range
            .map(|i| Message {
                offset: i as i64,
                payload: &payloads[i],
            })
            .collect()
    }

    #[test]
    fn messages_a_snapshot_overtook_are_still_checked_for_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let (_config, shared) = shared(dir.path());
        let apply = |state: &PartitionState, messages: &[Message<'_>]| {
            state.apply(&shared.plan.topics[0], messages, 10, 0, None)
        };
        let tp = TopicPartition::new("t".to_owned(), 0);
        let rejected =
            RejectedLog::open(Arc::clone(&shared.storage), "t", 0, Keep::BelowOffset(0)).unwrap();
        let start = Progress {
            next_offset: 0,
            floor: 0,
        };
        let state = PartitionState::new(tp, start, BTreeMap::new(), rejected, None);
        let good = br#"{"ts": 60000, "k": "a"}"#.to_vec();
        let bad = b"{not json".to_vec();
        let payloads: Vec<Vec<u8>> = (0..30)
            .map(|i| {
                if i % 7 == 3 {
                    bad.clone()
                } else {
                    good.clone()
                }
            })
            .collect();
        let messages = |range: std::ops::Range<usize>| messages(&payloads, range);
        assert_eq!(apply(&state, &messages(0..5)).unwrap(), 4);
        // A snapshot covering offsets below 20 is published while the partition is at 5.
        state.drop_below(20, 10);
        assert_eq!(state.progress().position(), 20);
        assert_eq!(state.progress().next_offset, 5);
        // Offsets 5..20 only list their rejections; 20..30 are applied.
        let applied = apply(&state, &messages(5..30)).unwrap();
        assert_eq!(applied, 9, "offsets 20..30 without the malformed 24");
        assert_eq!(state.progress().position(), 30);
        state.writer.lock().unwrap().rejected.sync().unwrap();
        let offsets: Vec<i64> = read_rejected(shared.storage.as_ref(), "t")
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, vec![3, 10, 17, 24]);
        assert_eq!(state.cells_per_view(1), vec![1]);
    }

    #[test]
    fn a_point_visit_sees_exactly_the_cells_a_filtered_read_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (_config, shared) = shared(dir.path());
        let keys = ["a", "b", "c"];
        for partition in 0..2 {
            let tp = TopicPartition::new("t".to_owned(), partition);
            let rejected = RejectedLog::open(
                Arc::clone(&shared.storage),
                "t",
                partition,
                Keep::BelowOffset(0),
            )
            .unwrap();
            let start = Progress {
                next_offset: 0,
                floor: 0,
            };
            let state = PartitionState::new(tp.clone(), start, BTreeMap::new(), rejected, None);
            // 35 offsets over 4 segments of 10; keys and minutes vary with the offset.
            let payloads: Vec<Vec<u8>> = (0..35)
                .map(|i| {
                    let key = keys[(i * 7 + partition as usize) % 3];
                    format!(r#"{{"ts": {}, "k": "{key}"}}"#, (i % 5) * 60_000).into_bytes()
                })
                .collect();
            state
                .apply(
                    &shared.plan.topics[0],
                    &messages(&payloads, 0..35),
                    10,
                    0,
                    None,
                )
                .unwrap();
            shared
                .partitions
                .write()
                .unwrap()
                .insert(tp, Arc::new(state));
        }
        let handle = SpeedHandle {
            shared: Arc::clone(&shared),
        };
        let mut coverage = Coverage::default();
        coverage
            .0
            .insert(TopicPartition::new("t".to_owned(), 0), 10);
        let count = &shared.plan.topics[0].views[0].metrics[0].expr;
        for key in keys {
            for (from, to) in [(i64::MIN, i64::MAX), (60_000, 180_000), (240_000, 240_001)] {
                let value = braid_shared::Value::Str(key.into());
                let query = CellQuery {
                    from_ms: from,
                    to_ms: to,
                    filters: vec![(0, value.clone())],
                };
                let read = handle.read("v", &query, &coverage).unwrap();
                let mut expected: BTreeMap<i64, MetricState> = BTreeMap::new();
                for (cell, states) in read.state.cells() {
                    expected.insert(cell.bucket_ms, states[0].clone());
                }
                let point = PointKey::new(braid_shared::view::GroupKey(Box::new([value])));
                let mut visited: BTreeMap<i64, MetricState> = BTreeMap::new();
                let positions = handle
                    .visit_point(
                        "v",
                        &point,
                        (from, to),
                        &coverage,
                        true,
                        &mut |bucket, states| {
                            visited
                                .entry(bucket)
                                .or_insert_with(|| MetricState::empty(count))
                                .merge(&states[0])
                        },
                    )
                    .unwrap();
                assert!(!expected.is_empty() || to - from == 1, "{key} {from}..{to}");
                assert_eq!(visited, expected, "{key} {from}..{to}");
                assert_eq!(positions.partitions, read.partitions);
                let quiet = handle
                    .visit_point(
                        "v",
                        &point,
                        (from, to),
                        &coverage,
                        false,
                        &mut |_, _| Ok(()),
                    )
                    .unwrap();
                assert!(quiet.partitions.is_empty());
            }
        }
        // Below what a newer snapshot dropped: refused, as a read is.
        shared.partitions.read().unwrap()[&TopicPartition::new("t".to_owned(), 1)]
            .drop_below(20, 10);
        let point = PointKey::new(braid_shared::view::GroupKey(Box::new([
            braid_shared::Value::Str("a".into()),
        ])));
        let refused =
            handle.visit_point("v", &point, (0, i64::MAX), &coverage, false, &mut |_, _| {
                Ok(())
            });
        assert!(
            matches!(refused, Err(braid_shared::Error::CoverageDropped(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_zombie_owner_cannot_overwrite_the_checkpoint_its_successor_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (_config, shared) = shared(dir.path());
        let plan = &shared.plan.topics[0];
        let tp = TopicPartition::new("t".to_owned(), 0);
        let payloads: Vec<Vec<u8>> = (0..30)
            .map(|i| format!(r#"{{"ts": {}, "k": "a"}}"#, i * 1_000).into_bytes())
            .collect();
        let messages = |range: std::ops::Range<usize>| messages(&payloads, range);
        let owner = |restored: Option<&[u8]>, version: Option<Version>| {
            let rejected =
                RejectedLog::open(Arc::clone(&shared.storage), "t", 0, Keep::BelowOffset(0))
                    .unwrap();
            let (progress, segments) = match restored {
                Some(bytes) => {
                    let restored =
                        crate::checkpoint::decode(plan, &tp, shared.segment_size, bytes).unwrap();
                    (restored.progress, restored.segments)
                }
                None => (
                    Progress {
                        next_offset: 0,
                        floor: 0,
                    },
                    BTreeMap::new(),
                ),
            };
            PartitionState::new(tp.clone(), progress, segments, rejected, version)
        };
        let key = braid_store::layout::speed_checkpoint("t", 0);
        let zombie = owner(None, None);
        zombie.apply(plan, &messages(0..10), 10, 0, None).unwrap();
        crate::checkpoint::write(&shared, plan, &zombie).unwrap();
        // The partition is reassigned while the zombie is paused: the successor restores from
        // its checkpoint and moves it on.
        let stored = shared.storage.get(&key).unwrap().unwrap();
        let successor = owner(Some(&stored.bytes), Some(stored.version));
        assert_eq!(successor.progress().next_offset, 10);
        successor
            .apply(plan, &messages(10..20), 10, 0, None)
            .unwrap();
        crate::checkpoint::write(&shared, plan, &successor).unwrap();
        let written = shared.storage.get(&key).unwrap().unwrap();
        // The zombie resumes with what it held: its checkpoint is refused, the successor's
        // stays.
        zombie.apply(plan, &messages(10..30), 10, 0, None).unwrap();
        let refused = crate::checkpoint::write(&shared, plan, &zombie);
        assert!(refused.is_err(), "a zombie overwrote the checkpoint");
        let kept = shared.storage.get(&key).unwrap().unwrap();
        assert_eq!(kept.bytes, written.bytes);
        let restored =
            crate::checkpoint::decode(plan, &tp, shared.segment_size, &kept.bytes).unwrap();
        assert_eq!(restored.progress.next_offset, 20);

        // The same through the background writer, as the consumer checkpoints on schedule.
        let background = crate::checkpoint::Background::start(Arc::clone(&shared)).unwrap();
        let successor = Arc::new(successor);
        successor
            .apply(plan, &messages(20..25), 10, 0, None)
            .unwrap();
        background.submit(plan, &successor, 10).unwrap();
        assert_eq!(background.wait().unwrap(), vec![(tp.clone(), 25)]);
        assert_eq!(successor.pending(), 0);
        let written = shared.storage.get(&key).unwrap().unwrap();
        let restored =
            crate::checkpoint::decode(plan, &tp, shared.segment_size, &written.bytes).unwrap();
        assert_eq!(restored.progress.next_offset, 25);
        // The zombie's is refused off the consumer thread too, and the refusal is reported.
        let zombie = Arc::new(zombie);
        zombie.apply(plan, &messages(30..30), 10, 0, None).unwrap();
        background.submit(plan, &zombie, 10).unwrap();
        assert!(
            background.wait().is_err(),
            "a zombie overwrote the checkpoint"
        );
        assert_eq!(
            shared.storage.get(&key).unwrap().unwrap().bytes,
            written.bytes
        );
        // Nothing is reported twice.
        assert_eq!(background.written().unwrap(), vec![]);
    }
}
