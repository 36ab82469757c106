//! `braid check`: print a validated config the way Braid resolved it.

use std::fmt::Write as _;

use braid_shared::Config;
use braid_shared::config::format_duration;
use braid_shared::view::FieldKind;

/// Describes the resolved configuration for humans.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let kafka = &config.kafka;
    let _ = writeln!(
        out,
        "kafka: brokers={} group_id={}",
        kafka.brokers, kafka.group_id
    );
    for (key, value) in &kafka.config {
        let _ = writeln!(out, "  {key} = {value}");
    }
    match &config.storage.url {
        Some(url) => {
            let _ = writeln!(
                out,
                "storage: url={url} (credentials and endpoint from AWS_*), local cache dir={}",
                config.storage.dir.display()
            );
        }
        None => {
            let _ = writeln!(out, "storage: dir={}", config.storage.dir.display());
        }
    }
    let batch = &config.batch;
    let _ = writeln!(
        out,
        "batch: interval={}, keep {} snapshots, full recompute after {} layers; archive flushes every {} or {} rows, compacts {} files",
        batch.interval,
        batch.keep_snapshots,
        batch.max_layers,
        format_duration(batch.flush_interval.0),
        batch.flush_rows,
        batch.compact_files
    );
    let auth = if config.serve.api_keys.is_empty() {
        "no auth".to_owned()
    } else {
        format!("{} api key(s)", config.serve.api_keys.len())
    };
    let serve = &config.serve;
    let _ = writeln!(
        out,
        "serve: listen={} ({auth}); at most {} rows per answer, {} requests at once, {} bytes per body; requests time out after {}, headers after {}; SQL: {} at once, interrupted after {}",
        serve.listen,
        serve.max_rows,
        serve.max_concurrency,
        serve.max_body_bytes,
        format_duration(serve.request_timeout.0),
        format_duration(serve.header_timeout.0),
        serve.sql_concurrency,
        format_duration(serve.sql_timeout.0)
    );
    if !serve.speed_peers.is_empty() {
        let _ = writeln!(
            out,
            "serve: speed cells from the speed peers {} (when no speed layer runs in the process), every partition waited for up to {}",
            serve.speed_peers.join(", "),
            format_duration(serve.speed_timeout.0)
        );
    }
    let speed = &config.speed;
    let _ = writeln!(
        out,
        "speed: segment_size={} checkpoint every {} or {} events, max_batch={}{}",
        speed.segment_size,
        format_duration(speed.checkpoint_interval.0),
        speed.checkpoint_events,
        speed.max_batch,
        speed
            .listen
            .map(|addr| format!("; answers serving instances on {addr}"))
            .unwrap_or_default()
    );

    let _ = writeln!(out, "\nsources ({}):", config.sources.len());
    for source in &config.sources {
        let _ = writeln!(
            out,
            "  {} <- topic {:?} ({}), event time {:?}{}, schema {}",
            source.name,
            source.topic,
            reads(source),
            source.event_time,
            source
                .event_id
                .as_ref()
                .map(|id| format!(", event id {id:?}"))
                .unwrap_or_default(),
            if source.schema_declared {
                "declared"
            } else {
                "inferred from views"
            },
        );
        for field in &source.fields {
            let kind = match field.kind {
                FieldKind::Scalar => "any scalar".to_owned(),
                kind => format!("{kind:?}").to_lowercase(),
            };
            let _ = writeln!(out, "    {}: {kind}", field.name);
        }
    }

    let _ = writeln!(out, "\nviews ({}):", config.views.len());
    for view in &config.views {
        let group: Vec<&str> = view.group_by.iter().map(|f| f.name.as_str()).collect();
        let granularity = std::time::Duration::from_millis(view.granularity_ms.unsigned_abs());
        let _ = writeln!(
            out,
            "  {} <- {} by [{}] every {}",
            view.name,
            view.source,
            group.join(", "),
            format_duration(granularity)
        );
        for metric in &view.metrics {
            let note = if metric.expr.is_approximate() {
                "  (approximate)"
            } else {
                ""
            };
            let _ = writeln!(out, "    {} = {}{note}", metric.name, metric.expr);
        }
    }

    if let Some(fraud) = &config.fraud {
        let _ = writeln!(
            out,
            "\nfraud: scores {} by {}; alert at score >= {}, alerts kept {}{}",
            fraud.source.name,
            fraud.key,
            fraud.alert_threshold,
            format_duration(std::time::Duration::from_millis(
                fraud.retention_ms.unsigned_abs()
            )),
            fraud
                .alerts_topic
                .as_ref()
                .map(|t| format!(", also produced to topic {t:?}"))
                .unwrap_or_default(),
        );
        for feature in &fraud.features {
            let _ = writeln!(
                out,
                "  feature {} = {}.{} over {}",
                feature.name,
                feature.view.name,
                feature.view.metrics[feature.metric].name,
                format_duration(std::time::Duration::from_millis(
                    feature.window_ms.unsigned_abs()
                )),
            );
        }
        for rule in &fraud.rules {
            let _ = writeln!(
                out,
                "  rule {} (weight {}): {}",
                rule.name, rule.weight, rule.when
            );
        }
    } else {
        let _ = writeln!(out, "\nfraud: not configured");
    }
    out
}

/// `braid check --storage`: runs the storage conformance checks against the configured storage
/// and prints each outcome; exit 1 when one fails or the storage cannot be opened.
pub fn storage(config: &Config) -> std::process::ExitCode {
    use std::io::Write as _;
    let name = config
        .storage
        .url
        .clone()
        .unwrap_or_else(|| format!("{} (local folder)", config.storage.dir.display()));
    let storage = match braid_store::open(&config.storage) {
        Ok(storage) => storage,
        Err(error) => {
            eprintln!("error: storage {name}: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let scratch = format!(
        "_braid-check/{}-{}/",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let checks = braid_store::storage::conformance::check(storage.as_ref(), &scratch);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nstorage {name}:");
    let mut failed = 0;
    for check in &checks {
        match &check.outcome {
            Ok(()) => {
                let _ = writeln!(out, "  ok    {}", check.what);
            }
            Err(why) => {
                failed += 1;
                let _ = writeln!(out, "  FAIL  {}: {why}", check.what);
            }
        }
    }
    if failed == 0 {
        let _ = writeln!(out, "storage OK: Braid can coordinate through it");
        std::process::ExitCode::SUCCESS
    } else {
        let _ = writeln!(
            out,
            "storage FAILED {failed} of {} checks: Braid cannot run on it safely",
            checks.len()
        );
        std::process::ExitCode::FAILURE
    }
}

/// How a source's messages are read, as `braid check` prints it.
fn reads(source: &braid_shared::SourceDef) -> String {
    use braid_shared::format::{Reader, Schemas};
    let format = source.format.name();
    match &source.reader {
        Reader::Avro(Schemas::Registry(r)) | Reader::Protobuf(Schemas::Registry(r)) => {
            format!("{format}, schemas from the registry at {}", r.url())
        }
        Reader::Avro(Schemas::Fixed(_)) => format!("{format}, a schema file"),
        Reader::Protobuf(Schemas::Fixed(message)) => {
            format!("{format}, messages {}", message.full_name())
        }
        _ => format.to_owned(),
    }
}
