//! `[schema_registry]` and each source's format settings: the schema files, message names,
//! patterns and time layouts are read and checked here, and every path a source reads is
//! checked against a fixed schema.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::SourceConfig;
use super::validate::Issues;
use crate::format::lines::{LineFormat, TimeLayout};
use crate::format::{AvroSchema, ProtoSchema, Reader, Registry, RegistrySettings, Schemas};
use crate::view::{Format, SourceDef};

/// `[schema_registry]`: a Confluent-compatible schema registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// `http://host:port` or `https://...`.
    pub url: String,
    /// Environment variables holding the basic-auth user and password.
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM file of the certificates trusted for `https` (the public roots when unset).
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// A relative file name in the config, from the directory of the config file.
fn locate(base: Option<&Path>, file: &str) -> PathBuf {
    let path = Path::new(file);
    match base {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// The registry client, if `[schema_registry]` is set and usable.
pub(super) fn registry(
    config: Option<&SchemaRegistryConfig>,
    base: Option<&Path>,
    issues: &mut Issues,
) -> Option<Arc<Registry>> {
    let config = config?;
    let url = config.url.trim();
    let scheme_ok = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if !scheme_ok {
        issues.push(
            "schema_registry.url",
            format!("{url:?} is not an http:// or https:// URL"),
        );
        return None;
    }
    let env = |key: &str, name: &Option<String>, issues: &mut Issues| -> Option<String> {
        let name = name.as_ref()?;
        match std::env::var(name) {
            Ok(value) => Some(value),
            Err(_) => {
                issues.push(
                    format!("schema_registry.{key}"),
                    format!("environment variable {name:?} is not set"),
                );
                None
            }
        }
    };
    let user = env("username_env", &config.username_env, issues);
    let password = env("password_env", &config.password_env, issues);
    if config.username_env.is_some() != config.password_env.is_some() {
        issues.push(
            "schema_registry",
            "username_env and password_env go together: set both or neither",
        );
    }
    let ca_pem = match &config.ca_file {
        None => None,
        Some(file) => match std::fs::read(locate(base, file)) {
            Ok(pem) => Some(pem),
            Err(e) => {
                issues.push(
                    "schema_registry.ca_file",
                    format!("cannot read {file:?}: {}", io_problem(&e)),
                );
                return None;
            }
        },
    };
    let settings = RegistrySettings {
        url: url.to_owned(),
        basic_auth: user.zip(password),
        ca_pem,
    };
    match Registry::new(&settings) {
        Ok(registry) => Some(Arc::new(registry)),
        Err(e) => {
            issues.push("schema_registry.ca_file", e);
            None
        }
    }
}

/// A source's reader and time layout, or the issues with its format settings.
pub(super) fn reader(
    source: &SourceConfig,
    key: &str,
    registry: Option<&Arc<Registry>>,
    registry_configured: bool,
    base: Option<&Path>,
    issues: &mut Issues,
) -> (Reader, TimeLayout) {
    let format = source.format;
    let only_for = |name: &str, set: bool, allowed: &[Format], issues: &mut Issues| {
        if set && !allowed.contains(&format) {
            issues.push(
                format!("{key}.{name}"),
                format!("is not read by format {:?}", format.name()),
            );
        }
    };
    only_for(
        "schema_file",
        source.schema_file.is_some(),
        &[Format::Avro, Format::Protobuf],
        issues,
    );
    only_for(
        "message",
        source.message.is_some(),
        &[Format::Protobuf],
        issues,
    );
    only_for(
        "pattern",
        source.pattern.is_some(),
        &[Format::Regex],
        issues,
    );
    let layout = layout(source, key, issues);
    let reader = match format {
        Format::Json => Reader::Json,
        Format::Avro => match (&source.schema_file, registry) {
            (Some(file), _) => {
                let path = locate(base, file);
                let text = std::fs::read_to_string(&path);
                match text
                    .map_err(|e| io_problem(&e))
                    .and_then(|t| AvroSchema::parse(&t))
                {
                    Ok(schema) => Reader::Avro(Schemas::Fixed(Arc::new(schema))),
                    Err(e) => {
                        issues.push(format!("{key}.schema_file"), format!("{file:?}: {e}"));
                        Reader::Json
                    }
                }
            }
            (None, Some(registry)) => Reader::Avro(Schemas::Registry(Arc::clone(registry))),
            (None, None) => {
                no_schema(key, registry_configured, issues);
                Reader::Json
            }
        },
        Format::Protobuf => match (&source.schema_file, registry) {
            (Some(file), _) => match load_proto(&locate(base, file), file) {
                Ok(schema) => match &source.message {
                    None => {
                        issues.push(
                            format!("{key}.message"),
                            format!(
                                "names no message; the file defines {}",
                                schema.names().join(", ")
                            ),
                        );
                        Reader::Json
                    }
                    Some(name) => match schema.message(name) {
                        Ok(message) => Reader::Protobuf(Schemas::Fixed(message)),
                        Err(e) => {
                            issues.push(format!("{key}.message"), e);
                            Reader::Json
                        }
                    },
                },
                Err(e) => {
                    issues.push(format!("{key}.schema_file"), format!("{file:?}: {e}"));
                    Reader::Json
                }
            },
            (None, Some(registry)) => {
                if source.message.is_some() {
                    issues.push(
                        format!("{key}.message"),
                        "goes with schema_file; with a registry each message names its own",
                    );
                }
                Reader::Protobuf(Schemas::Registry(Arc::clone(registry)))
            }
            (None, None) => {
                no_schema(key, registry_configured, issues);
                Reader::Json
            }
        },
        Format::Syslog => Reader::Lines(Arc::new(LineFormat::Syslog)),
        Format::Logfmt => Reader::Lines(Arc::new(LineFormat::Logfmt)),
        Format::Regex => match source.pattern.as_deref().map(regex::Regex::new) {
            None => {
                issues.push(
                    format!("{key}.pattern"),
                    "is required by format \"regex\": a regex with named captures",
                );
                Reader::Json
            }
            Some(Err(e)) => {
                issues.push(
                    format!("{key}.pattern"),
                    format!("is not a valid regex: {e}"),
                );
                Reader::Json
            }
            Some(Ok(pattern)) if pattern.capture_names().flatten().next().is_none() => {
                issues.push(
                    format!("{key}.pattern"),
                    "has no named capture ((?P<name>...)): no field could be read",
                );
                Reader::Json
            }
            Some(Ok(pattern)) => Reader::Lines(Arc::new(LineFormat::Regex(pattern))),
        },
    };
    (reader, layout)
}

/// A `.proto` file, with errors naming it as the config does (not by its resolved path).
fn load_proto(path: &Path, file: &str) -> Result<ProtoSchema, String> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(io_problem(&e));
    }
    ProtoSchema::load(path).map_err(|e| {
        let dir = path
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let e = e.replace(&path.display().to_string(), file);
        if dir.is_empty() {
            e
        } else {
            e.replace(&format!("{dir}/"), "")
        }
    })
}

fn no_schema(key: &str, registry_configured: bool, issues: &mut Issues) {
    if !registry_configured {
        issues.push(
            format!("{key}.schema_file"),
            "is required without a [schema_registry]: give the writer schema's file",
        );
    }
}

fn layout(source: &SourceConfig, key: &str, issues: &mut Issues) -> TimeLayout {
    let zone = source
        .time_zone
        .as_deref()
        .and_then(|name| match name.parse() {
            Ok(zone) => Some(zone),
            Err(_) => {
                issues.push(
                    format!("{key}.time_zone"),
                    format!("{name:?} is not an IANA time zone name (such as \"Europe/Paris\")"),
                );
                None
            }
        });
    let format = source.time_format.clone();
    if let Some(format) = &format {
        use chrono::format::{Item, StrftimeItems};
        if format.trim().is_empty() {
            issues.push(format!("{key}.time_format"), "is empty");
        } else if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
            issues.push(
                format!("{key}.time_format"),
                format!(
                    "{format:?} is not a valid strftime layout (such as \"%d/%b/%Y:%H:%M:%S %z\")"
                ),
            );
        }
    }
    TimeLayout { format, zone }
}

/// Every path a source reads must exist in its fixed schema.
pub(super) fn check_paths(source: &SourceDef, key: &str, issues: &mut Issues) {
    let paths = std::iter::once((source.event_time.as_str(), "event_time"))
        .chain(source.fields.iter().map(|f| (f.name.as_str(), "fields")));
    for (path, what) in paths {
        let Ok(steps) = crate::path::parse(path) else {
            continue;
        };
        let checked = match &source.reader {
            Reader::Avro(Schemas::Fixed(schema)) => schema.check_path(&steps),
            Reader::Protobuf(Schemas::Fixed(message)) => {
                crate::format::proto::check_path(message, &steps)
            }
            _ => Ok(()),
        };
        if let Err(near) = checked {
            let hint = if near.is_empty() {
                String::new()
            } else {
                format!("; near: {}", near.join(", "))
            };
            let role = if what == "event_time" {
                "the event time"
            } else {
                "a field a view or rule reads"
            };
            issues.push(
                format!("{key}.{what}"),
                format!("{role}, {path:?}, is not in the source's schema{hint}"),
            );
        }
    }
}

/// What went wrong reading a file, without the path it was resolved to.
fn io_problem(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        kind => kind.to_string(),
    }
}
