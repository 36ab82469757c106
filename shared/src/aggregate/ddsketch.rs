//! `quantile`: a DDSketch-style relative-error sketch. Values map to logarithmic bins of ratio
//! gamma = (1 + a) / (1 - a) with a = 1%; a bin's representative is within 1% of every value in
//! it, so any quantile is answered within 1% relative error. Bins are plain counts, never
//! collapsed, so merging sketches of any split of the input gives exactly the sketch of the whole.
//! The number of bins grows with log(max / min), not with the data: about 2,300 bins span twenty
//! orders of magnitude.

use crate::error::Invalid;
use serde::{Deserialize, Serialize};

use crate::event::Value;

/// Relative accuracy of quantile answers.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Magnitudes below this count as zero.
const MIN_INDEXABLE: f64 = 1e-12;
/// 1 / ln(gamma) for gamma = 1.01 / 0.99.
const INV_LN_GAMMA: f64 = 49.998_333_288_886_78;

/// Non-empty bins and their counts, encoded as `(index, count)` pairs sorted by index with
/// positive counts: one encoding per content. Held sparse while few bins are set, since a cell
/// often holds few values spread over a wide range: each bin packed in 8 bytes (index and a
/// 32-bit count; `Wide` pairs once a count outgrows it). Dense (one count per index of the
/// window from the lowest set bin to the highest) once at least half the window is set, where
/// adding a value is one increment.
#[derive(Debug, Clone)]
pub struct Bins(Held);

#[derive(Debug, Clone)]
enum Held {
    /// Sorted [`pack`]ed bins.
    Sparse(Vec<u64>),
    Wide(Vec<(i32, u64)>),
    Dense {
        lowest: i32,
        counts: Vec<u64>,
    },
}

/// Sparse bins turn dense from this many set bins on, when they fill half their window.
const DENSE_FROM: usize = 16;

/// A bin in 8 bytes, ordered as its index: the index (sign bit flipped) above a 32-bit count.
fn pack(index: i32, count: u32) -> u64 {
    (u64::from(index.cast_unsigned() ^ 0x8000_0000) << 32) | u64::from(count)
}

fn unpack(bin: u64) -> (i32, u64) {
    (
        ((bin >> 32) as u32 ^ 0x8000_0000).cast_signed(),
        bin & 0xffff_ffff,
    )
}

impl Default for Bins {
    fn default() -> Self {
        Self(Held::Sparse(Vec::new()))
    }
}

impl PartialEq for Bins {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Bins {}

impl Serialize for Bins {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Pairs<'a>(&'a Bins);
        impl Serialize for Pairs<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                // Binary encodings need the length first.
                let mut seq = serializer.serialize_seq(Some(self.0.iter().count()))?;
                for pair in self.0.iter() {
                    seq.serialize_element(&pair)?;
                }
                seq.end()
            }
        }
        serializer.serialize_newtype_struct("Bins", &Pairs(self))
    }
}

impl<'de> Deserialize<'de> for Bins {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "Bins")]
        struct Pairs(Vec<(i32, u64)>);
        // Held in the order decoded; `is_canonical` then checks them.
        Ok(Self::from_pairs(Pairs::deserialize(deserializer)?.0))
    }
}

impl Bins {
    /// Bins holding `pairs` as they are (sparse), packed when every count fits.
    fn from_pairs(pairs: Vec<(i32, u64)>) -> Self {
        if pairs.iter().all(|&(_, n)| n <= u64::from(u32::MAX)) {
            return Self(Held::Sparse(
                pairs.iter().map(|&(i, n)| pack(i, n as u32)).collect(),
            ));
        }
        Self(Held::Wide(pairs))
    }

    fn add(&mut self, index: i32, n: u64) {
        match &mut self.0 {
            Held::Dense { lowest, counts } => {
                let at = i64::from(index) - i64::from(*lowest);
                match usize::try_from(at).ok().and_then(|at| counts.get_mut(at)) {
                    Some(count) => *count += n,
                    None => self.widen_to(index, n),
                }
                return;
            }
            Held::Sparse(bins) => {
                let found = bins.binary_search_by_key(&index, |&b| unpack(b).0);
                let count = match found {
                    Ok(at) => unpack(bins[at]).1 + n,
                    Err(_) => n,
                };
                let Ok(narrow) = u32::try_from(count) else {
                    *self = Self(Held::Wide(self.iter().collect()));
                    return self.add(index, n);
                };
                match found {
                    Ok(at) => bins[at] = pack(index, narrow),
                    Err(at) => {
                        // Grow by half, not double: a cell's bins are most of its memory.
                        if bins.len() == bins.capacity() {
                            bins.reserve_exact((bins.len() / 2).max(4));
                        }
                        bins.insert(at, pack(index, narrow));
                    }
                }
            }
            Held::Wide(pairs) => match pairs.binary_search_by_key(&index, |&(i, _)| i) {
                Ok(at) => pairs[at].1 += n,
                Err(at) => pairs.insert(at, (index, n)),
            },
        }
        self.densify_if_full();
    }

    /// Adds a bin outside a dense window: the window grows to it, unless the bins would then
    /// fill less than a quarter of it (a far outlier), which makes them sparse again.
    fn widen_to(&mut self, index: i32, n: u64) {
        let mut pairs: Vec<(i32, u64)> = self.iter().collect();
        let at = pairs.partition_point(|&(i, _)| i < index);
        pairs.insert(at, (index, n));
        let window = Self::window(&pairs);
        *self = if pairs.len() * 4 >= window {
            Self::dense(&pairs)
        } else {
            Self::from_pairs(pairs)
        };
    }

    /// Number of indices from the lowest bin to the highest.
    fn window(pairs: &[(i32, u64)]) -> usize {
        match (pairs.first(), pairs.last()) {
            (Some(&(low, _)), Some(&(high, _))) => (i64::from(high) - i64::from(low) + 1) as usize,
            _ => 0,
        }
    }

    fn dense(pairs: &[(i32, u64)]) -> Self {
        let lowest = pairs.first().map_or(0, |&(i, _)| i);
        let mut counts = vec![0; Self::window(pairs)];
        for &(i, n) in pairs {
            counts[(i64::from(i) - i64::from(lowest)) as usize] = n;
        }
        Self(Held::Dense { lowest, counts })
    }

    fn densify_if_full(&mut self) {
        let (set, window) = match &self.0 {
            Held::Sparse(bins) => (
                bins.len(),
                match (bins.first(), bins.last()) {
                    (Some(&low), Some(&high)) => {
                        (i64::from(unpack(high).0) - i64::from(unpack(low).0) + 1) as usize
                    }
                    _ => 0,
                },
            ),
            Held::Wide(pairs) => (pairs.len(), Self::window(pairs)),
            Held::Dense { .. } => return,
        };
        if set >= DENSE_FROM && set * 2 >= window {
            *self = Self::dense(&self.iter().collect::<Vec<_>>());
        }
    }

    fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    fn merge(&mut self, other: &Bins) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = other.clone();
            return;
        }
        if let Held::Dense { .. } = other.0
            && !matches!(self.0, Held::Dense { .. })
        {
            let mine = std::mem::replace(self, other.clone());
            mine.iter().for_each(|(i, n)| self.add(i, n));
            return;
        }
        if let Held::Dense { .. } = self.0 {
            other.iter().for_each(|(i, n)| self.add(i, n));
            return;
        }
        // Both sparse: one pass over both, by index.
        let mut merged = Vec::new();
        let (mut a, mut b) = (self.iter().peekable(), other.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&(i, n)), Some(&(j, m))) if i == j => {
                    a.next();
                    b.next();
                    (i, n + m)
                }
                (Some(&x), Some(&y)) if x.0 < y.0 => {
                    a.next();
                    x
                }
                (_, Some(&y)) => {
                    b.next();
                    y
                }
                (Some(&x), None) => {
                    a.next();
                    x
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        drop(a);
        *self = Self::from_pairs(merged);
        self.densify_if_full();
    }

    /// The set bins, by index.
    fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        let (sparse, wide, dense) = match &self.0 {
            Held::Sparse(bins) => (Some(bins.iter().map(|&b| unpack(b))), None, None),
            Held::Wide(pairs) => (None, Some(pairs.iter().copied()), None),
            Held::Dense { lowest, counts } => {
                let lowest = *lowest;
                let set = counts.iter().enumerate().filter(|(_, n)| **n > 0);
                (
                    None,
                    None,
                    Some(set.map(move |(at, &n)| (lowest + at as i32, n))),
                )
            }
        };
        let sparse = sparse.into_iter().flatten();
        sparse
            .chain(wide.into_iter().flatten())
            .chain(dense.into_iter().flatten())
    }

    fn total(&self) -> Option<u64> {
        self.iter().try_fold(0u64, |acc, (_, n)| acc.checked_add(n))
    }

    fn is_canonical(&self) -> bool {
        match &self.0 {
            Held::Sparse(_) | Held::Wide(_) => {
                self.iter().all(|(_, n)| n > 0)
                    && self.iter().zip(self.iter().skip(1)).all(|(a, b)| a.0 < b.0)
            }
            // Built only from canonical pairs.
            Held::Dense { .. } => true,
        }
    }
}

/// The quantile sketch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DdSketch {
    /// Bins of positive values by index.
    pub positive: Bins,
    /// Bins of negative values by the index of their magnitude.
    pub negative: Bins,
    pub zero: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

impl DdSketch {
    fn index(magnitude: f64) -> i32 {
        // ceil(log_gamma(x)); magnitudes are in [1e-12, 1.8e308] so the index fits in i32.
        (magnitude.ln() * INV_LN_GAMMA).ceil() as i32
    }

    fn representative(index: i32) -> f64 {
        let gamma = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
        2.0 * (f64::from(index) / INV_LN_GAMMA).exp() / (1.0 + gamma)
    }

    pub fn add(&mut self, value: &Value) {
        if let Some(x) = value.as_f64() {
            self.add_f64(x);
        }
    }

    pub fn add_f64(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if x > MIN_INDEXABLE {
            self.positive.add(Self::index(x), 1);
        } else if x < -MIN_INDEXABLE {
            self.negative.add(Self::index(-x), 1);
        } else {
            self.zero += 1;
        }
        if self.count == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zero += other.zero;
        if self.count == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count += other.count;
    }

    /// The value at quantile `q` (the element of rank floor(q (n - 1)) in sorted order), within
    /// the relative accuracy; `None` for an empty sketch.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        let answer = 'found: {
            for (i, n) in self.negative.iter().rev() {
                seen += n;
                if seen > rank {
                    break 'found -Self::representative(i);
                }
            }
            seen += self.zero;
            if seen > rank {
                break 'found 0.0;
            }
            for (i, n) in self.positive.iter() {
                seen += n;
                if seen > rank {
                    break 'found Self::representative(i);
                }
            }
            self.max
        };
        Some(answer.clamp(self.min, self.max))
    }

    /// Checks the invariants of a decoded sketch.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.problems().map_err(Invalid)
    }

    pub(crate) fn problems(&self) -> std::result::Result<(), String> {
        if !self.positive.is_canonical() || !self.negative.is_canonical() {
            return Err("bins are not sorted, distinct and positive".to_owned());
        }
        let binned = self
            .positive
            .total()
            .zip(self.negative.total())
            .and_then(|(p, n)| p.checked_add(n)?.checked_add(self.zero));
        match binned {
            Some(total) if total == self.count => {}
            Some(total) => {
                return Err(format!(
                    "bins hold {total} values but count is {}",
                    self.count
                ));
            }
            None => return Err("the counts overflow".to_owned()),
        }
        if self.count > 0 && !(self.min.is_finite() && self.max.is_finite() && self.min <= self.max)
        {
            return Err("min and max are not a finite range".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn the_constant_is_one_over_ln_gamma() {
        let gamma: f64 = 1.01 / 0.99;
        assert!((INV_LN_GAMMA - 1.0 / gamma.ln()).abs() < 1e-9);
    }

    #[test]
    fn quantiles_within_relative_accuracy() {
        // A skewed, wide-ranged, deterministic data set with negatives and zeros.
        let mut values: Vec<f64> = (0..20_000u64)
            .map(|i| {
                let x = (i.wrapping_mul(2_654_435_761) % 1_000_003) as f64 / 1000.0;
                if i % 17 == 0 {
                    -x
                } else if i % 101 == 0 {
                    0.0
                } else {
                    x * x
                }
            })
            .collect();
        let mut sketch = DdSketch::default();
        values.iter().for_each(|&x| sketch.add_f64(x));
        values.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0] {
            let expected = exact_quantile(&values, q);
            let got = sketch.quantile(q).unwrap();
            assert!(
                (got - expected).abs() <= RELATIVE_ACCURACY * expected.abs() + 1e-12,
                "q={q} expected={expected} got={got}"
            );
        }
        assert!(sketch.validate().is_ok());
    }

    #[test]
    fn merge_of_parts_equals_whole() {
        let values: Vec<f64> = (1..5_000).map(|i| f64::from(i) * 0.37 - 300.0).collect();
        let mut whole = DdSketch::default();
        values.iter().for_each(|&x| whole.add_f64(x));
        let (a, b) = values.split_at(1234);
        let (mut left, mut right) = (DdSketch::default(), DdSketch::default());
        a.iter().for_each(|&x| left.add_f64(x));
        b.iter().for_each(|&x| right.add_f64(x));
        right.merge(&left);
        assert_eq!(right, whole);
        let mut other_way = left.clone();
        other_way.merge(&{
            let mut r = DdSketch::default();
            b.iter().for_each(|&x| r.add_f64(x));
            r
        });
        assert_eq!(other_way, whole);
    }

    /// The encoding of the sketch's first format, kept by every representation of its bins.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct FirstFormat {
        positive: Vec<(i32, u64)>,
        negative: Vec<(i32, u64)>,
        zero: u64,
        count: u64,
        min: f64,
        max: f64,
    }

    fn first_format(sketch: &DdSketch) -> FirstFormat {
        FirstFormat {
            positive: sketch.positive.iter().collect(),
            negative: sketch.negative.iter().collect(),
            zero: sketch.zero,
            count: sketch.count,
            min: sketch.min,
            max: sketch.max,
        }
    }

    #[test]
    fn sparse_and_dense_bins_hold_and_encode_the_same_content() {
        // Values clustered (dense), then a far outlier (sparse again), then the cluster refilled.
        let cluster: Vec<f64> = (0..400).map(|i| 10.0 + f64::from(i % 97) * 0.3).collect();
        let outliers = [1e-9, 5e12, -3.0, 0.0];
        let mut in_order = DdSketch::default();
        let mut reps = Vec::new();
        for (step, &x) in cluster.iter().chain(&outliers).chain(&cluster).enumerate() {
            in_order.add_f64(x);
            reps.push(matches!(in_order.positive.0, Held::Dense { .. }));
            assert!(!matches!(in_order.positive.0, Held::Wide(_)));
            // Every step agrees with the sketch of the same values added one by one in reverse.
            if step % 97 == 0 {
                assert!(in_order.validate().is_ok());
            }
        }
        assert!(reps.contains(&true), "the cluster turns the bins dense");
        assert!(
            !reps[cluster.len() + 1],
            "a far outlier makes them sparse again"
        );
        let mut reversed = DdSketch::default();
        for &x in cluster.iter().chain(&outliers).chain(&cluster).rev() {
            reversed.add_f64(x);
        }
        assert_eq!(in_order, reversed);
        // Merging every mix of representations gives the sketch of all the values.
        let (mut dense, mut sparse) = (DdSketch::default(), DdSketch::default());
        cluster.iter().for_each(|&x| dense.add_f64(x));
        outliers
            .iter()
            .chain(&cluster)
            .for_each(|&x| sparse.add_f64(x));
        for (a, b) in [(&dense, &sparse), (&sparse, &dense)] {
            let mut merged = a.clone();
            merged.merge(b);
            assert_eq!(merged, in_order);
        }
        for sketch in [&in_order, &dense, &sparse, &DdSketch::default()] {
            let bytes = postcard::to_stdvec(sketch).unwrap();
            let first = first_format(sketch);
            assert_eq!(bytes, postcard::to_stdvec(&first).unwrap());
            let decoded: DdSketch = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(&decoded, sketch);
            assert!(decoded.validate().is_ok());
            assert_eq!(decoded.quantile(0.5), sketch.quantile(0.5));
            assert_eq!(
                serde_json::to_value(sketch).unwrap(),
                serde_json::to_value(&first).unwrap()
            );
        }
    }

    #[test]
    fn a_count_past_32_bits_widens_the_bins_and_stays_exact() {
        let big = u64::from(u32::MAX) + 10;
        let mut merged = DdSketch::default();
        for x in [1.0, 50.0, 1e6] {
            let mut part = DdSketch::default();
            part.add_f64(x);
            part.positive = Bins::from_pairs(part.positive.iter().map(|(i, _)| (i, big)).collect());
            part.count = big;
            merged.merge(&part);
            merged.merge(&part);
        }
        merged.add_f64(50.0);
        assert!(matches!(merged.positive.0, Held::Wide(_)));
        assert_eq!(merged.positive.total(), Some(6 * big + 1));
        let mut narrow = Bins::default();
        narrow.add(7, u64::from(u32::MAX));
        narrow.add(7, 1);
        assert_eq!(
            narrow.iter().collect::<Vec<_>>(),
            [(7, u64::from(u32::MAX) + 1)]
        );
        let bytes = postcard::to_stdvec(&merged).unwrap();
        assert_eq!(postcard::from_bytes::<DdSketch>(&bytes).unwrap(), merged);
        for (i, n) in [
            (i32::MIN, 1),
            (-1, 2),
            (0, 3),
            (i32::MAX, u64::from(u32::MAX)),
        ] {
            assert_eq!(unpack(pack(i, n as u32)), (i, n));
        }
        assert!(
            pack(-1, u32::MAX) < pack(0, 0),
            "packed bins sort as their indices"
        );
    }

    #[test]
    fn broken_sketches_are_refused() {
        assert_eq!(DdSketch::default().quantile(0.5), None);
        let broken = DdSketch {
            count: 3,
            ..DdSketch::default()
        };
        assert!(broken.validate().is_err());
        let unsorted = DdSketch {
            positive: Bins::from_pairs(vec![(3, 1), (1, 1)]),
            count: 2,
            ..DdSketch::default()
        };
        assert!(unsorted.validate().is_err());
        let empty_bin = DdSketch {
            positive: Bins::from_pairs(vec![(1, 0)]),
            ..DdSketch::default()
        };
        assert!(empty_bin.validate().is_err());
    }
}
