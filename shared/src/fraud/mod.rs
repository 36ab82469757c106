//! Fraud scoring (`[fraud]`, docs/fraud.md): features (one metric of one view for the scored
//! event's key, over a window of event time ending at the event), rules over them, and the score
//! `1 - Π(1 - weight)` over the rules that fired.
//!
//! `rule`: the rule language. Reading a feature's merged value is the serving layer's part; this
//! module holds what is pure: the configuration, its validation, the windows and the score.

pub mod rule;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;

use crate::duration::{format_duration, parse_duration};
use crate::error::ConfigIssue;
use crate::event::Event;
use crate::metric::MetricExpr;
use crate::view::{SourceDef, ViewDef};

pub use rule::{Inputs, Rule};

/// Default `fraud.alert_threshold`.
pub const DEFAULT_ALERT_THRESHOLD: f64 = 0.7;
/// Default `fraud.retention`.
pub const DEFAULT_RETENTION: &str = "7d";

/// `[fraud]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FraudConfig {
    pub source: String,
    pub key: String,
    #[serde(default = "default_threshold")]
    pub alert_threshold: f64,
    #[serde(default)]
    pub alerts_topic: Option<String>,
    #[serde(default = "default_retention")]
    pub retention: String,
    #[serde(default)]
    pub feature: Vec<FeatureConfig>,
    #[serde(default)]
    pub rule: Vec<RuleConfig>,
}

fn default_threshold() -> f64 {
    DEFAULT_ALERT_THRESHOLD
}

fn default_retention() -> String {
    DEFAULT_RETENTION.to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    pub name: String,
    pub view: String,
    pub metric: String,
    pub window: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub when: String,
    pub weight: f64,
}

/// Validated fraud scoring.
#[derive(Debug, Clone)]
pub struct FraudDef {
    pub source: Arc<SourceDef>,
    pub key: String,
    /// Slot of `key` in the source's events.
    pub key_slot: usize,
    pub alert_threshold: f64,
    pub alerts_topic: Option<String>,
    pub retention_ms: i64,
    pub features: Vec<FeatureDef>,
    pub rules: Vec<RuleDef>,
}

#[derive(Debug, Clone)]
pub struct FeatureDef {
    pub name: String,
    pub view: Arc<ViewDef>,
    /// Index into the view's metrics.
    pub metric: usize,
    pub window_ms: i64,
}

impl FeatureDef {
    /// The buckets `[from, to)` of the feature's window for an event at `time_ms`: whole
    /// buckets, the event's own the last.
    pub fn window(&self, time_ms: i64) -> (i64, i64) {
        let to = self.view.bucket_of(time_ms) + self.view.granularity_ms;
        (to - self.window_ms, to)
    }
}

#[derive(Debug, Clone)]
pub struct RuleDef {
    pub name: String,
    pub when: String,
    pub rule: Rule,
    pub weight: f64,
}

/// One rule's outcome in a score.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fired {
    pub name: String,
    pub fired: bool,
    pub weight: f64,
}

/// A scored event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Score {
    pub score: f64,
    pub alert: bool,
    pub rules: Vec<Fired>,
}

impl FraudDef {
    /// Scores an event from its feature values (by index; `None`: no value).
    pub fn score(&self, event: &Event, features: &[Option<f64>]) -> Score {
        struct Values<'a> {
            event: &'a Event,
            features: &'a [Option<f64>],
        }
        impl Inputs for Values<'_> {
            fn feature(&self, index: usize) -> Option<f64> {
                self.features.get(index).copied().flatten()
            }
            fn field(&self, slot: usize) -> Option<f64> {
                self.event.values.get(slot)?.as_f64()
            }
        }
        let inputs = Values { event, features };
        let mut keep = 1.0;
        let rules = self
            .rules
            .iter()
            .map(|rule| {
                let fired = rule.rule.fires(&inputs);
                if fired {
                    keep *= 1.0 - rule.weight;
                }
                Fired {
                    name: rule.name.clone(),
                    fired,
                    weight: rule.weight,
                }
            })
            .collect();
        // Rounded so that a sum of weights reads as written (0.5 and 0.4 score 0.7, not 0.7000001).
        let score = ((1.0 - keep) * 1e9).round() / 1e9;
        Score {
            score,
            alert: score >= self.alert_threshold,
            rules,
        }
    }
}

/// Why events could not be scored, or their alerts not logged: the speed layer stops before a
/// checkpoint covers those events, so none is lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScoringError(pub String);

/// Scores events of the fraud source as the speed layer applies them.
pub trait EventScorer: Send + Sync {
    /// `events`, at `offsets`, are consecutive events of `tp` in offset order, not yet applied
    /// to `speed` (the speed layer calling): each is scored as of itself (the views before the
    /// run plus the run's earlier events). Their alerts may still be on their way to the log
    /// when this returns (see [`EventScorer::flush`]); an error stops the speed layer before a
    /// checkpoint covers the events, so none is lost.
    fn score(
        &self,
        speed: &dyn crate::SpeedReader,
        tp: &crate::TopicPartition,
        offsets: &[i64],
        events: &[Event],
    ) -> std::result::Result<(), ScoringError>;

    /// Returns once the alerts of every event scored so far are durable, or with the first
    /// failure to log one: called before each checkpoint, so that a checkpoint never covers an
    /// event whose alert could still be lost.
    fn flush(&self) -> std::result::Result<(), ScoringError>;
}

/// The event fields the rules of `fraud` read, for the source's decoder.
pub(crate) fn rule_fields(fraud: &FraudConfig) -> Vec<String> {
    let mut fields = vec![fraud.key.clone()];
    for rule in &fraud.rule {
        if let Ok(parsed) = Rule::parse(&rule.when) {
            fields.extend(parsed.fields().into_iter().map(str::to_owned));
        }
    }
    fields
}

fn key_of(section: &str, index: usize, name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        format!("fraud.{section}[{name}]")
    } else {
        format!("fraud.{section}[{index}]")
    }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
        && !matches!(name, "and" | "or" | "not" | "event")
}

/// Validates `[fraud]` against the resolved sources and views; every problem is pushed.
pub(crate) fn resolve(
    fraud: &FraudConfig,
    sources: &[Arc<SourceDef>],
    views: &[Arc<ViewDef>],
    issues: &mut Vec<ConfigIssue>,
) -> Option<FraudDef> {
    let mut push = |key: String, message: String| issues.push(ConfigIssue { key, message });
    let source = sources.iter().find(|s| s.name == fraud.source);
    if source.is_none() {
        let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        push(
            "fraud.source".to_owned(),
            format!(
                "unknown source {:?} (sources: {})",
                fraud.source,
                known.join(", ")
            ),
        );
    }
    let key_slot = source.and_then(|s| s.slot(&fraud.key));
    if let (Some(source), None) = (source, key_slot) {
        push(
            "fraud.key".to_owned(),
            format!("{:?} is not a field of source {:?}", fraud.key, source.name),
        );
    }
    if !(fraud.alert_threshold > 0.0 && fraud.alert_threshold <= 1.0) {
        push(
            "fraud.alert_threshold".to_owned(),
            format!("{} is outside (0, 1]", fraud.alert_threshold),
        );
    }
    if let Some(topic) = &fraud.alerts_topic {
        let valid = !topic.is_empty()
            && topic.len() <= 249
            && topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            push(
                "fraud.alerts_topic".to_owned(),
                format!(
                    "{topic:?} is not a Kafka topic name (letters, digits, `.`, `_`, `-`, at most 249)"
                ),
            );
        } else if sources.iter().any(|s| &s.topic == topic) {
            push(
                "fraud.alerts_topic".to_owned(),
                format!("{topic:?} is the topic of a source; alerts need a topic of their own"),
            );
        }
    }
    let retention_ms = match parse_duration(&fraud.retention) {
        Ok(d) if !d.is_zero() => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Ok(_) => {
            push(
                "fraud.retention".to_owned(),
                format!("{:?} must be positive", fraud.retention),
            );
            0
        }
        Err(why) => {
            push("fraud.retention".to_owned(), why);
            0
        }
    };

    let mut names = BTreeSet::new();
    let mut features = Vec::new();
    for (i, feature) in fraud.feature.iter().enumerate() {
        let key = key_of("feature", i, &feature.name);
        if !is_name(&feature.name) {
            push(
                format!("{key}.name"),
                format!(
                    "invalid feature name {:?}: use letters, digits and `_`, starting with a letter, at most 64 characters, not and/or/not/event",
                    feature.name
                ),
            );
        } else if !names.insert(feature.name.as_str()) {
            push(
                format!("{key}.name"),
                format!("duplicate feature name {:?}", feature.name),
            );
        }
        let Some(view) = views.iter().find(|v| v.name == feature.view) else {
            let known: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
            push(
                format!("{key}.view"),
                format!(
                    "unknown view {:?} (views: {})",
                    feature.view,
                    known.join(", ")
                ),
            );
            continue;
        };
        if view.source != fraud.source {
            push(
                format!("{key}.view"),
                format!(
                    "view {:?} reads source {:?}, not the fraud source {:?}",
                    view.name, view.source, fraud.source
                ),
            );
        }
        let group: Vec<&str> = view.group_by.iter().map(|f| f.name.as_str()).collect();
        if group != [fraud.key.as_str()] {
            push(
                format!("{key}.view"),
                format!(
                    "view {:?} groups by [{}]; a feature's view must group by exactly [{}] (fraud.key)",
                    view.name,
                    group.join(", "),
                    fraud.key
                ),
            );
        }
        let metric = view.metrics.iter().position(|m| m.name == feature.metric);
        match metric.map(|m| &view.metrics[m].expr) {
            None => {
                let known: Vec<&str> = view.metrics.iter().map(|m| m.name.as_str()).collect();
                push(
                    format!("{key}.metric"),
                    format!(
                        "unknown metric {:?} of view {:?} (metrics: {})",
                        feature.metric,
                        view.name,
                        known.join(", ")
                    ),
                );
            }
            Some(expr @ MetricExpr::TopK { .. }) => push(
                format!("{key}.metric"),
                format!(
                    "metric {:?} is {expr}, which is not a number; a feature needs count, sum, min, max, avg, approx_distinct or quantile",
                    feature.metric
                ),
            ),
            Some(_) => {}
        }
        let window_ms = match parse_duration(&feature.window) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(why) => {
                push(format!("{key}.window"), why);
                continue;
            }
        };
        let granularity = view.granularity_ms;
        if window_ms < granularity || window_ms % granularity != 0 {
            push(
                format!("{key}.window"),
                format!(
                    "{} is {} the granularity {} of view {:?}; a window is a whole number of buckets",
                    feature.window,
                    if window_ms < granularity {
                        "shorter than"
                    } else {
                        "not a multiple of"
                    },
                    format_duration(std::time::Duration::from_millis(granularity.unsigned_abs())),
                    view.name
                ),
            );
        }
        if let Some(metric) = metric {
            features.push(FeatureDef {
                name: feature.name.clone(),
                view: Arc::clone(view),
                metric,
                window_ms,
            });
        }
    }

    if fraud.rule.is_empty() {
        push(
            "fraud.rule".to_owned(),
            "no [[fraud.rule]] is defined; scoring needs at least one".to_owned(),
        );
    }
    let mut rule_names = BTreeSet::new();
    let mut rules = Vec::new();
    for (i, rule) in fraud.rule.iter().enumerate() {
        let key = key_of("rule", i, &rule.name);
        if !is_name(&rule.name) {
            push(
                format!("{key}.name"),
                format!(
                    "invalid rule name {:?}: use letters, digits and `_`, starting with a letter, at most 64 characters",
                    rule.name
                ),
            );
        } else if !rule_names.insert(rule.name.as_str()) {
            push(
                format!("{key}.name"),
                format!("duplicate rule name {:?}", rule.name),
            );
        }
        if !(rule.weight > 0.0 && rule.weight <= 1.0) {
            push(
                format!("{key}.weight"),
                format!("{} is outside (0, 1]", rule.weight),
            );
        }
        let mut parsed = match Rule::parse(&rule.when) {
            Ok(parsed) => parsed,
            Err(error) => {
                push(format!("{key}.when"), error.to_string());
                continue;
            }
        };
        let bound = parsed.resolve(
            |name| fraud.feature.iter().position(|f| f.name == name),
            |name| source.and_then(|s| s.slot(name)),
        );
        if let Err(unknown) = bound {
            let known = match unknown.what {
                "feature" => fraud
                    .feature
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>(),
                _ => source.map_or_else(Vec::new, |s| {
                    s.fields.iter().map(|f| f.name.as_str()).collect()
                }),
            };
            push(
                format!("{key}.when"),
                format!("{unknown} in {:?} (known: {})", rule.when, known.join(", ")),
            );
            continue;
        }
        rules.push(RuleDef {
            name: rule.name.clone(),
            when: rule.when.clone(),
            rule: parsed,
            weight: rule.weight,
        });
    }
    // Features are indexed as written; any dropped above leaves the config invalid anyway.
    if features.len() != fraud.feature.len() || rules.len() != fraud.rule.len() {
        return None;
    }
    Some(FraudDef {
        source: Arc::clone(source?),
        key: fraud.key.clone(),
        key_slot: key_slot?,
        alert_threshold: fraud.alert_threshold,
        alerts_topic: fraud.alerts_topic.clone(),
        retention_ms,
        features,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use crate::{Config, Error, Value};

    const BASE: &str = r#"
[[source]]
name = "payments"
topic = "payments"
event_time = "ts"
[source.fields]
card_id = "string"
merchant_id = "string"
amount = "float"
ts = "int"

[[source]]
name = "clicks"
topic = "clicks"
event_time = "ts"

[[view]]
name = "card_spend"
source = "payments"
group_by = ["card_id"]
granularity = "1m"
[view.metrics]
tx = "count"
amount = "sum(amount)"
avg_amount = "avg(amount)"
top = "top_k(merchant_id, 3)"

[[view]]
name = "merchants"
source = "payments"
group_by = ["merchant_id"]
granularity = "1h"
[view.metrics]
tx = "count"

[[view]]
name = "clicks_per_card"
source = "clicks"
group_by = ["card_id"]
granularity = "1m"
[view.metrics]
n = "count"
"#;

    const FRAUD: &str = r#"
[fraud]
source = "payments"
key = "card_id"
alert_threshold = 0.7

[[fraud.feature]]
name = "tx_10m"
view = "card_spend"
metric = "tx"
window = "10m"
[[fraud.feature]]
name = "avg_amount_30d"
view = "card_spend"
metric = "avg_amount"
window = "30d"

[[fraud.rule]]
name = "burst"
when = "tx_10m >= 8"
weight = 0.5
[[fraud.rule]]
name = "big_vs_usual"
when = "event.amount > 5 * avg_amount_30d and tx_10m >= 3"
weight = 0.6
"#;

    fn issues(fraud: &str) -> Vec<String> {
        match Config::from_toml(&format!("{BASE}{fraud}")) {
            Ok(_) => Vec::new(),
            Err(Error::ConfigInvalid(issues)) => issues.iter().map(|i| i.to_string()).collect(),
            Err(other) => vec![other.to_string()],
        }
    }

    #[test]
    fn the_spec_example_resolves_and_scores_by_hand() {
        let config = Config::from_toml(&format!("{BASE}{FRAUD}")).unwrap();
        let fraud = config.fraud.as_ref().unwrap();
        assert_eq!(fraud.features[1].window_ms, 30 * 86_400_000);
        // A window ends with the event's own minute: 10:07:30 -> [09:58, 10:08).
        let at = 36_000_000 + 7 * 60_000 + 30_000;
        assert_eq!(
            fraud.features[0].window(at),
            (36_000_000 - 2 * 60_000, 36_000_000 + 8 * 60_000)
        );
        let source = &fraud.source;
        let mut values = vec![Value::Null; source.fields.len()];
        values[source.slot("amount").unwrap()] = Value::Float(300.0);
        let event = crate::Event {
            time_ms: at,
            values,
        };
        // (tx_10m, avg_amount_30d) -> score, by hand: 1 - (1 - 0.5)(1 - 0.6) = 0.8.
        for (features, score, alert, fired) in [
            ([Some(9.0), Some(41.2)], 0.8, true, [true, true]),
            ([Some(9.0), Some(100.0)], 0.5, false, [true, false]),
            ([Some(3.0), Some(41.2)], 0.6, false, [false, true]),
            ([Some(2.0), Some(41.2)], 0.0, false, [false, false]),
            ([Some(9.0), None], 0.5, false, [true, false]),
            ([Some(9.0), Some(0.0)], 0.8, true, [true, true]),
        ] {
            let scored = fraud.score(&event, &features);
            assert_eq!(scored.score, score, "{features:?}");
            assert_eq!(scored.alert, alert, "{features:?}");
            let got: Vec<bool> = scored.rules.iter().map(|r| r.fired).collect();
            assert_eq!(got, fired, "{features:?}");
        }
    }

    #[test]
    fn every_bad_fraud_setting_is_named_with_its_value() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "source = \"payments\"",
                "source = \"nope\"",
                "fraud.source: unknown source \"nope\"",
            ),
            (
                "key = \"card_id\"",
                "key = \"colour\"",
                "fraud.key: \"colour\" is not a field of source \"payments\"",
            ),
            (
                "alert_threshold = 0.7",
                "alert_threshold = 1.5",
                "fraud.alert_threshold: 1.5 is outside (0, 1]",
            ),
            (
                "alert_threshold = 0.7",
                "alert_threshold = 0.0",
                "fraud.alert_threshold: 0 is outside (0, 1]",
            ),
            (
                "alert_threshold = 0.7",
                "alert_threshold = 0.7\nalerts_topic = \"payments\"",
                "fraud.alerts_topic: \"payments\" is the topic of a source",
            ),
            (
                "alert_threshold = 0.7",
                "alert_threshold = 0.7\nalerts_topic = \"a b\"",
                "fraud.alerts_topic: \"a b\" is not a Kafka topic name",
            ),
            (
                "alert_threshold = 0.7",
                "alert_threshold = 0.7\nretention = \"forever\"",
                "fraud.retention:",
            ),
            (
                "view = \"card_spend\"\nmetric = \"tx\"",
                "view = \"nope\"\nmetric = \"tx\"",
                "fraud.feature[tx_10m].view: unknown view \"nope\"",
            ),
            (
                "view = \"card_spend\"\nmetric = \"tx\"",
                "view = \"merchants\"\nmetric = \"tx\"",
                "fraud.feature[tx_10m].view: view \"merchants\" groups by [merchant_id]; a feature's view must group by exactly [card_id]",
            ),
            (
                "view = \"card_spend\"\nmetric = \"tx\"",
                "view = \"clicks_per_card\"\nmetric = \"n\"",
                "fraud.feature[tx_10m].view: view \"clicks_per_card\" reads source \"clicks\"",
            ),
            (
                "metric = \"tx\"",
                "metric = \"txs\"",
                "fraud.feature[tx_10m].metric: unknown metric \"txs\" of view \"card_spend\" (metrics: amount, avg_amount, top, tx)",
            ),
            (
                "metric = \"tx\"",
                "metric = \"top\"",
                "fraud.feature[tx_10m].metric: metric \"top\" is top_k(merchant_id, 3), which is not a number",
            ),
            (
                "window = \"10m\"",
                "window = \"30s\"",
                "fraud.feature[tx_10m].window: 30s is shorter than the granularity 1m",
            ),
            (
                "window = \"10m\"",
                "window = \"90s\"",
                "fraud.feature[tx_10m].window: 90s is not a multiple of the granularity 1m",
            ),
            (
                "window = \"10m\"",
                "window = \"ten\"",
                "fraud.feature[tx_10m].window:",
            ),
            (
                "name = \"avg_amount_30d\"",
                "name = \"tx_10m\"",
                "fraud.feature[tx_10m].name: duplicate feature name \"tx_10m\"",
            ),
            (
                "name = \"avg_amount_30d\"",
                "name = \"not\"",
                "fraud.feature[not].name: invalid feature name \"not\"",
            ),
            (
                "name = \"big_vs_usual\"",
                "name = \"burst\"",
                "fraud.rule[burst].name: duplicate rule name \"burst\"",
            ),
            (
                "when = \"tx_10m >= 8\"",
                "when = \"tx_10m >=\"",
                "fraud.rule[burst].when: expected a number, feature or event field after the comparison, found the end at column 10",
            ),
            (
                "when = \"tx_10m >= 8\"",
                "when = \"tx_1m >= 8\"",
                "fraud.rule[burst].when: unknown feature \"tx_1m\" in \"tx_1m >= 8\" (known: tx_10m, avg_amount_30d)",
            ),
            (
                "when = \"tx_10m >= 8\"",
                "when = \"event.colour >= 8\"",
                "fraud.rule[burst].when: unknown event field \"colour\"",
            ),
            (
                "weight = 0.5",
                "weight = 0.0",
                "fraud.rule[burst].weight: 0 is outside (0, 1]",
            ),
            (
                "weight = 0.5",
                "weight = 1.01",
                "fraud.rule[burst].weight: 1.01 is outside (0, 1]",
            ),
        ];
        assert!(issues(FRAUD).is_empty(), "{:?}", issues(FRAUD));
        for (from, to, expected) in cases {
            assert!(FRAUD.contains(from), "{from}");
            let found = issues(&FRAUD.replacen(from, to, 1));
            assert!(
                found.iter().any(|issue| issue.contains(expected)),
                "{to}: expected {expected:?} in {found:?}"
            );
        }
        let no_rules = FRAUD.split("[[fraud.rule]]").next().unwrap();
        assert!(
            issues(no_rules)
                .iter()
                .any(|i| i.contains("fraud.rule: no [[fraud.rule]]"))
        );
        let unknown_key = FRAUD.replacen("key = \"card_id\"", "key = \"card_id\"\ncolour = 1", 1);
        assert!(issues(&unknown_key).iter().any(|i| i.contains("colour")));
    }

    #[test]
    fn rules_on_a_source_without_schema_decode_the_fields_they_read() {
        let text = format!(
            "{}{}",
            BASE.replace(
                "[source.fields]\ncard_id = \"string\"\nmerchant_id = \"string\"\namount = \"float\"\nts = \"int\"\n",
                ""
            ),
            FRAUD.replace("event.amount", "event.fee")
        );
        let config = Config::from_toml(&text).unwrap();
        assert!(config.source("payments").unwrap().slot("fee").is_some());
    }
}
