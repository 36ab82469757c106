//! Fraud scoring (`[fraud]`, docs/fraud.md): features (one metric of one view for the scored
//! event's key, over a window of event time ending at the event), rules over them, and the score
//! `1 - Π(1 - weight)` over the rules that fired.
//!
//! `rule`: the rule language. Reading a feature's merged value is the serving layer's part; this
//! module holds what is pure: the configuration, its validation, the windows and the score.

mod resolve;
pub mod rule;

use std::sync::Arc;

use serde::Deserialize;

use crate::event::Event;
use crate::view::{SourceDef, ViewDef};

pub(crate) use resolve::resolve;

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
