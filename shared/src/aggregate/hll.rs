//! `approx_distinct`: HyperLogLog with 2^14 registers over a stable 64-bit hash (xxh3), sparse
//! while few registers are set. Merge takes register maxima, so merging sketches of any split
//! of the input gives exactly the sketch of the whole input.
//!
//! Estimation uses Ertl's improved estimator ("New cardinality estimation algorithms for
//! HyperLogLog sketches", 2017), unbiased from 0 to far beyond 2^32 distinct values; the
//! relative standard error is 1.04 / sqrt(2^14) = 0.81%.

use crate::error::Invalid;
use serde::{Deserialize, Serialize};

/// Index bits.
pub const PRECISION: u32 = 14;
const REGISTERS: usize = 1 << PRECISION;
/// Largest register value: leading zeros of the remaining 50 bits, plus one.
const MAX_RANK: u8 = (64 - PRECISION + 1) as u8;
/// Above this many set registers the sketch becomes dense (4 bytes a sparse entry).
const SPARSE_LIMIT: usize = REGISTERS / 8;
/// Relative standard error of the estimate.
pub const STANDARD_ERROR: f64 = 0.008125;

/// Sparse entries held in place, without an allocation: most cells of a fine-grained view see
/// a handful of distinct values.
const INLINE: usize = 5;

/// A HyperLogLog sketch. Its representation is a function of its register values only, and it
/// encodes as it always has (`Sparse(entries)` or `Dense(registers)`), whatever it holds them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hll(Repr);

/// Sparse entries are sorted, distinct `(index << 8) | rank` with rank > 0.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    /// Up to [`INLINE`] entries; the slots past `len` are zero.
    Inline { len: u8, entries: [u32; INLINE] },
    /// More than [`INLINE`] entries, up to [`SPARSE_LIMIT`].
    #[allow(
        clippy::box_collection,
        reason = "a thin pointer keeps the sketch at 24 bytes, so a metric state holds it in place"
    )]
    Sparse(Box<Vec<u32>>),
    /// One rank per register.
    Dense(Box<[u8]>),
}

impl Default for Hll {
    fn default() -> Self {
        Self(Repr::Inline {
            len: 0,
            entries: [0; INLINE],
        })
    }
}

/// What a sketch holds, borrowed; also its encoded form.
#[derive(Serialize)]
#[serde(rename = "Hll")]
enum Held<'a> {
    Sparse(&'a [u32]),
    Dense(&'a [u8]),
}

#[derive(Deserialize)]
#[serde(rename = "Hll")]
enum OwnedWire {
    Sparse(Vec<u32>),
    Dense(Vec<u8>),
}

impl Serialize for Hll {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.held().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Hll {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Held as decoded; `validate` then checks the content.
        Ok(match OwnedWire::deserialize(deserializer)? {
            OwnedWire::Sparse(entries) => Self::from_sparse(entries),
            OwnedWire::Dense(registers) => Self(Repr::Dense(registers.into_boxed_slice())),
        })
    }
}

impl Hll {
    /// The stable hash of a key: the same in every layer and process.
    pub fn hash(key: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(key)
    }

    /// A sketch of sparse `entries`, held inline when they fit.
    fn from_sparse(entries: Vec<u32>) -> Self {
        if entries.len() <= INLINE {
            let mut inline = [0; INLINE];
            inline[..entries.len()].copy_from_slice(&entries);
            return Self(Repr::Inline {
                len: entries.len() as u8,
                entries: inline,
            });
        }
        Self(Repr::Sparse(Box::new(entries)))
    }

    fn held(&self) -> Held<'_> {
        match &self.0 {
            Repr::Inline { len, entries } => Held::Sparse(&entries[..usize::from(*len)]),
            Repr::Sparse(entries) => Held::Sparse(entries),
            Repr::Dense(registers) => Held::Dense(registers),
        }
    }

    /// The sparse entries, unless the sketch is dense.
    fn sparse(&self) -> Option<&[u32]> {
        match self.held() {
            Held::Sparse(entries) => Some(entries),
            Held::Dense(_) => None,
        }
    }

    /// Whether the sketch holds one rank per register.
    pub fn is_dense(&self) -> bool {
        matches!(self.0, Repr::Dense(_))
    }

    pub fn insert(&mut self, key: &[u8]) {
        self.insert_hash(Self::hash(key));
    }

    pub fn insert_hash(&mut self, hash: u64) {
        let index = (hash >> (64 - PRECISION)) as u32;
        let rest = hash << PRECISION;
        // `rest` has 50 meaningful bits; an all-zero rest gets the largest rank.
        let rank = (rest.leading_zeros().min(64 - PRECISION) + 1) as u8;
        self.raise(index, rank);
    }

    fn raise(&mut self, index: u32, rank: u8) {
        let entry = (index << 8) | u32::from(rank);
        match &mut self.0 {
            Repr::Dense(registers) => {
                let slot = &mut registers[index as usize];
                *slot = (*slot).max(rank);
            }
            Repr::Inline { len, entries } => {
                let held = usize::from(*len);
                match entries[..held].binary_search_by_key(&index, |e| e >> 8) {
                    Ok(at) => entries[at] = entries[at].max(entry),
                    Err(at) if held < INLINE => {
                        entries.copy_within(at..held, at + 1);
                        entries[at] = entry;
                        *len += 1;
                    }
                    Err(at) => {
                        let mut spilled = Vec::with_capacity(2 * INLINE);
                        spilled.extend_from_slice(entries);
                        spilled.insert(at, entry);
                        self.0 = Repr::Sparse(Box::new(spilled));
                    }
                }
            }
            Repr::Sparse(entries) => match entries.binary_search_by_key(&index, |e| e >> 8) {
                Ok(at) => entries[at] = entries[at].max(entry),
                Err(at) => {
                    // Grow by half, not double: many cells hold a sparse sketch.
                    if entries.len() == entries.capacity() {
                        entries.reserve_exact(entries.len() / 2);
                    }
                    entries.insert(at, entry);
                    if entries.len() > SPARSE_LIMIT {
                        self.densify();
                    }
                }
            },
        }
    }

    fn densify(&mut self) {
        if let Some(entries) = self.sparse() {
            let mut registers = vec![0u8; REGISTERS].into_boxed_slice();
            for e in entries {
                registers[(e >> 8) as usize] = (e & 0xff) as u8;
            }
            self.0 = Repr::Dense(registers);
        }
    }

    pub fn merge(&mut self, other: &Self) {
        let theirs = match other.held() {
            Held::Sparse(entries) => entries,
            Held::Dense(theirs) => {
                self.densify();
                if let Repr::Dense(mine) = &mut self.0 {
                    for (m, t) in mine.iter_mut().zip(theirs) {
                        *m = (*m).max(*t);
                    }
                }
                return;
            }
        };
        let Some(mine) = self.sparse() else {
            for e in theirs {
                self.raise(e >> 8, (e & 0xff) as u8);
            }
            return;
        };
        if theirs.is_empty() {
            return;
        }
        // Both sorted by index: one pass, the larger rank of a shared index kept.
        let mut merged = Vec::with_capacity(mine.len() + theirs.len());
        let (mut a, mut b) = (mine.iter().peekable(), theirs.iter().peekable());
        while let (Some(&&x), Some(&&y)) = (a.peek(), b.peek()) {
            match (x >> 8).cmp(&(y >> 8)) {
                std::cmp::Ordering::Less => merged.push(x),
                std::cmp::Ordering::Greater => merged.push(y),
                std::cmp::Ordering::Equal => merged.push(x.max(y)),
            }
            if x >> 8 <= y >> 8 {
                a.next();
            }
            if y >> 8 <= x >> 8 {
                b.next();
            }
        }
        merged.extend(a);
        merged.extend(b);
        *self = Self::from_sparse(merged);
        if self.sparse().is_some_and(|e| e.len() > SPARSE_LIMIT) {
            self.densify();
        }
    }

    /// Checks the invariants of a decoded sketch.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.problems().map_err(Invalid)
    }

    pub(crate) fn problems(&self) -> std::result::Result<(), String> {
        let entries = match self.held() {
            Held::Sparse(entries) => entries,
            Held::Dense(registers) => {
                if registers.len() != REGISTERS {
                    return Err(format!(
                        "dense sketch has {} registers, expected {REGISTERS}",
                        registers.len()
                    ));
                }
                if registers.iter().any(|&r| r > MAX_RANK) {
                    return Err("dense sketch has a register above the largest rank".to_owned());
                }
                if registers.iter().filter(|&&r| r > 0).count() <= SPARSE_LIMIT {
                    return Err("dense sketch with few registers set is not canonical".to_owned());
                }
                return Ok(());
            }
        };
        if entries.len() > SPARSE_LIMIT {
            return Err("sparse sketch over its size limit".to_owned());
        }
        for pair in entries.windows(2) {
            if pair[0] >> 8 >= pair[1] >> 8 {
                return Err("sparse sketch entries are not sorted and distinct".to_owned());
            }
        }
        for e in entries {
            let (index, rank) = (e >> 8, (e & 0xff) as u8);
            if index as usize >= REGISTERS || rank == 0 || rank > MAX_RANK {
                return Err(format!("sparse sketch entry {e:#x} is out of range"));
            }
        }
        Ok(())
    }

    /// Estimated number of distinct keys.
    pub fn estimate(&self) -> f64 {
        // Histogram of register values.
        let mut counts = [0u32; MAX_RANK as usize + 1];
        match self.held() {
            Held::Dense(registers) => registers.iter().for_each(|&r| counts[r as usize] += 1),
            Held::Sparse(entries) => {
                counts[0] = (REGISTERS - entries.len()) as u32;
                entries
                    .iter()
                    .for_each(|e| counts[(e & 0xff) as usize] += 1);
            }
        }
        let m = REGISTERS as f64;
        let q = (64 - PRECISION) as usize;
        let mut z = m * tau(1.0 - f64::from(counts[q + 1]) / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + f64::from(counts[k]));
        }
        z += m * sigma(f64::from(counts[0]) / m);
        let alpha_inf = 1.0 / (2.0 * std::f64::consts::LN_2);
        alpha_inf * m * m / z
    }
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let previous = z;
        z += x * y;
        y += y;
        if previous == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let previous = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if previous == z {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(range: std::ops::Range<u64>) -> Hll {
        let mut hll = Hll::default();
        for i in range {
            hll.insert(format!("key-{i}").as_bytes());
        }
        hll
    }

    #[test]
    fn empty_and_tiny() {
        assert_eq!(Hll::default().estimate(), 0.0);
        let mut hll = Hll::default();
        hll.insert(b"a");
        hll.insert(b"a");
        assert!((hll.estimate() - 1.0).abs() < 0.01);
    }

    #[test]
    fn estimates_stay_within_four_standard_errors() {
        for n in [10u64, 100, 1_000, 5_000, 20_000, 100_000, 1_000_000] {
            let estimate = sketch(0..n).estimate();
            let error = (estimate - n as f64).abs() / n as f64;
            assert!(
                error <= 4.0 * STANDARD_ERROR,
                "n={n} estimate={estimate} error={error}"
            );
        }
    }

    #[test]
    fn sparse_merges_equal_the_whole_on_both_sides_of_the_sparse_limit() {
        for (a, b, end) in [(0..100, 50..300, 300), (0..1_500, 1_000..2_600, 2_600)] {
            let whole = sketch(0..end);
            let mut merged = sketch(a.clone());
            assert!(!merged.is_dense());
            merged.merge(&sketch(b.clone()));
            assert_eq!(merged, whole, "{a:?} + {b:?}");
            let mut from_empty = Hll::default();
            from_empty.merge(&whole);
            assert_eq!(from_empty, whole);
        }
        assert!(sketch(0..2_600).is_dense(), "the limit is crossed");
    }

    #[test]
    fn merge_of_parts_equals_whole() {
        let whole = sketch(0..50_000);
        let mut merged = sketch(0..1_000);
        merged.merge(&sketch(1_000..30_000));
        merged.merge(&sketch(30_000..50_000));
        assert_eq!(merged, whole);
        // Sparse into dense and dense into sparse give the same canonical form.
        let mut other_way = sketch(30_000..50_000);
        other_way.merge(&sketch(0..30_000));
        assert_eq!(other_way, whole);
    }

    /// The encoding of the sketch's first format, kept by every representation.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum FirstFormat {
        Sparse(Vec<u32>),
        Dense(Vec<u8>),
    }

    #[test]
    fn every_representation_encodes_as_the_first_format_did() {
        for n in [0, 1, INLINE as u64, INLINE as u64 + 1, 300, 2_600] {
            let hll = sketch(0..n);
            let first = match &hll.0 {
                Repr::Dense(registers) => FirstFormat::Dense(registers.to_vec()),
                _ => FirstFormat::Sparse(hll.sparse().unwrap().to_vec()),
            };
            let bytes = postcard::to_stdvec(&hll).unwrap();
            assert_eq!(bytes, postcard::to_stdvec(&first).unwrap(), "n={n}");
            assert_eq!(postcard::from_bytes::<FirstFormat>(&bytes).unwrap(), first);
            let decoded: Hll = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(
                decoded, hll,
                "n={n}: decodes to the canonical representation"
            );
            assert_eq!(
                serde_json::to_value(&hll).unwrap(),
                serde_json::to_value(&first).unwrap()
            );
        }
    }

    #[test]
    fn a_few_values_stay_inline_and_spill_in_order() {
        let mut hll = Hll::default();
        let mut hashes: Vec<u64> = (0..40u64).map(|i| Hll::hash(&i.to_le_bytes())).collect();
        hashes.reverse();
        for (i, &hash) in hashes.iter().enumerate() {
            hll.insert_hash(hash);
            hll.insert_hash(hash);
            let held = hll.sparse().unwrap();
            assert!(
                matches!(hll.0, Repr::Inline { .. }) == (held.len() <= INLINE),
                "{i}"
            );
            assert!(hll.validate().is_ok(), "{i}: {hll:?}");
        }
        let mut split = Hll::default();
        let mut other = Hll::default();
        for (i, &hash) in hashes.iter().enumerate() {
            if i % 2 == 0 {
                split.insert_hash(hash)
            } else {
                other.insert_hash(hash)
            }
        }
        split.merge(&other);
        assert_eq!(split, hll);
        assert_eq!(
            std::mem::size_of::<Hll>(),
            24,
            "fits a metric state's 32 bytes"
        );
    }

    #[test]
    fn validate_rejects_broken_sketches() {
        let dense = |registers: Vec<u8>| Hll(Repr::Dense(registers.into_boxed_slice()));
        assert!(dense(vec![0; 10]).validate().is_err());
        assert!(dense(vec![1; 10]).validate().is_err());
        for held in [
            vec![(5 << 8) | 1, (5 << 8) | 2],
            vec![5 << 8],
            (0..8).map(|i| ((8 - i) << 8) | 1).collect(),
        ] {
            assert!(
                Hll::from_sparse(held.clone()).validate().is_err(),
                "{held:?}"
            );
        }
        assert!(sketch(0..3).validate().is_ok());
        assert!(sketch(0..100_000).validate().is_ok());
    }
}
