//! Resolution of `[fraud]` against the resolved sources and views: every problem named with
//! its key, the section first, then each feature, then each rule.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::rule::Rule;
use super::{FeatureConfig, FeatureDef, FraudConfig, FraudDef, RuleConfig, RuleDef};
use crate::duration::{format_duration, parse_duration};
use crate::error::ConfigIssue;
use crate::metric::MetricExpr;
use crate::view::{SourceDef, ViewDef};

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
            push("fraud.retention".to_owned(), why.0);
            0
        }
    };

    let mut names = BTreeSet::new();
    let features: Vec<FeatureDef> = fraud
        .feature
        .iter()
        .enumerate()
        .filter_map(|(i, feature)| {
            resolve_feature(fraud, (i, feature), views, &mut names, &mut push)
        })
        .collect();
    if fraud.rule.is_empty() {
        push(
            "fraud.rule".to_owned(),
            "no [[fraud.rule]] is defined; scoring needs at least one".to_owned(),
        );
    }
    let mut names = BTreeSet::new();
    let rules: Vec<RuleDef> = fraud
        .rule
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| resolve_rule(fraud, (i, rule), source, &mut names, &mut push))
        .collect();
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

/// One `[[fraud.feature]]`: a numeric metric of a view of the fraud source grouped by exactly
/// the key, over a whole number of its buckets; `None` (with the problems pushed) otherwise.
fn resolve_feature(
    fraud: &FraudConfig,
    (i, feature): (usize, &FeatureConfig),
    views: &[Arc<ViewDef>],
    names: &mut BTreeSet<String>,
    push: &mut impl FnMut(String, String),
) -> Option<FeatureDef> {
    let key = key_of("feature", i, &feature.name);
    if !is_name(&feature.name) {
        push(
            format!("{key}.name"),
            format!(
                "invalid feature name {:?}: use letters, digits and `_`, starting with a letter, at most 64 characters, not and/or/not/event",
                feature.name
            ),
        );
    } else if !names.insert(feature.name.clone()) {
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
        return None;
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
            push(format!("{key}.window"), why.0);
            return None;
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
    Some(FeatureDef {
        name: feature.name.clone(),
        view: Arc::clone(view),
        metric: metric?,
        window_ms,
    })
}

/// One `[[fraud.rule]]`: a named condition over the features and the event's fields, with a
/// weight in (0, 1]; `None` (with the problems pushed) otherwise.
fn resolve_rule(
    fraud: &FraudConfig,
    (i, rule): (usize, &RuleConfig),
    source: Option<&Arc<SourceDef>>,
    names: &mut BTreeSet<String>,
    push: &mut impl FnMut(String, String),
) -> Option<RuleDef> {
    let key = key_of("rule", i, &rule.name);
    if !is_name(&rule.name) {
        push(
            format!("{key}.name"),
            format!(
                "invalid rule name {:?}: use letters, digits and `_`, starting with a letter, at most 64 characters",
                rule.name
            ),
        );
    } else if !names.insert(rule.name.clone()) {
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
            return None;
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
        return None;
    }
    Some(RuleDef {
        name: rule.name.clone(),
        when: rule.when.clone(),
        rule: parsed,
        weight: rule.weight,
    })
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
