//! `quantile`: a DDSketch-style relative-error sketch. Values map to logarithmic bins of ratio
//! gamma = (1 + a) / (1 - a) with a = 1%; a bin's representative is within 1% of every value in
//! it, so any quantile is answered within 1% relative error. Bins are plain counts, never
//! collapsed, so merging sketches of any split of the input gives exactly the sketch of the whole.
//! The number of bins grows with log(max / min), not with the data: about 2,300 bins span twenty
//! orders of magnitude.

use serde::{Deserialize, Serialize};

use crate::event::Value;

/// Relative accuracy of quantile answers.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Magnitudes below this count as zero.
const MIN_INDEXABLE: f64 = 1e-12;
/// 1 / ln(gamma) for gamma = 1.01 / 0.99.
const INV_LN_GAMMA: f64 = 49.998_333_288_886_78;

/// Non-empty bins as `(index, count)`, sorted by index, counts positive: one representation per
/// content, so equal stores compare equal. Sparse, because a cell often holds few values spread
/// over a wide range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bins(pub Vec<(i32, u64)>);

impl Bins {
    fn add(&mut self, index: i32, n: u64) {
        match self.0.binary_search_by_key(&index, |&(i, _)| i) {
            Ok(at) => self.0[at].1 += n,
            Err(at) => self.0.insert(at, (index, n)),
        }
    }

    fn merge(&mut self, other: &Bins) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        let mut merged = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&(i, n)), Some(&&(j, m))) if i == j => {
                    a.next();
                    b.next();
                    (i, n + m)
                }
                (Some(&&x), Some(&&y)) if x.0 < y.0 => {
                    a.next();
                    x
                }
                (_, Some(&&y)) => {
                    b.next();
                    y
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        self.0 = merged;
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        self.0.iter().copied()
    }

    fn total(&self) -> Option<u64> {
        self.0
            .iter()
            .try_fold(0u64, |acc, &(_, n)| acc.checked_add(n))
    }

    fn is_canonical(&self) -> bool {
        self.0.iter().all(|&(_, n)| n > 0) && self.0.windows(2).all(|w| w[0].0 < w[1].0)
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
    pub fn validate(&self) -> Result<(), String> {
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

    #[test]
    fn broken_sketches_are_refused() {
        assert_eq!(DdSketch::default().quantile(0.5), None);
        let broken = DdSketch {
            count: 3,
            ..DdSketch::default()
        };
        assert!(broken.validate().is_err());
        let unsorted = DdSketch {
            positive: Bins(vec![(3, 1), (1, 1)]),
            count: 2,
            ..DdSketch::default()
        };
        assert!(unsorted.validate().is_err());
        let empty_bin = DdSketch {
            positive: Bins(vec![(1, 0)]),
            ..DdSketch::default()
        };
        assert!(empty_bin.validate().is_err());
    }
}
