//! The cells of one event-time bucket, laid out flat: cell `i`'s group key is the `i`th run of
//! `width` values and its states the `i`th run of `metrics` states, and a table of cell indices
//! finds a cell by its key's hash. A new cell costs no allocation of its own, only room in
//! chunks that never move (and whatever its strings and sketches hold).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::LazyLock;

use hashbrown::HashTable;

use crate::aggregate::MetricState;
use crate::event::Value;

/// One hasher for every key in the process, seeded at random (no chosen-key collisions), so a
/// key hashed once finds its cells in every bucket and every state.
static KEY_HASHER: LazyLock<hashbrown::DefaultHashBuilder> = LazyLock::new(Default::default);

/// The hash every bucket files a group key under.
pub(super) fn key_hash<'a>(values: impl Iterator<Item = &'a Value>) -> u64 {
    let mut hasher = KEY_HASHER.build_hasher();
    for value in values {
        match value {
            // The common key, in one call: equal strings hash equal, and a string that
            // collides with another kind of value only costs a comparison.
            Value::Str(s) => {
                hasher.write(s.as_bytes());
                hasher.write_u8(0xff);
            }
            other => other.hash(&mut hasher),
        }
    }
    hasher.finish()
}

/// Runs of the first chunk of a [`Runs`]; each next chunk doubles, up to this many doublings.
const FIRST_CHUNK: usize = 4;
const CHUNK_DOUBLINGS: u32 = 8;

/// Items in runs of `stride`, appended to chunks that are allocated at their full size and never
/// move: growing copies nothing and leaves no outgrown block behind (a doubling vector's old
/// blocks stay resident), and a bucket of a few cells holds a small chunk.
#[derive(Debug, Clone)]
struct Runs<T> {
    chunks: Vec<Vec<T>>,
    stride: usize,
    len: usize,
}

impl<T> Runs<T> {
    fn new(stride: usize) -> Self {
        Self {
            chunks: Vec::new(),
            stride,
            len: 0,
        }
    }

    /// The chunk holding run `run`, and the run's place in it.
    fn locate(run: usize) -> (usize, usize) {
        let doubling = FIRST_CHUNK * ((1 << CHUNK_DOUBLINGS) - 1);
        if run < doubling {
            // Chunk k holds runs FIRST_CHUNK * (2^k - 1) .. FIRST_CHUNK * (2^(k+1) - 1).
            let k = (run / FIRST_CHUNK + 1).ilog2() as usize;
            return (k, run - FIRST_CHUNK * ((1 << k) - 1));
        }
        let (past, full) = (run - doubling, FIRST_CHUNK << CHUNK_DOUBLINGS);
        (CHUNK_DOUBLINGS as usize + past / full, past % full)
    }

    fn get(&self, run: usize) -> &[T] {
        let (chunk, at) = Self::locate(run);
        &self.chunks[chunk][at * self.stride..][..self.stride]
    }

    fn get_mut(&mut self, run: usize) -> &mut [T] {
        let (chunk, at) = Self::locate(run);
        &mut self.chunks[chunk][at * self.stride..][..self.stride]
    }

    fn push(&mut self, items: impl IntoIterator<Item = T>) {
        let (chunk, at) = Self::locate(self.len);
        if at == 0 {
            let runs = FIRST_CHUNK << (chunk as u32).min(CHUNK_DOUBLINGS);
            self.chunks.push(Vec::with_capacity(runs * self.stride));
        }
        let held = &mut self.chunks[chunk];
        held.extend(items);
        debug_assert_eq!(held.len(), (at + 1) * self.stride);
        self.len += 1;
    }

    /// Every run, moved out, in order.
    fn into_runs<R: FromIterator<T>>(self) -> impl Iterator<Item = R> {
        let (len, stride) = (self.len, self.stride);
        let mut items = self.chunks.into_iter().flatten();
        (0..len).map(move |_| items.by_ref().take(stride).collect())
    }
}

#[derive(Debug, Clone)]
pub(super) struct Bucket {
    /// Cell indices by key hash. `u32`: a bucket of 2^32 cells would need hundreds of GiB.
    table: HashTable<u32>,
    keys: Runs<Value>,
    states: Runs<MetricState>,
}

impl Bucket {
    /// An empty bucket of cells keyed by `width` values, each with `metrics` states.
    pub fn new(width: usize, metrics: usize) -> Self {
        Self {
            table: HashTable::new(),
            keys: Runs::new(width),
            states: Runs::new(metrics),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn key(&self, cell: usize) -> &[Value] {
        self.keys.get(cell)
    }

    pub fn states(&self, cell: usize) -> &[MetricState] {
        self.states.get(cell)
    }

    pub fn states_mut(&mut self, cell: usize) -> &mut [MetricState] {
        self.states.get_mut(cell)
    }

    /// The cell whose key hashes to `hash` and satisfies `is_key`.
    pub fn find_by(&self, hash: u64, mut is_key: impl FnMut(&[Value]) -> bool) -> Option<usize> {
        self.table
            .find(hash, |&cell| is_key(self.key(cell as usize)))
            .map(|&cell| cell as usize)
    }

    /// The cell of `key`, hashed to `hash` by [`key_hash`].
    pub fn find(&self, hash: u64, key: &[Value]) -> Option<usize> {
        self.find_by(hash, |k| k == key)
    }

    /// Adds a cell that is not in the bucket yet; `key` must hash to `hash`. Its index.
    pub fn push(
        &mut self,
        hash: u64,
        key: impl IntoIterator<Item = Value>,
        states: impl IntoIterator<Item = MetricState>,
    ) -> usize {
        let cell = self.table.len();
        self.keys.push(key);
        self.states.push(states);
        let keys = &self.keys;
        self.table.insert_unique(hash, cell as u32, |&other| {
            key_hash(keys.get(other as usize).iter())
        });
        cell
    }

    /// Every cell's key and states, in the order they were added.
    pub fn cells(&self) -> impl Iterator<Item = (&[Value], &[MetricState])> {
        (0..self.len()).map(|cell| (self.key(cell), self.states(cell)))
    }

    /// Every cell, moved out, in the order they were added.
    pub fn into_cells(self) -> impl Iterator<Item = (Box<[Value]>, Box<[MetricState]>)> {
        self.keys.into_runs().zip(self.states.into_runs())
    }
}

impl PartialEq for Bucket {
    /// The same cells, whatever order they were added in.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.cells().all(|(key, states)| {
                other
                    .find(key_hash(key.iter()), key)
                    .is_some_and(|cell| other.states(cell) == states)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_where_they_were_pushed_across_chunk_sizes() {
        for stride in [0, 1, 3] {
            let mut runs = Runs::new(stride);
            let n = FIRST_CHUNK * (1 << CHUNK_DOUBLINGS) * 3 + 7;
            for run in 0..n {
                runs.push((0..stride).map(|i| run * 10 + i));
            }
            for run in 0..n {
                let expected: Vec<usize> = (0..stride).map(|i| run * 10 + i).collect();
                assert_eq!(runs.get(run), expected, "stride {stride} run {run}");
            }
            // The doubling chunks, then full ones: two and a part.
            assert_eq!(runs.chunks.len(), CHUNK_DOUBLINGS as usize + 3);
            let moved: Vec<Vec<usize>> = runs.into_runs().collect();
            assert_eq!(moved.len(), n);
            assert!(moved.iter().enumerate().all(|(run, items)| {
                items
                    .iter()
                    .enumerate()
                    .all(|(i, &item)| item == run * 10 + i)
            }));
        }
    }
}
