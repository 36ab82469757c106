//! The cells of one view: (event-time bucket, group key) -> one state per metric. Cells are
//! grouped by bucket so time ranges are read without scanning the whole view.

use crate::error::Invalid;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::ViewDef;
use super::bucket::{Bucket, key_hash};
use crate::aggregate::MetricState;
use crate::coverage::CellQuery;
use crate::error::{Error, Result};
use crate::event::{Event, Value};

/// Version byte that starts an encoded view state.
pub const VIEW_STATE_FORMAT_VERSION: u8 = 1;

/// The group-by values of a cell, in the view's `group_by` order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupKey(pub Box<[Value]>);

impl Hash for GroupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for value in &self.0 {
            value.hash(state);
        }
    }
}

/// Identifies a cell: bucket start (epoch ms) and group key. Ordered by bucket, then key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CellKey {
    pub bucket_ms: i64,
    pub group: GroupKey,
}

/// One finalized cell, ready to answer with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub bucket_ms: i64,
    pub group: Vec<(String, Value)>,
    pub metrics: Vec<(String, serde_json::Value)>,
}

/// Where each group key has cells, by the key's hash: (bucket, cell index in the bucket), so a
/// point read goes straight to the key's own cells (a 30-day window of minutes: not 43,200
/// bucket probes, and no probe of a bucket's table). Built by the first point read of a state
/// (or [`ViewState::index_keys`]) and then kept up to date by every cell added, so only states
/// that serve point reads pay for it. Cells are never removed from a bucket nor moved within
/// it, so an index stays valid. Two keys of one hash share a list: a listed cell may hold the
/// other key (its key is compared), but every cell of the key is listed, once.
#[derive(Debug, Clone, Default)]
struct LiveIndex(HashMap<u64, Vec<(i64, u32)>, rustc_hash::FxBuildHasher>);

impl LiveIndex {
    fn of(buckets: &BTreeMap<i64, Bucket>) -> Self {
        let mut index = Self::default();
        for (&bucket_ms, bucket) in buckets {
            for (cell, (key, _)) in bucket.cells().enumerate() {
                index.add(key_hash(key.iter()), bucket_ms, cell);
            }
        }
        index
    }

    fn add(&mut self, hash: u64, bucket: i64, cell: usize) {
        // A bucket's cells are counted in `u32` (see `Bucket`).
        self.0.entry(hash).or_default().push((bucket, cell as u32));
    }
}

/// A group key with the hash its point reads look it up by, computed once for every state a
/// read visits.
#[derive(Debug, Clone)]
pub struct PointKey {
    pub group: GroupKey,
    hash: u64,
}

impl PointKey {
    pub fn new(group: GroupKey) -> Self {
        let hash = key_hash(group.0.iter());
        Self { group, hash }
    }
}

/// The state of one view: mergeable cells. Built by `apply` in both layers and compared in
/// tests against `recompute`.
#[derive(Debug, Clone)]
pub struct ViewState {
    view: Arc<ViewDef>,
    buckets: BTreeMap<i64, Bucket>,
    len: usize,
    /// Set by the first point read (through `&self`, under a reader's lock); maintained by
    /// every later change (through `&mut self`).
    keys: OnceLock<LiveIndex>,
}

impl PartialEq for ViewState {
    fn eq(&self, other: &Self) -> bool {
        self.same_view(other) && self.buckets == other.buckets
    }
}

#[derive(Serialize, Deserialize)]
struct Encoded {
    fingerprint: u64,
    cells: Vec<(CellKey, Vec<MetricState>)>,
}

/// [`Encoded`] of a state's cells as they are, without copying them: serialized the same.
#[derive(Serialize)]
#[serde(rename = "Encoded")]
struct EncodedRef<'a> {
    fingerprint: u64,
    cells: CellsRef<'a>,
}

/// Every cell of a state, as [`Encoded::cells`] serializes them.
struct CellsRef<'a>(&'a ViewState);

/// [`CellKey`], borrowed.
#[derive(Serialize)]
#[serde(rename = "CellKey")]
struct CellKeyRef<'a> {
    bucket_ms: i64,
    group: GroupKeyRef<'a>,
}

/// [`GroupKey`], borrowed.
#[derive(Serialize)]
#[serde(rename = "GroupKey")]
struct GroupKeyRef<'a>(&'a [Value]);

impl Serialize for CellsRef<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len))?;
        for (&bucket_ms, bucket) in &self.0.buckets {
            for (group, states) in bucket.cells() {
                let key = CellKeyRef {
                    bucket_ms,
                    group: GroupKeyRef(group),
                };
                seq.serialize_element(&(key, states))?;
            }
        }
        seq.end()
    }
}

/// The bucket of `buckets` starting at `bucket_ms`, created empty for `view`'s cells if need be.
fn bucket_in<'a>(
    buckets: &'a mut BTreeMap<i64, Bucket>,
    view: &ViewDef,
    bucket_ms: i64,
) -> &'a mut Bucket {
    buckets
        .entry(bucket_ms)
        .or_insert_with(|| Bucket::new(view.group_by.len(), view.metrics.len()))
}

impl ViewState {
    pub fn new(view: Arc<ViewDef>) -> Self {
        Self {
            view,
            buckets: BTreeMap::new(),
            len: 0,
            keys: OnceLock::new(),
        }
    }

    /// The reference computation: a plain fold of `events`, one at a time, into ordered cells.
    /// Deliberately independent of [`ViewState::apply`]; every layer's tests compare with it.
    pub fn recompute(view: Arc<ViewDef>, events: &[Event]) -> Self {
        let mut cells: BTreeMap<CellKey, Vec<MetricState>> = BTreeMap::new();
        let mut scratch = String::new();
        for event in events {
            let group = view
                .group_by
                .iter()
                .map(|f| event.values.get(f.slot).cloned().unwrap_or(Value::Null))
                .collect();
            let key = CellKey {
                bucket_ms: view.bucket_of(event.time_ms),
                group: GroupKey(group),
            };
            let states = cells.entry(key).or_insert_with(|| {
                view.metrics
                    .iter()
                    .map(|m| MetricState::empty(&m.expr))
                    .collect()
            });
            for (state, metric) in states.iter_mut().zip(&view.metrics) {
                let value = metric
                    .slot
                    .and_then(|s| event.values.get(s))
                    .unwrap_or(&Value::Null);
                state.update(value, &mut scratch);
            }
        }
        let mut state = Self::new(view);
        for (key, states) in cells {
            let hash = key_hash(key.group.0.iter());
            state.insert_new(key, hash, states);
        }
        state
    }

    pub fn view(&self) -> &Arc<ViewDef> {
        &self.view
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every cell, ordered by bucket (keys within a bucket in no particular order).
    pub fn cells(&self) -> impl Iterator<Item = (CellKey, &[MetricState])> {
        self.buckets.iter().flat_map(|(&bucket_ms, bucket)| {
            bucket.cells().map(move |(group, states)| {
                (
                    CellKey {
                        bucket_ms,
                        group: GroupKey(group.into()),
                    },
                    states,
                )
            })
        })
    }

    /// Every cell, moved out, ordered by bucket.
    pub fn into_cells(self) -> impl Iterator<Item = (CellKey, Box<[MetricState]>)> {
        self.buckets.into_iter().flat_map(|(bucket_ms, bucket)| {
            bucket.into_cells().map(move |(group, states)| {
                (
                    CellKey {
                        bucket_ms,
                        group: GroupKey(group),
                    },
                    states,
                )
            })
        })
    }

    pub fn cell(&self, key: &CellKey) -> Option<&[MetricState]> {
        let bucket = self.buckets.get(&key.bucket_ms)?;
        let cell = bucket.find(key_hash(key.group.0.iter()), &key.group.0)?;
        Some(bucket.states(cell))
    }

    fn empty_states(&self) -> Box<[MetricState]> {
        self.view
            .metrics
            .iter()
            .map(|m| MetricState::empty(&m.expr))
            .collect()
    }

    /// Adds a cell that is not in the state yet; `hash` is its key's [`key_hash`].
    fn insert_new(
        &mut self,
        key: CellKey,
        hash: u64,
        states: impl IntoIterator<Item = MetricState>,
    ) {
        let cell =
            bucket_in(&mut self.buckets, &self.view, key.bucket_ms).push(hash, key.group.0, states);
        self.len += 1;
        if let Some(keys) = self.keys.get_mut() {
            keys.add(hash, key.bucket_ms, cell);
        }
    }

    /// Applies a batch of decoded events of the view's source.
    pub fn apply(&mut self, events: &[Event]) {
        let mut scratch = String::new();
        let view = Arc::clone(&self.view);
        let width = view.group_by.len();
        for event in events {
            let bucket_ms = view.bucket_of(event.time_ms);
            let key = |i: usize| {
                event
                    .values
                    .get(view.group_by[i].slot)
                    .unwrap_or(&Value::Null)
            };
            let hash = key_hash((0..width).map(key));
            let bucket = bucket_in(&mut self.buckets, &view, bucket_ms);
            let found = bucket.find_by(hash, |k| k.iter().enumerate().all(|(i, v)| key(i) == v));
            let cell = match found {
                Some(cell) => cell,
                None => {
                    self.len += 1;
                    let cell = bucket.push(
                        hash,
                        (0..width).map(|i| key(i).clone()),
                        view.metrics.iter().map(|m| MetricState::empty(&m.expr)),
                    );
                    if let Some(keys) = self.keys.get_mut() {
                        keys.add(hash, bucket_ms, cell);
                    }
                    cell
                }
            };
            for (state, metric) in bucket.states_mut(cell).iter_mut().zip(&view.metrics) {
                let value = match metric.slot {
                    Some(slot) => event.values.get(slot).unwrap_or(&Value::Null),
                    None => &Value::Null,
                };
                state.update(value, &mut scratch);
            }
        }
    }

    /// Merges a cell whose states are owned: adopted as they are when the cell is new (after
    /// checking they fit the view), merged otherwise.
    pub fn absorb_cell(&mut self, key: CellKey, states: Box<[MetricState]>) -> Result<()> {
        let hash = key_hash(key.group.0.iter());
        let group = Cow::Owned(key.group.0.into_vec());
        self.merge_hashed(key.bucket_ms, group, hash, Cow::Owned(states.into_vec()))
    }

    /// Merges one cell's states into this view's cell (a copy of them, when the cell is new).
    pub fn merge_cell(&mut self, key: CellKey, states: &[MetricState]) -> Result<()> {
        let hash = key_hash(key.group.0.iter());
        let group = Cow::Owned(key.group.0.into_vec());
        self.merge_hashed(key.bucket_ms, group, hash, Cow::Borrowed(states))
    }

    /// [`ViewState::merge_cell`] of the cell of `group` (whose [`key_hash`] is `hash`) in bucket
    /// `bucket_ms`. A borrowed key is copied, and owned states are adopted without a copy, only
    /// when the cell is new.
    fn merge_hashed(
        &mut self,
        bucket_ms: i64,
        group: Cow<'_, [Value]>,
        hash: u64,
        states: Cow<'_, [MetricState]>,
    ) -> Result<()> {
        if states.len() != self.view.metrics.len() || group.len() != self.view.group_by.len() {
            return Err(Error::Mismatch {
                what: "view cells",
                reason: format!(
                    "cell of {} keys and {} metrics does not fit view {}",
                    group.len(),
                    states.len(),
                    self.view.name
                ),
            });
        }
        if let Some(bucket) = self.buckets.get_mut(&bucket_ms)
            && let Some(cell) = bucket.find(hash, &group)
        {
            for (m, theirs) in bucket.states_mut(cell).iter_mut().zip(states.iter()) {
                m.merge(theirs)?;
            }
            return Ok(());
        }
        let key = CellKey {
            bucket_ms,
            group: GroupKey(group.into_owned().into_boxed_slice()),
        };
        // A new cell adopts states that fit the view; others are merged into identities,
        // which names what does not fit.
        if states
            .iter()
            .zip(&self.view.metrics)
            .all(|(s, m)| s.fits(&m.expr))
        {
            self.insert_new(key, hash, states.into_owned());
            return Ok(());
        }
        let mut fresh = self.empty_states();
        for (m, theirs) in fresh.iter_mut().zip(states.iter()) {
            m.merge(theirs)?;
        }
        self.insert_new(key, hash, fresh.into_vec());
        Ok(())
    }

    /// Builds the key index now (a batch snapshot's views, before readers arrive), instead of
    /// on the first point read.
    pub fn index_keys(&self) {
        self.keys.get_or_init(|| LiveIndex::of(&self.buckets));
    }

    /// Whether both are states of one definition (the same `Arc` in the common case).
    fn same_view(&self, other: &ViewState) -> bool {
        Arc::ptr_eq(&self.view, &other.view) || self.view.fingerprint() == other.view.fingerprint()
    }

    fn check_same_view(&self, other: &ViewState) -> Result<()> {
        if self.same_view(other) {
            return Ok(());
        }
        Err(Error::Mismatch {
            what: "view states",
            reason: format!(
                "view {} and view {} have different definitions",
                self.view.name, other.view.name
            ),
        })
    }

    /// Folds another state of the same view definition into this one.
    pub fn merge(&mut self, other: &ViewState) -> Result<()> {
        self.merge_matching(other, &CellQuery::all())
    }

    /// Folds the cells of `other` that `query` selects into this state.
    pub fn merge_matching(&mut self, other: &ViewState, query: &CellQuery) -> Result<()> {
        self.check_same_view(other)?;
        if query.from_ms >= query.to_ms {
            return Ok(());
        }
        // Filters on every group-by field name one key: visit the buckets the key has cells in.
        if let Some(key) = self.point_key(query) {
            let key = PointKey::new(key);
            return other.visit_point(&key, query.from_ms, query.to_ms, |bucket_ms, states| {
                self.merge_hashed(
                    bucket_ms,
                    Cow::Borrowed(&key.group.0),
                    key.hash,
                    Cow::Borrowed(states),
                )
            });
        }
        for (&bucket_ms, bucket) in other.buckets.range(query.from_ms..query.to_ms) {
            for (group, states) in bucket.cells() {
                let selected = query
                    .filters
                    .iter()
                    .all(|(i, wanted)| group.get(*i).is_some_and(|v| v == wanted));
                if selected {
                    let hash = key_hash(group.iter());
                    self.merge_hashed(
                        bucket_ms,
                        Cow::Borrowed(group),
                        hash,
                        Cow::Borrowed(states),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Visits the cells of one group key in the buckets `[from_ms, to_ms)`, in bucket order,
    /// without copying them: only the key's own buckets are looked at, through the state's key index.
    pub fn visit_point(
        &self,
        key: &PointKey,
        from_ms: i64,
        to_ms: i64,
        mut visit: impl FnMut(i64, &[MetricState]) -> Result<()>,
    ) -> Result<()> {
        if from_ms >= to_ms {
            return Ok(());
        }
        let keys = self.keys.get_or_init(|| LiveIndex::of(&self.buckets));
        let Some(listed) = keys.0.get(&key.hash) else {
            return Ok(());
        };
        let mut visit_cell = |(bucket_ms, cell): (i64, u32)| {
            let Some(bucket) = self.buckets.get(&bucket_ms) else {
                return Ok(());
            };
            let cell = cell as usize;
            if bucket.key(cell) == &*key.group.0 {
                visit(bucket_ms, bucket.states(cell))
            } else {
                Ok(())
            }
        };
        let window = from_ms..to_ms;
        // Cells are mostly added in bucket order: then the list is visited as it is.
        if listed.is_sorted_by(|a, b| a.0 < b.0) {
            for &listing in listed.iter().filter(|(b, _)| window.contains(b)) {
                visit_cell(listing)?;
            }
            return Ok(());
        }
        let mut cells: Vec<(i64, u32)> = listed
            .iter()
            .copied()
            .filter(|(b, _)| window.contains(b))
            .collect();
        // In bucket order; two keys of one hash in one bucket list two cells, one of them the
        // key's.
        cells.sort_unstable();
        for listing in cells {
            visit_cell(listing)?;
        }
        Ok(())
    }

    /// The one group key a query's filters select, when they fix every group-by field.
    fn point_key(&self, query: &CellQuery) -> Option<GroupKey> {
        query.point_key(self.view.group_by.len())
    }

    /// Every cell finalized, ordered by bucket then group key.
    pub fn rows(&self) -> Vec<Row> {
        let mut cells: Vec<(CellKey, &[MetricState])> = self.cells().collect();
        cells.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        cells
            .into_iter()
            .map(|(key, states)| Row {
                bucket_ms: key.bucket_ms,
                group: self
                    .view
                    .group_by
                    .iter()
                    .zip(key.group.0.iter())
                    .map(|(f, v)| (f.name.clone(), v.clone()))
                    .collect(),
                metrics: self
                    .view
                    .metrics
                    .iter()
                    .zip(states.iter())
                    .map(|(m, s)| (m.name.clone(), s.finalize(&m.expr)))
                    .collect(),
            })
            .collect()
    }

    /// Encodes the state: a version byte, then the view fingerprint and every cell (postcard),
    /// serialized from the cells where they are.
    pub fn encode(&self) -> Vec<u8> {
        let encoded = EncodedRef {
            fingerprint: self.view.fingerprint(),
            cells: CellsRef(self),
        };
        postcard::to_extend(&encoded, vec![VIEW_STATE_FORMAT_VERSION])
            .unwrap_or_else(|_| vec![VIEW_STATE_FORMAT_VERSION])
    }

    /// Decodes a state encoded for `view`, checking the version, the view's fingerprint and
    /// every cell against the view's metrics.
    pub fn decode(view: Arc<ViewDef>, bytes: &[u8]) -> Result<Self> {
        let codec = |reason: String| Error::Codec {
            what: "view state",
            reason,
        };
        let (&version, payload) = bytes
            .split_first()
            .ok_or_else(|| codec("empty input".to_owned()))?;
        if version != VIEW_STATE_FORMAT_VERSION {
            return Err(codec(format!("unknown format version {version}")));
        }
        let (encoded, rest): (Encoded, &[u8]) =
            postcard::take_from_bytes(payload).map_err(|e| codec(e.to_string()))?;
        if !rest.is_empty() {
            return Err(codec(format!("{} trailing bytes", rest.len())));
        }
        if encoded.fingerprint != view.fingerprint() {
            return Err(codec(format!(
                "encoded for another definition of view {}",
                view.name
            )));
        }
        let mut state = Self::new(view);
        for (key, states) in encoded.cells {
            for s in &states {
                s.check().map_err(|e| codec(format!("cell {key:?}: {e}")))?;
            }
            if state.cell(&key).is_some() {
                return Err(codec(format!("cell {key:?} appears twice")));
            }
            state.merge_cell(key, &states)?;
        }
        Ok(state)
    }

    /// Compares with another state cell by cell (see [`MetricState::approx_eq`]), describing
    /// the first difference.
    pub fn approx_eq(&self, other: &ViewState, relative: f64) -> std::result::Result<(), Invalid> {
        self.difference(other, relative).map_err(Invalid)
    }

    fn difference(&self, other: &ViewState, relative: f64) -> std::result::Result<(), String> {
        if self.len != other.len {
            let missing = self
                .cells()
                .find(|(k, _)| other.cell(k).is_none())
                .map(|c| c.0);
            let extra = other
                .cells()
                .find(|(k, _)| self.cell(k).is_none())
                .map(|c| c.0);
            return Err(format!(
                "{} cells != {} cells (first only here: {missing:?}; first only there: {extra:?})",
                self.len, other.len
            ));
        }
        for (key, mine) in self.cells() {
            let theirs = other
                .cell(&key)
                .ok_or_else(|| format!("cell {key:?} is missing"))?;
            for ((a, b), metric) in mine.iter().zip(theirs.iter()).zip(&self.view.metrics) {
                a.difference(b, relative)
                    .map_err(|e| format!("cell {key:?} metric {}: {e}", metric.name))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
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
"#;

    fn key(k: &str) -> GroupKey {
        GroupKey(Box::new([Value::Str(k.into())]))
    }

    /// Two keys filed under one hash (as a collision would file them) share a list: a point read
    /// of either visits its own cells only, in bucket order, whether the list is sorted or not.
    #[test]
    fn a_point_read_skips_the_cells_of_a_key_sharing_its_hash() {
        let config = crate::Config::from_toml(CONFIG).unwrap();
        for order in [[0, 1, 2, 3, 4], [4, 2, 0, 3, 1]] {
            let mut state = ViewState::new(Arc::clone(&config.views[0]));
            // "a" in minutes 0, 1, 2 (counts 1, 2, 3); "b" in minutes 1, 2 (counts 10, 20).
            let cells = [
                ("a", 0, 1),
                ("b", 1, 10),
                ("a", 1, 2),
                ("b", 2, 20),
                ("a", 2, 3),
            ];
            for i in order {
                let (k, minute, n) = cells[i];
                let cell = CellKey {
                    bucket_ms: minute * 60_000,
                    group: key(k),
                };
                state.merge_cell(cell, &[MetricState::Count(n)]).unwrap();
            }
            let (a, b) = (PointKey::new(key("a")), PointKey::new(key("b")));
            // Every cell of both keys under each key's hash.
            let mut colliding = LiveIndex::default();
            for (bucket_ms, bucket) in &state.buckets {
                for cell in 0..bucket.len() {
                    colliding.add(a.hash, *bucket_ms, cell);
                    colliding.add(b.hash, *bucket_ms, cell);
                }
            }
            state.keys = OnceLock::from(colliding);
            let visited = |point: &PointKey, from: i64, to: i64| {
                let mut seen = Vec::new();
                state
                    .visit_point(point, from, to, |bucket, states| {
                        seen.push((bucket / 60_000, states[0].clone()));
                        Ok(())
                    })
                    .unwrap();
                seen
            };
            let counts = |pairs: &[(i64, u64)]| -> Vec<(i64, MetricState)> {
                pairs
                    .iter()
                    .map(|&(m, n)| (m, MetricState::Count(n)))
                    .collect()
            };
            assert_eq!(visited(&a, 0, i64::MAX), counts(&[(0, 1), (1, 2), (2, 3)]));
            assert_eq!(visited(&b, 0, i64::MAX), counts(&[(1, 10), (2, 20)]));
            assert_eq!(visited(&a, 60_000, 120_000), counts(&[(1, 2)]));
            assert_eq!(visited(&b, 0, 60_000), counts(&[]));
            // Colliding in different buckets only: the list stays in bucket order.
            let cell_of = |k: &str, minute: i64| {
                let bucket = &state.buckets[&(minute * 60_000)];
                (0..bucket.len())
                    .find(|&c| bucket.key(c) == &*key(k).0)
                    .unwrap()
            };
            let mut apart = LiveIndex::default();
            apart.add(a.hash, 0, cell_of("a", 0));
            apart.add(a.hash, 60_000, cell_of("b", 1));
            apart.add(a.hash, 120_000, cell_of("a", 2));
            let mut state = state.clone();
            state.keys = OnceLock::from(apart);
            let mut seen = Vec::new();
            state
                .visit_point(&a, 0, i64::MAX, |bucket, states| {
                    seen.push((bucket / 60_000, states[0].clone()));
                    Ok(())
                })
                .unwrap();
            assert_eq!(seen, counts(&[(0, 1), (2, 3)]));
        }
    }

    /// A state serialized from its cells where they are encodes to the bytes of a copy of its
    /// cells, and decodes back to the same state.
    #[test]
    fn encoding_in_place_equals_encoding_a_copy() {
        let config =
            crate::Config::from_toml(include_str!("../../../deploy/config/example.toml")).unwrap();
        let source = config.source("payments").unwrap();
        let decoder = crate::Decoder::new(source);
        let mut generator = crate::generator::Payments::new(
            3,
            1_790_000_000_000,
            crate::generator::PaymentsShape::default(),
        );
        let events: Vec<_> = (0..3_000)
            .map(|_| decoder.decode(&generator.next_event()).unwrap())
            .collect();
        for view in &config.views {
            let mut state = ViewState::new(Arc::clone(view));
            state.apply(&events);
            assert!(state.len() > 1, "{}", view.name);
            let copy = Encoded {
                fingerprint: view.fingerprint(),
                cells: state.cells().map(|(k, s)| (k, s.to_vec())).collect(),
            };
            let mut expected = vec![VIEW_STATE_FORMAT_VERSION];
            expected.extend(postcard::to_stdvec(&copy).unwrap());
            let encoded = state.encode();
            assert_eq!(encoded, expected, "{}", view.name);
            let decoded = ViewState::decode(Arc::clone(view), &encoded).unwrap();
            assert!(decoded.cells().eq(state.cells()), "{}", view.name);
        }
    }
}
