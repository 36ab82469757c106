//! `top_k`: a Misra-Gries heavy-hitters summary with capacity `c = max(10 k, 64)`.
//!
//! While a cell has seen at most `c` distinct keys the counts are exact. Beyond that, merging
//! keeps the `c` largest counters after subtracting the (c+1)-th largest (Agarwal et al.,
//! "Mergeable summaries", 2012): every reported count is a lower bound, and the true count
//! exceeds it by at most `(n - sum of counters) / (c + 1)`, which is reported as the error
//! bound. Merging is commutative exactly; it is associative exactly while the keys fit in
//! `c` counters, and within that error bound beyond.

use crate::error::Invalid;
use std::cmp::Reverse;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// The heavy-hitters summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopK {
    pub capacity: u32,
    /// Number of non-null values offered.
    pub total: u64,
    pub counters: FxHashMap<String, u64>,
}

/// One entry of a top-k answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeavyHitter {
    pub value: String,
    /// A lower bound on the true count.
    pub count: u64,
}

impl TopK {
    /// The counters kept for a `top_k(_, k)` metric.
    pub fn capacity_for(k: u32) -> u32 {
        k.saturating_mul(10).max(64)
    }

    pub fn new(k: u32) -> Self {
        Self {
            capacity: Self::capacity_for(k),
            total: 0,
            counters: FxHashMap::default(),
        }
    }

    pub fn insert(&mut self, key: &str) {
        self.total += 1;
        if let Some(count) = self.counters.get_mut(key) {
            *count += 1;
            return;
        }
        self.counters.insert(key.to_owned(), 1);
        self.prune();
    }

    pub fn merge(&mut self, other: &Self) {
        self.total += other.total;
        for (key, &n) in &other.counters {
            *self.counters.entry(key.clone()).or_default() += n;
        }
        self.prune();
    }

    fn prune(&mut self) {
        let capacity = self.capacity as usize;
        if self.counters.len() <= capacity {
            return;
        }
        let mut counts: Vec<u64> = self.counters.values().copied().collect();
        let (_, &mut cut, _) = counts.select_nth_unstable_by_key(capacity, |&n| Reverse(n));
        self.counters.retain(|_, n| {
            *n -= cut.min(*n);
            *n > 0
        });
    }

    /// The largest possible undercount of any reported key.
    pub fn error_bound(&self) -> u64 {
        let kept: u64 = self.counters.values().sum();
        (self.total - kept.min(self.total)) / (u64::from(self.capacity) + 1)
    }

    /// The `k` heaviest keys, heaviest first, ties by key.
    pub fn top(&self, k: usize) -> Vec<HeavyHitter> {
        let mut entries: Vec<(&String, &u64)> = self.counters.iter().collect();
        entries.sort_unstable_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        entries
            .into_iter()
            .take(k)
            .map(|(value, &count)| HeavyHitter {
                value: value.clone(),
                count,
            })
            .collect()
    }

    /// Checks the invariants of a decoded summary.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.problems().map_err(Invalid)
    }

    pub(crate) fn problems(&self) -> std::result::Result<(), String> {
        if self.counters.len() > self.capacity as usize {
            return Err(format!(
                "{} counters exceed capacity {}",
                self.counters.len(),
                self.capacity
            ));
        }
        let kept =
            self.counters.values().try_fold(
                0u64,
                |acc, &n| if n == 0 { None } else { acc.checked_add(n) },
            );
        match kept {
            Some(kept) if kept <= self.total => Ok(()),
            _ => Err("counters are empty, overflow or exceed the total".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_capacity() {
        let mut top = TopK::new(2);
        for key in ["a", "b", "a", "c", "a", "b"] {
            top.insert(key);
        }
        assert_eq!(top.error_bound(), 0);
        let got = top.top(2);
        assert_eq!(
            got[0],
            HeavyHitter {
                value: "a".into(),
                count: 3
            }
        );
        assert_eq!(
            got[1],
            HeavyHitter {
                value: "b".into(),
                count: 2
            }
        );
    }

    #[test]
    fn heavy_hitters_survive_a_long_tail_within_the_bound() {
        let mut top = TopK::new(3);
        let mut truth: FxHashMap<String, u64> = FxHashMap::default();
        for i in 0..100_000u64 {
            let key = if i % 5 == 0 {
                "hot".to_owned()
            } else if i % 7 == 0 {
                "warm".to_owned()
            } else {
                format!("tail-{}", i % 9973)
            };
            *truth.entry(key.clone()).or_default() += 1;
            top.insert(&key);
        }
        let bound = top.error_bound();
        assert!(bound <= 100_000 / 65, "bound {bound}");
        let got = top.top(3);
        assert_eq!(got[0].value, "hot");
        assert_eq!(got[1].value, "warm");
        for hitter in &got {
            let true_count = truth[&hitter.value];
            assert!(hitter.count <= true_count && true_count <= hitter.count + bound);
        }
        assert!(top.validate().is_ok());
    }
}
