//! `quantile`: a DDSketch-style relative-error sketch. Values map to logarithmic bins of ratio
//! gamma = (1 + a) / (1 - a) with a = 1%; a bin's representative is within 1% of every value in
//! it, so any quantile is answered within 1% relative error. Bins are plain counts, never
//! collapsed, so merging sketches of any split of the input gives exactly the sketch of the whole.
//! The number of bins grows with log(max / min), not with the data: about 2,300 bins span twenty
//! orders of magnitude.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Value;

/// Relative accuracy of quantile answers.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Magnitudes below this count as zero.
const MIN_INDEXABLE: f64 = 1e-12;

fn gamma_ln() -> f64 {
    let gamma = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
    gamma.ln()
}

/// The quantile sketch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DdSketch {
    /// Bins of positive values by index.
    pub positive: BTreeMap<i32, u64>,
    /// Bins of negative values by the index of their magnitude.
    pub negative: BTreeMap<i32, u64>,
    pub zero: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

impl DdSketch {
    fn index(magnitude: f64) -> i32 {
        // ceil(log_gamma(x)); magnitudes are in [1e-12, 1.8e308] so the index fits in i32.
        (magnitude.ln() / gamma_ln()).ceil() as i32
    }

    fn representative(index: i32) -> f64 {
        let gamma = gamma_ln().exp();
        2.0 * (f64::from(index) * gamma_ln()).exp() / (1.0 + gamma)
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
            *self.positive.entry(Self::index(x)).or_default() += 1;
        } else if x < -MIN_INDEXABLE {
            *self.negative.entry(Self::index(-x)).or_default() += 1;
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
        for (&i, &n) in &other.positive {
            *self.positive.entry(i).or_default() += n;
        }
        for (&i, &n) in &other.negative {
            *self.negative.entry(i).or_default() += n;
        }
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
        let mut answer = None;
        for (&i, &n) in self.negative.iter().rev() {
            seen += n;
            if seen > rank {
                answer = Some(-Self::representative(i));
                break;
            }
        }
        if answer.is_none() {
            seen += self.zero;
            if seen > rank {
                answer = Some(0.0);
            }
        }
        if answer.is_none() {
            for (&i, &n) in &self.positive {
                seen += n;
                if seen > rank {
                    answer = Some(Self::representative(i));
                    break;
                }
            }
        }
        answer.map(|x| x.clamp(self.min, self.max))
    }

    /// Checks the invariants of a decoded sketch.
    pub fn validate(&self) -> Result<(), String> {
        let binned = self
            .positive
            .values()
            .chain(self.negative.values())
            .try_fold(
                self.zero,
                |acc, &n| if n == 0 { None } else { acc.checked_add(n) },
            );
        match binned {
            Some(total) if total == self.count => {}
            Some(total) => {
                return Err(format!(
                    "bins hold {total} values but count is {}",
                    self.count
                ));
            }
            None => return Err("a bin is empty or the counts overflow".to_owned()),
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
    }

    #[test]
    fn empty_sketch_has_no_quantile() {
        assert_eq!(DdSketch::default().quantile(0.5), None);
        let broken = DdSketch {
            count: 3,
            ..DdSketch::default()
        };
        assert!(broken.validate().is_err());
    }
}
