//! Trends: the keys of a view whose `count` or `sum` metric over a recent window rises most
//! above its baseline rate. Both spans are read in one merged answer at the view's granularity,
//! so the window and the baseline are exact like any answer and share its provenance.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_shared::{CellQuery, Value, ViewDef};

use crate::answer::{self, AnswerError, Provenance, Regroup, Sources};

/// Which trends to find.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendQuery {
    /// Index of a `count` or `sum` metric of the view.
    pub metric: usize,
    /// The window `[at - window, at)` and the baseline before it, both whole numbers of the
    /// view's buckets.
    pub window_ms: i64,
    pub baseline_ms: i64,
    pub at_ms: i64,
    /// Keys answered at most.
    pub limit: usize,
    /// Keys whose baseline rate is below this are left out.
    pub min_baseline: f64,
}

impl TrendQuery {
    /// Start of the window.
    pub fn from_ms(&self) -> i64 {
        self.at_ms - self.window_ms
    }

    /// Start of the baseline.
    pub fn baseline_from_ms(&self) -> i64 {
        self.from_ms() - self.baseline_ms
    }
}

/// One key trending.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    /// The key's value of each group-by field of the view.
    pub key: Vec<Value>,
    /// The metric over the window.
    pub value: f64,
    /// The metric over the baseline, scaled to one window (`× window / baseline`).
    pub baseline_rate: f64,
    /// `value / max(baseline_rate, 1)`.
    pub ratio: f64,
    /// `(value - baseline_rate) / sqrt(baseline_rate + 1)`: the order, descending.
    pub z: f64,
}

impl Trend {
    fn of(key: Vec<Value>, value: f64, baseline_rate: f64) -> Self {
        Self {
            key,
            value,
            baseline_rate,
            ratio: value / baseline_rate.max(1.0),
            z: (value - baseline_rate) / (baseline_rate + 1.0).sqrt(),
        }
    }
}

/// The trends, highest `z` first (ties in key order), and where they were read from.
pub struct Trends {
    pub trends: Vec<Trend>,
    pub provenance: Provenance,
}

/// The keys of `view` (on `topic`) trending up as `query` asks, as of `now_ms`.
pub async fn trends(
    sources: Sources<'_>,
    view: &Arc<ViewDef>,
    topic: &str,
    query: &TrendQuery,
    now_ms: i64,
) -> Result<Trends, AnswerError> {
    let (from, baseline_from) = (query.from_ms(), query.baseline_from_ms());
    let cells = CellQuery {
        from_ms: baseline_from,
        to_ms: query.at_ms,
        filters: Vec::new(),
    };
    // Buckets of the granularity, so the window and the baseline can be told apart.
    let regroup = Regroup {
        from_ms: baseline_from,
        step_ms: Some(view.granularity_ms),
        group_by: (0..view.group_by.len()).collect(),
    };
    let grouped = answer::grouped(sources, view, topic, &cells, &regroup, now_ms).await?;
    let expr = &view.metrics[query.metric].expr;
    // Per key: (metric over the window, metric over the baseline).
    let mut totals: BTreeMap<&[Value], (f64, f64)> = BTreeMap::new();
    for ((bucket, key), states) in &grouped.groups {
        let value = states[query.metric].finalize(expr).as_f64().unwrap_or(0.0);
        let entry = totals.entry(key.as_slice()).or_default();
        if *bucket >= from {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    let scale = query.window_ms as f64 / query.baseline_ms as f64;
    let mut trends: Vec<Trend> = totals
        .into_iter()
        .map(|(key, (value, base))| Trend::of(key.to_vec(), value, base * scale))
        .filter(|t| t.baseline_rate >= query.min_baseline)
        .collect();
    trends.sort_by(|a, b| b.z.total_cmp(&a.z));
    trends.truncate(query.limit);
    Ok(Trends {
        trends,
        provenance: grouped.provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trend_is_scored_against_its_baseline_rate() {
        let trend = Trend::of(vec![Value::Str("a".into())], 10.0, 3.0);
        assert_eq!(trend.ratio, 10.0 / 3.0);
        assert_eq!(trend.z, 7.0 / 2.0);
        // Under one event per window, the ratio is over one.
        let fresh = Trend::of(Vec::new(), 5.0, 0.0);
        assert_eq!((fresh.ratio, fresh.z), (5.0, 5.0));
    }
}
