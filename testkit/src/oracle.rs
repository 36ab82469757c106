//! The oracle an answer must equal: the produced messages of each partition decoded once, a
//! plain fold of exactly the offsets an answer's provenance names, regrouped as the query asks.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_shared::aggregate::MetricState;
use braid_shared::{Config, Decoder, Event, Value, ViewState};
use serde_json::Value as Json;

/// One query the tests ask again and again.
pub struct Shape {
    pub view: &'static str,
    /// Extra parameters: filters, `group_by`.
    pub params: &'static str,
    /// Group-by fields kept (`None`: all of the view's).
    pub keep: Option<&'static [&'static str]>,
    pub step_ms: Option<i64>,
    /// Required group values (the filters of `params`).
    pub filters: &'static [(&'static str, &'static str)],
}

/// Every country, per hour.
pub const COUNTRY_HOURS: Shape = Shape {
    view: "country_hour",
    params: "",
    keep: None,
    step_ms: Some(3_600_000),
    filters: &[],
};

/// Every card merged away: one total per bucket.
pub const CARD_TOTALS: Shape = Shape {
    view: "card_minute",
    params: "&group_by=",
    keep: Some(&[]),
    step_ms: None,
    filters: &[],
};

/// One card, its minutes re-bucketed to 10 minutes: a point query (every group-by field
/// filtered), answered by folding the key's cells as they are visited.
pub const ONE_CARD: Shape = Shape {
    view: "card_minute",
    params: "&card_id=card-7",
    keep: None,
    step_ms: Some(600_000),
    filters: &[("card_id", "card-7")],
};

pub const FROM_MS: i64 = 1_789_900_000_000;
pub const TO_MS: i64 = 1_790_100_000_000;

impl Shape {
    pub fn url(&self, base: &str) -> String {
        let step = self
            .step_ms
            .map(|ms| format!("&step={}s", ms / 1000))
            .unwrap_or_default();
        format!(
            "{base}/v1/views/{}?from={FROM_MS}&to={TO_MS}{step}{}",
            self.view, self.params
        )
    }
}

/// The messages of each partition in offset order, decoded once.
pub struct Produced {
    pub partitions: Vec<Vec<Option<Event>>>,
}

impl Produced {
    pub fn new(config: &Config, source: &str, partitions: &[Vec<Vec<u8>>]) -> Self {
        let decoder = Decoder::new(config.source(source).unwrap());
        Self {
            partitions: partitions
                .iter()
                .map(|p| p.iter().map(|m| decoder.decode(m).ok()).collect())
                .collect(),
        }
    }

    pub fn len(&self, partition: usize) -> i64 {
        self.partitions[partition].len() as i64
    }

    /// Every valid event, partition by partition in offset order.
    pub fn events(&self) -> Vec<Event> {
        self.partitions
            .iter()
            .flatten()
            .flatten()
            .cloned()
            .collect()
    }

    pub fn rejected(&self) -> usize {
        self.partitions
            .iter()
            .flatten()
            .filter(|e| e.is_none())
            .count()
    }
}

/// Checks an answer against the reference over exactly the offsets its provenance names:
/// a plain fold of the produced events, regrouped as the query asks.
pub fn check_exact(
    config: &Config,
    topic: &str,
    produced: &Produced,
    shape: &Shape,
    answer: &Json,
) -> Result<(), String> {
    let offsets = &answer["provenance"]["offsets"];
    let view = Arc::clone(config.view(shape.view).unwrap());
    let events = events_upto(topic, produced, offsets)?;
    let reference = ViewState::recompute(Arc::clone(&view), &events);
    let expected = regroup(&reference, shape);
    let Some(got) = answer["rows"].as_array() else {
        return Err(format!("no rows: {answer}"));
    };
    if got.len() != expected.len() {
        return Err(format!(
            "{} {}: {} rows, expected {} (offsets {offsets})",
            shape.view,
            shape.params,
            got.len(),
            expected.len()
        ));
    }
    for (got, expected) in got.iter().zip(&expected) {
        if let Err(difference) = same(got, expected, "") {
            return Err(format!(
                "{} {}: {difference}\n got      {got}\n expected {expected}\n offsets {offsets}",
                shape.view, shape.params
            ));
        }
    }
    Ok(())
}

/// The produced events of each partition below the offset `offsets` names for it.
fn events_upto(topic: &str, produced: &Produced, offsets: &Json) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for (p, messages) in produced.partitions.iter().enumerate() {
        let upto = offsets[format!("{topic}/{p}")].as_i64().unwrap_or(0);
        if upto > messages.len() as i64 {
            return Err(format!(
                "answer claims offset {upto} of partition {p}, only {} were produced",
                messages.len()
            ));
        }
        events.extend(messages[..upto.max(0) as usize].iter().flatten().cloned());
    }
    Ok(events)
}

/// One trends query the tests ask again and again: the keys of a view whose `metric` over
/// `[at - window, at)` rises most above its rate over the `baseline` before it.
pub struct TrendShape {
    pub view: &'static str,
    pub metric: &'static str,
    pub window_ms: i64,
    pub baseline_ms: i64,
    /// A whole number of the view's buckets.
    pub at_ms: i64,
    pub limit: usize,
}

/// The ten cards whose transactions over 5 minutes rose most above their rate over the hour
/// before; the window ends 6 minutes into the generators' event times.
pub const CARD_TRENDS: TrendShape = TrendShape {
    view: "card_minute",
    metric: "tx",
    window_ms: 300_000,
    baseline_ms: 3_600_000,
    at_ms: (1_790_000_000_000 / 60_000 + 6) * 60_000,
    limit: 10,
};

impl TrendShape {
    pub fn url(&self, base: &str) -> String {
        format!(
            "{base}/v1/trends/{}?metric={}&window={}s&baseline={}s&at={}&limit={}",
            self.view,
            self.metric,
            self.window_ms / 1000,
            self.baseline_ms / 1000,
            self.at_ms,
            self.limit
        )
    }

    /// The trends a plain fold of `events` gives, as the API writes them: per key, the metric
    /// over the window and over the baseline scaled to one window; highest z first, ties in
    /// key order.
    pub fn expected(&self, config: &Config, events: &[Event]) -> Vec<Json> {
        let view = Arc::clone(config.view(self.view).unwrap());
        let metric = view
            .metrics
            .iter()
            .position(|m| m.name == self.metric)
            .unwrap();
        let state = ViewState::recompute(Arc::clone(&view), events);
        let (from, baseline_from) = (
            self.at_ms - self.window_ms,
            self.at_ms - self.window_ms - self.baseline_ms,
        );
        let mut totals: BTreeMap<Vec<Value>, (f64, f64)> = BTreeMap::new();
        for (key, states) in state.cells() {
            if key.bucket_ms < baseline_from || key.bucket_ms >= self.at_ms {
                continue;
            }
            let value = states[metric]
                .finalize(&view.metrics[metric].expr)
                .as_f64()
                .unwrap_or(0.0);
            let entry = totals.entry(key.group.0.to_vec()).or_default();
            if key.bucket_ms >= from {
                entry.0 += value;
            } else {
                entry.1 += value;
            }
        }
        let scale = self.window_ms as f64 / self.baseline_ms as f64;
        let mut trends: Vec<(Vec<Value>, f64, f64, f64)> = totals
            .into_iter()
            .map(|(key, (value, base))| {
                let rate = base * scale;
                (key, value, rate, (value - rate) / (rate + 1.0).sqrt())
            })
            .collect();
        trends.sort_by(|a, b| b.3.total_cmp(&a.3));
        trends.truncate(self.limit);
        trends
            .into_iter()
            .map(|(key, value, rate, z)| {
                let key: serde_json::Map<String, Json> = view
                    .group_by
                    .iter()
                    .zip(&key)
                    .map(|(f, v)| (f.name.clone(), v.to_json()))
                    .collect();
                serde_json::json!({
                    "key": key,
                    "value": value,
                    "baseline_rate": rate,
                    "ratio": value / rate.max(1.0),
                    "z": z,
                })
            })
            .collect()
    }

    /// Checks a trends answer against a plain fold of exactly the offsets its provenance
    /// names.
    pub fn check(
        &self,
        config: &Config,
        topic: &str,
        produced: &Produced,
        answer: &Json,
    ) -> Result<(), String> {
        let offsets = &answer["provenance"]["offsets"];
        let events = events_upto(topic, produced, offsets)?;
        let expected = Json::Array(self.expected(config, &events));
        same(&answer["trends"], &expected, "trends").map_err(|difference| {
            format!(
                "trends of {} by {}: {difference}\n got      {}\n expected {expected}\n offsets {offsets}",
                self.view, self.metric, answer["trends"]
            )
        })
    }
}

/// A query the tests ask: a view's rows or its trends.
pub enum Asked {
    View(Shape),
    Trends(TrendShape),
}

impl Asked {
    pub fn url(&self, base: &str) -> String {
        match self {
            Asked::View(shape) => shape.url(base),
            Asked::Trends(trends) => trends.url(base),
        }
    }

    /// What is asked, for messages.
    pub fn name(&self) -> String {
        match self {
            Asked::View(shape) => format!("{} {}", shape.view, shape.params),
            Asked::Trends(trends) => format!("trends of {} by {}", trends.view, trends.metric),
        }
    }

    /// Checks an answer against the reference at its provenance's offsets.
    pub fn check(
        &self,
        config: &Config,
        topic: &str,
        produced: &Produced,
        answer: &Json,
    ) -> Result<(), String> {
        match self {
            Asked::View(shape) => check_exact(config, topic, produced, shape, answer),
            Asked::Trends(trends) => trends.check(config, topic, produced, answer),
        }
    }
}

/// The reference's rows as the API shapes them.
fn regroup(state: &ViewState, shape: &Shape) -> Vec<Json> {
    let view = state.view();
    let kept: Vec<usize> = match shape.keep {
        None => (0..view.group_by.len()).collect(),
        Some(names) => view
            .group_by
            .iter()
            .enumerate()
            .filter(|(_, f)| names.contains(&f.name.as_str()))
            .map(|(i, _)| i)
            .collect(),
    };
    let mut groups: BTreeMap<(i64, Vec<Value>), Vec<MetricState>> = BTreeMap::new();
    for (key, states) in state.cells() {
        if key.bucket_ms < FROM_MS || key.bucket_ms >= TO_MS {
            continue;
        }
        let wanted = shape.filters.iter().all(|(field, value)| {
            let i = view.group_by.iter().position(|f| f.name == *field).unwrap();
            key.group.0[i] == Value::Str((*value).into())
        });
        if !wanted {
            continue;
        }
        let bucket = shape.step_ms.map_or(FROM_MS, |step| {
            key.bucket_ms - key.bucket_ms.rem_euclid(step)
        });
        let group = kept.iter().map(|&i| key.group.0[i].clone()).collect();
        match groups.entry((bucket, group)) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(states.to_vec());
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                for (into, from) in slot.get_mut().iter_mut().zip(states) {
                    into.merge(from).unwrap();
                }
            }
        }
    }
    groups
        .into_iter()
        .map(|((bucket, group), states)| {
            let mut row = serde_json::Map::new();
            row.insert("bucket".into(), rfc3339(bucket).into());
            for (&i, value) in kept.iter().zip(&group) {
                row.insert(view.group_by[i].name.clone(), value.to_json());
            }
            for (metric, state) in view.metrics.iter().zip(&states) {
                row.insert(metric.name.clone(), state.finalize(&metric.expr));
            }
            Json::Object(row)
        })
        .collect()
}

/// Equal JSON, with floats to 1e-9 relative.
pub fn same(got: &Json, expected: &Json, at: &str) -> Result<(), String> {
    match (got, expected) {
        (Json::Number(a), Json::Number(b)) => {
            if a == b {
                return Ok(());
            }
            let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            let ok = (a.is_f64() || b.is_f64())
                && (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-300);
            if ok {
                Ok(())
            } else {
                Err(format!("{at}: {a} != {b}"))
            }
        }
        (Json::Object(a), Json::Object(b)) => {
            if a.len() != b.len() {
                return Err(format!("{at}: fields {:?} != {:?}", a.keys(), b.keys()));
            }
            for (key, value) in b {
                same(
                    a.get(key).unwrap_or(&Json::Null),
                    value,
                    &format!("{at}.{key}"),
                )?;
            }
            Ok(())
        }
        (Json::Array(a), Json::Array(b)) => {
            if a.len() != b.len() {
                return Err(format!("{at}: {} items != {}", a.len(), b.len()));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                same(x, y, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (a, b) if a == b => Ok(()),
        (a, b) => Err(format!("{at}: {a} != {b}")),
    }
}

/// A bucket start as answers write it (`2026-09-21T12:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
