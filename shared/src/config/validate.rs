//! Validation: turns a parsed [`ConfigFile`] into a [`Config`], or lists every problem with the
//! key it concerns and the bad value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::{
    Config, ConfigFile, FieldType, MANAGED_KAFKA_KEYS, SourceConfig, ViewConfig, parse_duration,
};
use crate::error::{ConfigIssue, Error, Result};
use crate::metric::MetricExpr;
use crate::view::{FieldKind, FieldRef, FieldSpec, MetricDef, SourceDef, ViewDef};

const MAX_NAME_LEN: usize = 64;
const MAX_EVENT_BYTES_LIMIT: usize = 64 * 1024 * 1024;
const DAY: Duration = Duration::from_secs(86_400);
/// Names a view's rows use for themselves; no group field or metric may take them.
const RESERVED_COLUMNS: &[&str] = &["bucket"];

#[derive(Default)]
pub(super) struct Issues(Vec<ConfigIssue>);

impl Issues {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }
}

pub(super) fn resolve(file: ConfigFile, base: Option<&std::path::Path>) -> Result<Config> {
    let mut issues = Issues::default();
    check_sections(&file, &mut issues);
    let registry = super::formats::registry(file.schema_registry.as_ref(), base, &mut issues);
    let mut readers = Vec::new();

    let mut seen_sources = BTreeSet::new();
    for (i, source) in file.source.iter().enumerate() {
        let key = element_key("source", i, &source.name);
        if !seen_sources.insert(source.name.as_str()) {
            issues.push(
                format!("{key}.name"),
                format!("duplicate source name {:?}", source.name),
            );
        }
        check_source(source, &key, &mut issues);
        readers.push(super::formats::reader(
            source,
            &key,
            registry.as_ref(),
            file.schema_registry.is_some(),
            base,
            &mut issues,
        ));
    }
    if file.source.is_empty() {
        issues.push(
            "source",
            "no [[source]] is defined; at least one is required",
        );
    }

    let mut seen_views = BTreeSet::new();
    for (i, view) in file.view.iter().enumerate() {
        let key = element_key("view", i, &view.name);
        if !seen_views.insert(view.name.as_str()) {
            issues.push(
                format!("{key}.name"),
                format!("duplicate view name {:?}", view.name),
            );
        }
        let source = file.source.iter().find(|s| s.name == view.source);
        check_view(view, source, &key, &file.source, &mut issues);
    }

    if !issues.0.is_empty() {
        return Err(Error::ConfigInvalid(issues.0));
    }

    let fraud_fields = file
        .fraud
        .as_ref()
        .map(|f| (f.source.as_str(), crate::fraud::rule_fields(f)));
    let sources: Vec<Arc<SourceDef>> = file
        .source
        .iter()
        .zip(readers)
        .map(|(s, (reader, layout))| {
            let extra = match &fraud_fields {
                Some((source, fields)) if *source == s.name => fields.as_slice(),
                _ => &[],
            };
            let mut def = source_def(s, &file.view, extra);
            def.reader = reader;
            def.time_layout = layout;
            Arc::new(def)
        })
        .collect();
    for (i, source) in sources.iter().enumerate() {
        let key = element_key("source", i, &source.name);
        check_nesting(source, &key, &mut issues);
        super::formats::check_paths(source, &key, &mut issues);
    }
    if !issues.0.is_empty() {
        return Err(Error::ConfigInvalid(issues.0));
    }
    let views: Vec<Arc<ViewDef>> = file
        .view
        .iter()
        .map(|v| {
            let source = sources.iter().find(|s| s.name == v.source);
            Arc::new(view_def(v, source.map(|s| &**s)))
        })
        .collect();
    let fraud = match &file.fraud {
        None => None,
        Some(fraud) => {
            let mut fraud_issues = Vec::new();
            let def = crate::fraud::resolve(fraud, &sources, &views, &mut fraud_issues);
            match def {
                Some(def) if fraud_issues.is_empty() => Some(Arc::new(def)),
                _ => return Err(Error::ConfigInvalid(fraud_issues)),
            }
        }
    };
    let mut serve = file.serve;
    // Every peer as host:port, whichever form the file gave.
    serve.speed_peers = serve
        .speed_peers
        .iter()
        .filter_map(|peer| crate::config::peer_address(peer))
        .collect();
    Ok(Config {
        kafka: file.kafka,
        storage: file.storage,
        batch: file.batch,
        serve,
        speed: file.speed,
        sources,
        views,
        fraud,
        registry,
    })
}

fn element_key(section: &str, index: usize, name: &str) -> String {
    if is_identifier(name) {
        format!("{section}[{name}]")
    } else {
        format!("{section}[{index}]")
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_LEN
}

fn check_name(name: &str, key: &str, what: &str, issues: &mut Issues) {
    if !is_identifier(name) {
        issues.push(
            key,
            format!(
                "invalid {what} name {name:?}: use letters, digits and `_`, starting with a letter, at most {MAX_NAME_LEN} characters"
            ),
        );
    }
}

fn check_sections(file: &ConfigFile, issues: &mut Issues) {
    let brokers = file.kafka.brokers.trim();
    if brokers.is_empty() {
        issues.push(
            "kafka.brokers",
            "is empty; give host:port[,host:port...] or \"embedded\"",
        );
    } else if brokers != "embedded" {
        for broker in brokers.split(',').map(str::trim) {
            let valid = broker.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                issues.push(
                    "kafka.brokers",
                    format!(
                        "broker {broker:?} is not host:port (in {:?})",
                        file.kafka.brokers
                    ),
                );
            }
        }
    }
    if file.kafka.group_id.trim().is_empty() {
        issues.push("kafka.group_id", "is empty");
    }
    if let Some(instance) = &file.kafka.instance_id {
        let valid = !instance.is_empty()
            && instance.len() <= 249
            && instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            issues.push(
                "kafka.instance_id",
                "must be 1 to 249 characters of letters, digits, '.', '_' and '-'",
            );
        }
    }
    for key in file.kafka.config.keys() {
        if key == "auto.offset.reset" {
            issues.push(
                format!("kafka.config.{key:?}"),
                "is managed by Braid: each layer starts a partition where its own records say, and \
                 offsets the broker deleted before they were read stop it with an error, never a skip",
            );
        } else if MANAGED_KAFKA_KEYS.contains(&key.as_str()) {
            issues.push(
                format!("kafka.config.{key:?}"),
                "is managed by Braid (set kafka.brokers / kafka.group_id / kafka.instance_id instead)",
            );
        } else if key.trim().is_empty() {
            issues.push("kafka.config", "has an empty key");
        }
    }
    if file.batch.keep_snapshots == 0 {
        issues.push("batch.keep_snapshots", "must be at least 1");
    }
    if file.batch.max_layers == 0 {
        issues.push("batch.max_layers", "must be at least 1");
    }
    if file.batch.flush_rows == 0 || file.batch.flush_rows > 10_000_000 {
        issues.push(
            "batch.flush_rows",
            format!("{} is outside 1..=10000000", file.batch.flush_rows),
        );
    }
    if file.batch.compact_files < 2 {
        issues.push(
            "batch.compact_files",
            format!("{} must be at least 2", file.batch.compact_files),
        );
    }
    if file.speed.segment_size == 0 {
        issues.push("speed.segment_size", "must be at least 1");
    }
    if file.speed.checkpoint_events == 0 {
        issues.push("speed.checkpoint_events", "must be at least 1");
    }
    if file.speed.max_batch == 0 || file.speed.max_batch > 1_000_000 {
        issues.push(
            "speed.max_batch",
            format!("{} is outside 1..=1000000", file.speed.max_batch),
        );
    }
    if let Some(url) = &file.storage.url
        && let Err(why) = super::parse_storage_url(url)
    {
        issues.push("storage.url", why.0);
    }
    if file.storage.dir.as_os_str().is_empty() {
        issues.push("storage.dir", "is empty");
    }
    let serve = &file.serve;
    if serve.max_rows == 0 || serve.max_rows > 10_000_000 {
        issues.push(
            "serve.max_rows",
            format!("{} is outside 1..=10000000", serve.max_rows),
        );
    }
    if serve.max_body_bytes == 0 || serve.max_body_bytes > 64 * 1024 * 1024 {
        issues.push(
            "serve.max_body_bytes",
            format!("{} is outside 1..=67108864", serve.max_body_bytes),
        );
    }
    if serve.max_concurrency == 0 || serve.max_concurrency > 100_000 {
        issues.push(
            "serve.max_concurrency",
            format!("{} is outside 1..=100000", serve.max_concurrency),
        );
    }
    let sql_timeout = serve.sql_timeout.0;
    if sql_timeout < std::time::Duration::from_millis(100)
        || sql_timeout > std::time::Duration::from_secs(3600)
    {
        issues.push(
            "serve.sql_timeout",
            format!(
                "{} is outside 100ms..=1h",
                crate::config::format_duration(sql_timeout)
            ),
        );
    }
    if serve.sql_concurrency == 0 || serve.sql_concurrency > 64 {
        issues.push(
            "serve.sql_concurrency",
            format!("{} is outside 1..=64", serve.sql_concurrency),
        );
    }
    for (i, peer) in serve.speed_peers.iter().enumerate() {
        if crate::config::peer_address(peer).is_none() {
            issues.push(
                format!("serve.speed_peers[{i}]"),
                format!(
                    "{:?} is not host:port or http://host:port (a speed instance's speed.listen)",
                    shortened(peer)
                ),
            );
        }
    }
    let speed_timeout = serve.speed_timeout.0;
    if speed_timeout < std::time::Duration::from_millis(10)
        || speed_timeout > std::time::Duration::from_secs(60)
    {
        issues.push(
            "serve.speed_timeout",
            format!(
                "{} is outside 10ms..=60s",
                crate::config::format_duration(speed_timeout)
            ),
        );
    }
    for (i, key) in file.serve.api_keys.iter().enumerate() {
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            issues.push(
                format!("serve.api_keys[{i}]"),
                "is empty or contains whitespace",
            );
        }
    }
}

/// At most 80 characters of `text`, for a message.
fn shortened(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

fn check_source(source: &SourceConfig, key: &str, issues: &mut Issues) {
    check_name(&source.name, &format!("{key}.name"), "source", issues);
    let topic = &source.topic;
    if topic.is_empty() {
        issues.push(format!("{key}.topic"), "is empty");
    } else if topic.len() > 249
        || topic == "."
        || topic == ".."
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        issues.push(
            format!("{key}.topic"),
            format!(
                "invalid Kafka topic {topic:?}: use letters, digits, `.`, `_` and `-`, at most 249"
            ),
        );
    }
    if source.event_time.trim().is_empty() {
        issues.push(
            format!("{key}.event_time"),
            "is empty; name the field holding the event time",
        );
    } else if let Err(e) = crate::path::parse(&source.event_time) {
        issues.push(
            format!("{key}.event_time"),
            format!("invalid field path {:?}: {e}", source.event_time),
        );
    }
    if let Some(id) = source.event_id.as_deref().filter(|f| !f.trim().is_empty())
        && let Err(e) = crate::path::parse(id)
    {
        issues.push(
            format!("{key}.event_id"),
            format!("invalid field path {id:?}: {e}"),
        );
    }
    if source
        .event_id
        .as_deref()
        .is_some_and(|f| f.trim().is_empty())
    {
        issues.push(
            format!("{key}.event_id"),
            "is empty; name a field or leave it out",
        );
    }
    if source.max_event_bytes == 0 || source.max_event_bytes > MAX_EVENT_BYTES_LIMIT {
        issues.push(
            format!("{key}.max_event_bytes"),
            format!(
                "{} is outside 1..={MAX_EVENT_BYTES_LIMIT}",
                source.max_event_bytes
            ),
        );
    }
    if let Some(fields) = &source.fields {
        for name in fields.keys() {
            if name.is_empty() {
                issues.push(format!("{key}.fields"), "has an empty field name");
            } else if let Err(e) = crate::path::parse(name) {
                issues.push(
                    format!("{key}.fields"),
                    format!("invalid field path {name:?}: {e}"),
                );
            }
        }
        if let Some(ty) = fields.get(&source.event_time)
            && !matches!(ty, FieldType::String | FieldType::Int)
        {
            issues.push(
                format!("{key}.fields.{}", source.event_time),
                format!("the event time field must be declared string or int, not {ty:?}"),
            );
        }
        if let Some(id) = &source.event_id
            && !fields.contains_key(id)
        {
            issues.push(
                format!("{key}.event_id"),
                format!("field {id:?} is not declared in {key}.fields"),
            );
        }
    }
}

fn check_view(
    view: &ViewConfig,
    source: Option<&SourceConfig>,
    key: &str,
    sources: &[SourceConfig],
    issues: &mut Issues,
) {
    check_name(&view.name, &format!("{key}.name"), "view", issues);
    if source.is_none() {
        let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        issues.push(
            format!("{key}.source"),
            format!(
                "unknown source {:?} (defined: {})",
                view.source,
                known.join(", ")
            ),
        );
    }
    let schema = source.and_then(|s| s.fields.as_ref());

    let mut seen = BTreeSet::new();
    for field in &view.group_by {
        let field_key = format!("{key}.group_by");
        if let Err(e) = crate::path::parse(field) {
            issues.push(field_key, format!("invalid field path {field:?}: {e}"));
            continue;
        }
        if !seen.insert(field.as_str()) {
            issues.push(field_key, format!("field {field:?} is listed twice"));
        } else if RESERVED_COLUMNS.contains(&field.as_str()) {
            issues.push(
                field_key,
                format!("field {field:?} clashes with the row's own `{field}` column"),
            );
        } else if let Some(schema) = schema
            && !schema.contains_key(field)
        {
            issues.push(
                field_key,
                format!(
                    "field {field:?} is not declared in source {:?}",
                    view.source
                ),
            );
        }
    }

    check_granularity(&view.granularity, &format!("{key}.granularity"), issues);

    if view.metrics.is_empty() {
        issues.push(
            format!("{key}.metrics"),
            "no metrics defined; add e.g. `events = \"count\"`",
        );
    }
    for (name, text) in &view.metrics {
        let metric_key = format!("{key}.metrics.{name}");
        if !is_identifier(name) {
            issues.push(&metric_key, format!("invalid metric name {name:?}"));
        } else if RESERVED_COLUMNS.contains(&name.as_str()) || seen.contains(name.as_str()) {
            issues.push(
                &metric_key,
                format!(
                    "metric name {name:?} clashes with a group-by field or the `bucket` column"
                ),
            );
        }
        let expr: MetricExpr = match text.parse() {
            Ok(expr) => expr,
            Err(e) => {
                issues.push(&metric_key, e.to_string());
                continue;
            }
        };
        let (Some(field), Some(schema)) = (expr.field(), schema) else {
            continue;
        };
        match schema.get(field) {
            None => issues.push(
                &metric_key,
                format!(
                    "{expr} reads field {field:?}, which source {:?} does not declare",
                    view.source
                ),
            ),
            Some(ty) if expr.needs_number() && !matches!(ty, FieldType::Int | FieldType::Float) => {
                issues.push(
                    &metric_key,
                    format!("{expr} needs a numeric field but {field:?} is declared {ty:?}"),
                )
            }
            Some(_) => {}
        }
    }
}

/// A field is a value: no path a source reads may go on inside another (`card` and `card.id`),
/// since `card` would then be an object.
fn check_nesting(source: &SourceDef, key: &str, issues: &mut Issues) {
    let names = source
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .chain(std::iter::once(source.event_time.as_str()));
    let mut paths: Vec<(Vec<crate::path::Step>, &str)> = names
        .filter_map(|name| Some((crate::path::parse(name).ok()?, name)))
        .collect();
    paths.sort();
    paths.dedup();
    for pair in paths.windows(2) {
        let ((outer, outer_name), (inner, inner_name)) = (&pair[0], &pair[1]);
        if inner.len() > outer.len() && inner.starts_with(outer) {
            issues.push(
                key,
                format!(
                    "field {outer_name:?} holds field {inner_name:?}: a field is one value, not \
                     an object or array; name the values inside it ({inner_name:?})"
                ),
            );
        }
    }
}

fn check_granularity(text: &str, key: &str, issues: &mut Issues) {
    match parse_duration(text) {
        Err(e) => issues.push(key, e.0),
        Ok(d) if d < Duration::from_secs(1) || d > DAY => {
            issues.push(key, format!("{text:?} is outside 1s..1d"));
        }
        Ok(d) if d.subsec_nanos() != 0 || !DAY.as_secs().is_multiple_of(d.as_secs()) => {
            issues.push(
                key,
                format!("{text:?} must be a whole number of seconds that divides a day"),
            );
        }
        Ok(_) => {}
    }
}

/// The fields decoded for a source: its declared schema, or the fields its views use (numbers
/// where any view computes on them), plus the event id.
/// `extra`: fields fraud rules read, decoded too when the source declares no schema.
fn source_def(source: &SourceConfig, views: &[ViewConfig], extra: &[String]) -> SourceDef {
    let mut fields: BTreeMap<String, FieldKind> = BTreeMap::new();
    match &source.fields {
        Some(schema) => {
            for (name, ty) in schema {
                fields.insert(name.clone(), FieldKind::from_declared(*ty));
            }
        }
        None => {
            for view in views.iter().filter(|v| v.source == source.name) {
                for field in &view.group_by {
                    fields.entry(field.clone()).or_insert(FieldKind::Scalar);
                }
                for expr in view
                    .metrics
                    .values()
                    .filter_map(|t| t.parse::<MetricExpr>().ok())
                {
                    if let Some(field) = expr.field() {
                        let kind = fields.entry(field.to_owned()).or_insert(FieldKind::Scalar);
                        if expr.needs_number() {
                            *kind = FieldKind::Number;
                        }
                    }
                }
            }
            if let Some(id) = &source.event_id {
                fields.entry(id.clone()).or_insert(FieldKind::Scalar);
            }
            for field in extra {
                fields.entry(field.clone()).or_insert(FieldKind::Scalar);
            }
        }
    }
    SourceDef {
        name: source.name.clone(),
        topic: source.topic.clone(),
        format: source.format,
        event_time: source.event_time.clone(),
        event_id: source.event_id.clone(),
        fields: fields
            .into_iter()
            .map(|(name, kind)| FieldSpec { name, kind })
            .collect(),
        schema_declared: source.fields.is_some(),
        max_event_bytes: source.max_event_bytes,
        reader: crate::format::Reader::Json,
        time_layout: crate::format::lines::TimeLayout::default(),
    }
}

/// Builds a view definition from an already validated config.
fn view_def(view: &ViewConfig, source: Option<&SourceDef>) -> ViewDef {
    let slot = |field: &str| source.and_then(|s| s.slot(field));
    let granularity = parse_duration(&view.granularity).unwrap_or(DAY);
    ViewDef {
        name: view.name.clone(),
        source: view.source.clone(),
        group_by: view
            .group_by
            .iter()
            .map(|name| FieldRef {
                name: name.clone(),
                slot: slot(name).unwrap_or(usize::MAX),
            })
            .collect(),
        granularity_ms: i64::try_from(granularity.as_millis()).unwrap_or(86_400_000),
        metrics: view
            .metrics
            .iter()
            .filter_map(|(name, text)| {
                let expr: MetricExpr = text.parse().ok()?;
                let slot = expr.field().and_then(slot);
                Some(MetricDef {
                    name: name.clone(),
                    expr,
                    slot,
                })
            })
            .collect(),
    }
}
