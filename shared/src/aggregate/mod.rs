//! The aggregate algebra: every metric state is a commutative monoid with a versioned binary
//! encoding, so both layers build, store and merge states the same way.
//!
//! `exact`: count, sum, min, max, avg; `hll`: approx_distinct; `ddsketch`: quantile;
//! `topk`: top_k.

mod ddsketch;
mod exact;
mod hll;
mod topk;

use crate::error::Invalid;
use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

pub use crate::event::compare_numbers;
pub use ddsketch::{DdSketch, RELATIVE_ACCURACY as QUANTILE_RELATIVE_ACCURACY};
pub use exact::{AvgState, Extreme, SumState};
pub use hll::{Hll, STANDARD_ERROR as DISTINCT_STANDARD_ERROR};
pub use topk::{HeavyHitter, TopK};

use crate::error::{Error, Result};
use crate::event::Value;
use crate::metric::MetricExpr;

/// Version byte that starts every encoded state.
pub const STATE_FORMAT_VERSION: u8 = 1;

/// The state of one metric in one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricState {
    Count(u64),
    Sum(SumState),
    Min(Extreme),
    Max(Extreme),
    Avg(Box<AvgState>),
    /// Held in place: a sketch of a few values needs no allocation of its own.
    Distinct(Hll),
    Quantile(Box<DdSketch>),
    TopK(Box<TopK>),
}

impl MetricState {
    /// The identity element for a metric.
    pub fn empty(expr: &MetricExpr) -> Self {
        match expr {
            MetricExpr::Count => Self::Count(0),
            MetricExpr::Sum { .. } => Self::Sum(SumState::default()),
            MetricExpr::Min { .. } => Self::Min(Extreme::default()),
            MetricExpr::Max { .. } => Self::Max(Extreme::default()),
            MetricExpr::Avg { .. } => Self::Avg(Box::default()),
            MetricExpr::ApproxDistinct { .. } => Self::Distinct(Hll::default()),
            MetricExpr::Quantile { .. } => Self::Quantile(Box::default()),
            MetricExpr::TopK { k, .. } => Self::TopK(Box::new(TopK::new(*k))),
        }
    }

    /// Adds one event whose metric field holds `value` (`Null` when absent; `count` ignores it).
    /// `key` is a scratch buffer for the key form of distinct and top-k values.
    pub fn update(&mut self, value: &Value, key: &mut String) {
        match self {
            Self::Count(n) => *n += 1,
            Self::Sum(sum) => sum.add(value),
            Self::Min(min) => min.offer(value, Ordering::Less),
            Self::Max(max) => max.offer(value, Ordering::Greater),
            Self::Avg(avg) => avg.add(value),
            Self::Distinct(hll) => match value {
                Value::Null => {}
                Value::Str(s) => hll.insert(s.as_bytes()),
                other => {
                    key.clear();
                    other.write_key(key);
                    hll.insert(key.as_bytes());
                }
            },
            Self::Quantile(sketch) => sketch.add(value),
            Self::TopK(top) => match value {
                Value::Null => {}
                Value::Str(s) => top.insert(s),
                other => {
                    key.clear();
                    other.write_key(key);
                    top.insert(key);
                }
            },
        }
    }

    /// Adds one event whose metric field holds the string `s`, without building a [`Value`]:
    /// the same as `update(&Value::Str(s.into()), ..)`.
    pub fn update_str(&mut self, s: &str) {
        match self {
            Self::Count(n) => *n += 1,
            Self::Distinct(hll) => hll.insert(s.as_bytes()),
            Self::TopK(top) => top.insert(s),
            // Numeric metrics ignore strings, as `update` does.
            Self::Sum(_) | Self::Min(_) | Self::Max(_) | Self::Avg(_) | Self::Quantile(_) => {}
        }
    }

    /// Folds `other` into `self`. Fails only when the two are states of different metrics.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        match (self, other) {
            (Self::Count(a), Self::Count(b)) => *a += b,
            (Self::Sum(a), Self::Sum(b)) => a.merge(b),
            (Self::Min(a), Self::Min(b)) => a.merge(b, Ordering::Less),
            (Self::Max(a), Self::Max(b)) => a.merge(b, Ordering::Greater),
            (Self::Avg(a), Self::Avg(b)) => a.merge(b),
            (Self::Distinct(a), Self::Distinct(b)) => a.merge(b),
            (Self::Quantile(a), Self::Quantile(b)) => a.merge(b),
            (Self::TopK(a), Self::TopK(b)) if a.capacity == b.capacity => a.merge(b),
            (a, b) => {
                return Err(Error::Mismatch {
                    what: "metric states",
                    reason: format!("{} with {}", a.kind_name(), b.kind_name()),
                });
            }
        }
        Ok(())
    }

    /// Whether this is a state of the metric `expr` (its kind, and a top-k's capacity).
    pub fn fits(&self, expr: &MetricExpr) -> bool {
        match (self, expr) {
            (Self::Count(_), MetricExpr::Count)
            | (Self::Sum(_), MetricExpr::Sum { .. })
            | (Self::Min(_), MetricExpr::Min { .. })
            | (Self::Max(_), MetricExpr::Max { .. })
            | (Self::Avg(_), MetricExpr::Avg { .. })
            | (Self::Distinct(_), MetricExpr::ApproxDistinct { .. })
            | (Self::Quantile(_), MetricExpr::Quantile { .. }) => true,
            (Self::TopK(top), MetricExpr::TopK { k, .. }) => top.capacity == TopK::capacity_for(*k),
            _ => false,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Count(_) => "count",
            Self::Sum(_) => "sum",
            Self::Min(_) => "min",
            Self::Max(_) => "max",
            Self::Avg(_) => "avg",
            Self::Distinct(_) => "approx_distinct",
            Self::Quantile(_) => "quantile",
            Self::TopK(_) => "top_k",
        }
    }

    /// The metric's answer as JSON.
    pub fn finalize(&self, expr: &MetricExpr) -> serde_json::Value {
        match (self, expr) {
            (Self::Count(n), _) => serde_json::Value::from(*n),
            (Self::Sum(sum), _) => sum.to_json(),
            (Self::Min(e) | Self::Max(e), _) => e.to_json(),
            (Self::Avg(avg), _) => avg.to_json(),
            (Self::Distinct(hll), _) => serde_json::Value::from(hll.estimate().round() as u64),
            (Self::Quantile(sketch), MetricExpr::Quantile { q, .. }) => sketch
                .quantile(*q)
                .map_or(serde_json::Value::Null, serde_json::Value::from),
            (Self::TopK(top), MetricExpr::TopK { k, .. }) => {
                serde_json::to_value(top.top(*k as usize)).unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// For sketches, a description of the answer's error bound; `None` for exact metrics.
    pub fn error_bound(&self) -> Option<serde_json::Value> {
        match self {
            Self::Distinct(_) => Some(serde_json::json!({
                "relative_standard_error": DISTINCT_STANDARD_ERROR,
            })),
            Self::Quantile(_) => Some(serde_json::json!({
                "relative_error": QUANTILE_RELATIVE_ACCURACY,
            })),
            Self::TopK(top) => Some(serde_json::json!({ "max_undercount": top.error_bound() })),
            _ => None,
        }
    }

    /// Encodes the state: a version byte, then the state in postcard's stable format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding of [`MetricState::encode`] to `out` (no allocation of its own).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(STATE_FORMAT_VERSION);
        // Serialise into the spare capacity (growing it until the state fits): much faster
        // than postcard's byte-at-a-time growable flavours.
        let start = out.len();
        let mut room = 64;
        loop {
            out.resize(start + room, 0);
            match postcard::to_slice(self, &mut out[start..]) {
                Ok(written) => {
                    let len = written.len();
                    out.truncate(start + len);
                    return;
                }
                Err(postcard::Error::SerializeBufferFull) => room *= 4,
                // Serialising plain data cannot fail otherwise.
                Err(_) => {
                    out.truncate(start);
                    return;
                }
            }
        }
    }

    /// Decodes and validates an encoded state.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let codec = |reason: String| Error::Codec {
            what: "metric state",
            reason,
        };
        let (&version, payload) = bytes
            .split_first()
            .ok_or_else(|| codec("empty input".to_owned()))?;
        if version != STATE_FORMAT_VERSION {
            return Err(codec(format!(
                "unknown format version {version} (expected {STATE_FORMAT_VERSION})"
            )));
        }
        let (state, rest): (Self, &[u8]) =
            postcard::take_from_bytes(payload).map_err(|e| codec(e.to_string()))?;
        if !rest.is_empty() {
            return Err(codec(format!("{} trailing bytes", rest.len())));
        }
        state.problems().map_err(codec)?;
        Ok(state)
    }

    /// Checks the invariants of a state that came from outside (a file, the network).
    pub fn check(&self) -> std::result::Result<(), Invalid> {
        self.problems().map_err(Invalid)
    }

    fn problems(&self) -> std::result::Result<(), String> {
        match self {
            Self::Sum(sum) if !(sum.float.is_finite() && sum.compensation.is_finite()) => {
                Err("sum is not finite".to_owned())
            }
            Self::Avg(avg) if !(avg.sum.float.is_finite() && avg.sum.compensation.is_finite()) => {
                Err("average sum is not finite".to_owned())
            }
            Self::Min(e) | Self::Max(e) => match &e.0 {
                None | Some(Value::Int(_)) => Ok(()),
                Some(Value::Float(f)) if f.is_finite() => Ok(()),
                Some(other) => Err(format!("extreme holds non-numeric {}", other.type_name())),
            },
            Self::Distinct(hll) => hll.problems(),
            Self::Quantile(sketch) => sketch.problems(),
            Self::TopK(top) => top.problems(),
            _ => Ok(()),
        }
    }

    /// Compares two states of the same metric, allowing float sums to differ by `relative`
    /// (of the magnitude of their terms) and, for top-k, counts by the summaries' error bounds.
    /// Returns a description of the first difference.
    pub fn approx_eq(&self, other: &Self, relative: f64) -> std::result::Result<(), Invalid> {
        self.difference(other, relative).map_err(Invalid)
    }

    pub(crate) fn difference(
        &self,
        other: &Self,
        relative: f64,
    ) -> std::result::Result<(), String> {
        let close = |a: &SumState, b: &SumState| {
            let scale = a.as_f64().abs().max(b.as_f64().abs()).max(1.0);
            a.int == b.int && (a.as_f64() - b.as_f64()).abs() <= relative * scale
        };
        let same = match (self, other) {
            (Self::Sum(a), Self::Sum(b)) => close(a, b),
            (Self::Avg(a), Self::Avg(b)) => a.count == b.count && close(&a.sum, &b.sum),
            (Self::TopK(a), Self::TopK(b)) => {
                let slack = a.error_bound() + b.error_bound();
                a.total == b.total
                    && a.capacity == b.capacity
                    && (slack > 0 || a.counters == b.counters)
                    && a.top(a.capacity as usize).iter().all(|h| {
                        let theirs = b.counters.get(&h.value).copied().unwrap_or(0);
                        h.count.abs_diff(theirs) <= slack
                    })
            }
            (a, b) => a == b,
        };
        if same {
            Ok(())
        } else {
            Err(format!("{self:?} != {other:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_garbage() {
        assert!(MetricState::decode(&[]).is_err());
        assert!(
            MetricState::decode(&[9, 0, 0])
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
        let mut bytes = MetricState::Count(7).encode();
        bytes.push(0);
        assert!(
            MetricState::decode(&bytes)
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
        assert_eq!(
            MetricState::decode(&MetricState::Count(7).encode()).unwrap(),
            MetricState::Count(7)
        );
    }

    #[test]
    fn states_stay_small() {
        // Cells hold one state per metric; these sizes are what a live cell costs.
        assert_eq!(std::mem::size_of::<Value>(), 24);
        assert!(
            std::mem::size_of::<MetricState>() <= 32,
            "{}",
            std::mem::size_of::<MetricState>()
        );
    }

    #[test]
    fn merge_of_different_metrics_fails() {
        let mut count = MetricState::Count(1);
        assert!(count.merge(&MetricState::Sum(SumState::default())).is_err());
    }
}
