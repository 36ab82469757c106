//! Configuration (docs/configuration.md lists every key): typed serde, layered defaults -> TOML file -> `BRAID__*`
//! environment, then validated into resolved [`SourceDef`]s and [`ViewDef`]s.
//!
//! `validate`: resolution of sources, views and metric types.

mod formats;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Format as _, Toml};
use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

pub use crate::duration::{Interval, format_duration, parse_duration};
pub use crate::view::{FieldType, Format};
pub use formats::SchemaRegistryConfig;

use crate::error::{Error, Invalid, Result};
use crate::view::{SourceDef, ViewDef};

/// Prefix of environment overrides: `BRAID__KAFKA__BROKERS` sets `kafka.brokers`.
pub const ENV_PREFIX: &str = "BRAID__";

/// librdkafka settings that Braid manages itself and `[kafka.config]` may not override.
pub const MANAGED_KAFKA_KEYS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "group.instance.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
];

/// The file as written: every section with its defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub speed: SpeedConfig,
    #[serde(default)]
    pub source: Vec<SourceConfig>,
    #[serde(default)]
    pub view: Vec<ViewConfig>,
    #[serde(default)]
    pub fraud: Option<crate::fraud::FraudConfig>,
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`, or `embedded` for the in-process broker.
    pub brokers: String,
    pub group_id: String,
    /// A name this process keeps across restarts (a StatefulSet pod's name): its consumers
    /// join their groups as static members (`group.instance.id`), so a restarted process takes
    /// its partitions back at once instead of after the dead one's session times out. Unique
    /// per process of a group; unset: dynamic membership.
    pub instance_id: Option<String>,
    /// How a layer's processes share a topic's partitions: `leases` (partition leases in
    /// storage, the default) or `group` (Kafka's consumer group protocol).
    pub assignment: Assignment,
    /// librdkafka settings passed through as they are.
    pub config: BTreeMap<String, KafkaSetting>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            group_id: "braid".to_owned(),
            instance_id: None,
            assignment: Assignment::default(),
            config: BTreeMap::new(),
        }
    }
}

/// How a layer's processes share a topic's partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    /// Partition leases in storage, through conditional writes: no broker's group coordinator
    /// is involved, and a restarted process takes its partitions back at once.
    #[default]
    Leases,
    /// Kafka's consumer group protocol: the broker's group coordinator deals the partitions.
    Group,
}

impl KafkaConfig {
    /// How long a member of a layer's group may go unheard before its partitions pass to
    /// the others: `session.timeout.ms` (6 s unless `kafka.config` sets it).
    pub fn session_timeout(&self) -> std::time::Duration {
        let ms = self
            .config
            .get("session.timeout.ms")
            .and_then(|v| v.to_string().trim().parse::<u64>().ok())
            .unwrap_or(6000);
        std::time::Duration::from_millis(ms)
    }

    /// The librdkafka settings of a consumer in `group`: the pass-through ones, then Braid's
    /// (offsets are stored by the layers themselves, never auto-committed; an offset the broker
    /// no longer has is an error, never reset), then defaults the pass-through ones may
    /// override (statistics for lag, a short pause of a full fetch queue).
    pub fn consumer_settings(&self, group: &str) -> Vec<(String, String)> {
        let mut settings: Vec<(String, String)> = self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        for (key, value) in [
            ("bootstrap.servers", self.brokers.as_str()),
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // Every partition starts at an offset its layer chose; one the broker no longer
            // has stops the layer with the lost range named, never a silent skip.
            ("auto.offset.reset", "error"),
        ] {
            settings.push((key.to_owned(), value.to_owned()));
        }
        if let Some(instance) = &self.instance_id {
            settings.push(("group.instance.id".to_owned(), instance.clone()));
        }
        for (key, value) in [
            ("statistics.interval.ms", "1000"),
            // When a consumer's prefetch queue is full, librdkafka pauses the partition's
            // fetches for this long (1 s by default): a layer that applies events slower than
            // the broker delivers them then sits idle for most of each second. A short pause
            // keeps it fed (on tansu: 0.13 -> 0.37 M events/s end to end).
            ("fetch.queue.backoff.ms", "10"),
            // A member that died is noticed after 6 s (librdkafka's default: 45 s), the least
            // a Kafka broker accepts by default (`group.min.session.timeout.ms`): its
            // partitions move to the survivors, or back to its restarted process, in seconds.
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "1000"),
            // Also how long a join may wait for the coordinator's answer (plus 3 s): a
            // coordinator that hangs mid-rebalance (found by the torture suite) holds a
            // restarted member without partitions for 30 s, not 5 minutes. The poll loop never
            // pauses that long.
            ("max.poll.interval.ms", "30000"),
            // A request to a broker that stopped answering without closing its connections is
            // given up after 10 s (librdkafka's default: 60 s), and the connection made anew.
            ("socket.timeout.ms", "10000"),
        ] {
            if !self.config.contains_key(key) {
                settings.push((key.to_owned(), value.to_owned()));
            }
        }
        settings
    }

    /// The pass-through librdkafka settings a producer understands (consumer-only ones left out).
    pub fn producer_settings(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .filter(|(key, _)| !consumer_only(key))
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }

    pub fn is_embedded(&self) -> bool {
        self.brokers.trim() == "embedded"
    }

    /// Sets the consumers' fetch wait to [`SHORT_FETCH_WAIT_MS`] unless `fetch.wait.max.ms` is
    /// already set: the embedded broker (and tansu, for a partition with fewer bytes than a
    /// fetch asks for) answers a fetch when its wait ends, not when data arrives, so a short
    /// wait keeps answers fresh to milliseconds.
    pub fn prefer_short_fetch_wait(&mut self) {
        self.config
            .entry("fetch.wait.max.ms".to_owned())
            .or_insert(KafkaSetting::Int(SHORT_FETCH_WAIT_MS));
    }
}

/// The fetch wait `braid dev` and the benches give their consumers, in milliseconds.
pub const SHORT_FETCH_WAIT_MS: i64 = 10;

/// Settings only a consumer takes; a producer would warn about them.
fn consumer_only(key: &str) -> bool {
    key.starts_with("fetch.")
        || key.starts_with("enable.auto.")
        || matches!(
            key,
            "session.timeout.ms"
                | "heartbeat.interval.ms"
                | "max.poll.interval.ms"
                | "auto.offset.reset"
                | "auto.commit.interval.ms"
                | "isolation.level"
                | "partition.assignment.strategy"
        )
}

/// One librdkafka setting value; TOML strings, integers and booleans are all accepted.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum KafkaSetting {
    Text(String),
    Int(i64),
    Bool(bool),
}

impl std::fmt::Display for KafkaSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Int(n) => write!(f, "{n}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Archive, batch snapshots, speed checkpoints and rejected events live below it; with
    /// `url`, only the local cache of files read from object storage.
    pub dir: PathBuf,
    /// `s3://bucket[/prefix]`: object storage holds everything instead of `dir`.
    pub url: Option<String>,
}

/// A speed peer as `host:port`, from `host:port` or `http://host:port` (a trailing `/` allowed);
/// `None` when it is neither, or its port is 0.
pub fn peer_address(peer: &str) -> Option<String> {
    let address = peer.strip_prefix("http://").unwrap_or(peer);
    let address = address.strip_suffix('/').unwrap_or(address);
    let (host, port) = address.rsplit_once(':')?;
    let valid = !host.is_empty()
        && !host.contains('/')
        && !address.chars().any(char::is_control)
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    valid.then(|| address.to_owned())
}

/// `s3://bucket[/prefix]` -> (bucket, prefix without surrounding slashes); an error naming
/// what is wrong otherwise.
pub fn parse_storage_url(url: &str) -> Result<(&str, &str), Invalid> {
    storage_url_parts(url).map_err(Invalid)
}

fn storage_url_parts(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("s3://")
        .filter(|_| !url.chars().any(char::is_control))
        .ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{url:?} names no bucket (s3://bucket/prefix)"));
    }
    let prefix = prefix.trim_matches('/');
    let clean =
        |part: &str| !part.is_empty() && part != "." && part != ".." && !part.contains('\\');
    if !prefix.is_empty() && !prefix.split('/').all(clean) {
        return Err(format!(
            "{url:?}: the prefix has an empty, \".\" or \"..\" part"
        ));
    }
    Ok((bucket, prefix))
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./braid-data"),
            url: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Scheduled recompute period, or `off` to run only on demand.
    pub interval: Interval,
    /// Published snapshots kept on disk (the newest included); older ones are removed.
    pub keep_snapshots: usize,
    /// Incremental layers a view's snapshot may stack before a run recomputes it in full.
    pub max_layers: usize,
    /// The archiver writes a partition's buffered events at least this often ...
    pub flush_interval: Period,
    /// ... or once this many are buffered, whichever comes first.
    pub flush_rows: usize,
    /// Consecutive small archive files of a partition merged into one by compaction.
    pub compact_files: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            interval: Interval(Some(std::time::Duration::from_secs(15 * 60))),
            keep_snapshots: 3,
            max_layers: 16,
            flush_interval: Period(std::time::Duration::from_secs(30)),
            flush_rows: 500_000,
            compact_files: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Empty: no authentication (dev). Otherwise `Authorization: Bearer <key>` is required.
    pub api_keys: Vec<String>,
    /// Most rows one answer may hold; a larger result is refused (400) unless `limit` cuts it.
    pub max_rows: usize,
    /// Longest time a request may take, body read included (503 after it).
    pub request_timeout: Period,
    /// Longest time a client may take to send a request's headers (the connection is closed).
    pub header_timeout: Period,
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// Requests served at once; more are refused at once with 503.
    pub max_concurrency: usize,
    /// Longest time a `POST /v1/sql` query may run; it is interrupted and answered 408.
    pub sql_timeout: Period,
    /// SQL queries run at once, each on its own thread; more are refused with 503.
    pub sql_concurrency: usize,
    /// Speed instances (`host:port` of their `speed.listen`) a serving instance without a
    /// speed layer of its own gathers speed cells from; empty: none.
    pub speed_peers: Vec<String>,
    /// How long an answer waits for every partition to be reported by some speed peer before
    /// it says which are missing.
    pub speed_timeout: Period,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_keys: Vec::new(),
            max_rows: 10_000,
            request_timeout: Period(std::time::Duration::from_secs(10)),
            header_timeout: Period(std::time::Duration::from_secs(5)),
            max_body_bytes: 64 * 1024,
            max_concurrency: 512,
            sql_timeout: Period(std::time::Duration::from_secs(10)),
            sql_concurrency: 2,
            speed_peers: Vec::new(),
            speed_timeout: Period(std::time::Duration::from_secs(2)),
        }
    }
}

fn socket_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid listen address {text:?} (expected ip:port, e.g. \"127.0.0.1:8080\")"
        ))
    })
}

fn optional_socket_addr<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(deserializer).map(Some)
}

/// Speed-layer tuning. `segment_size` is also the grain of batch coverage: a batch snapshot
/// covers whole segments of every partition, so the speed layer can drop exactly what it covers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeedConfig {
    /// Offsets per segment of a partition.
    pub segment_size: u64,
    /// Checkpoint at least this often while events arrive.
    pub checkpoint_interval: Period,
    /// Checkpoint after this many events, whichever comes first.
    pub checkpoint_events: u64,
    /// Most messages handled in one poll batch.
    pub max_batch: usize,
    /// Where this speed instance answers serving instances (`serve.speed_peers`) with its
    /// partitions' cells; unset: nowhere (the serving layer in the same process reads them).
    #[serde(deserialize_with = "optional_socket_addr")]
    pub listen: Option<SocketAddr>,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        Self {
            segment_size: 100_000,
            checkpoint_interval: Period(std::time::Duration::from_secs(5)),
            checkpoint_events: 100_000,
            max_batch: 5_000,
            listen: None,
        }
    }
}

/// A positive duration (`500ms`, `5s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub std::time::Duration);

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let duration = parse_duration(&text).map_err(serde::de::Error::custom)?;
        if duration.is_zero() {
            return Err(serde::de::Error::custom(format!(
                "duration {text:?} must be positive"
            )));
        }
        Ok(Self(duration))
    }
}

/// Default limit on one message's size.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub topic: String,
    #[serde(default)]
    pub format: Format,
    /// Field holding the event time: RFC 3339 string or integer epoch milliseconds.
    pub event_time: String,
    /// Optional unique id field, used by lineage and event lookups.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Optional schema. When given, views may only use declared fields, with fitting types.
    #[serde(default)]
    pub fields: Option<BTreeMap<String, FieldType>>,
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Avro or Protobuf without a registry: the writer schema (`.avsc` or `.proto`).
    #[serde(default)]
    pub schema_file: Option<String>,
    /// Protobuf with `schema_file`: the message type, by full name (`shop.Payment`).
    #[serde(default)]
    pub message: Option<String>,
    /// `regex`: the pattern; its named captures are the fields.
    #[serde(default)]
    pub pattern: Option<String>,
    /// How a textual event time is written (strftime-like); RFC 3339 when unset.
    #[serde(default)]
    pub time_format: Option<String>,
    /// The zone of event times written without an offset (UTC when unset).
    #[serde(default)]
    pub time_zone: Option<String>,
}

fn default_max_event_bytes() -> usize {
    DEFAULT_MAX_EVENT_BYTES
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    pub name: String,
    pub source: String,
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Event-time bucket width, `1s` to `1d`, dividing a day evenly.
    pub granularity: String,
    /// Metric name -> expression, e.g. `amount = "sum(amount)"`.
    #[serde(default)]
    pub metrics: BTreeMap<String, String>,
}

/// A validated configuration: every section, and sources and views resolved against each other.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub storage: StorageConfig,
    pub batch: BatchConfig,
    pub serve: ServeConfig,
    pub speed: SpeedConfig,
    pub sources: Vec<Arc<SourceDef>>,
    pub views: Vec<Arc<ViewDef>>,
    /// `[fraud]`, when configured.
    pub fraud: Option<Arc<crate::fraud::FraudDef>>,
    /// `[schema_registry]`, when configured: the client every source that reads it shares.
    pub registry: Option<Arc<crate::format::Registry>>,
}

impl Config {
    /// Loads `path`, applies `BRAID__*` overrides from the process environment, and validates.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(
            &text,
            &path.display().to_string(),
            std::env::vars(),
            path.parent(),
        )
    }

    /// Parses TOML text with no environment overrides.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_toml_with_env(text, std::iter::empty())
    }

    /// Parses TOML text, applying the `BRAID__SECTION__KEY` variables among `vars`.
    pub fn from_toml_with_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        Self::parse(text, "the built-in config", vars, None)
    }

    /// Parses TOML text whose relative file names (schema files) are under `dir`.
    pub fn from_toml_in(text: &str, dir: &Path) -> Result<Self> {
        Self::parse(text, "the built-in config", std::iter::empty(), Some(dir))
    }

    fn parse(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
        base: Option<&Path>,
    ) -> Result<Self> {
        let figment = Figment::new()
            .merge(Toml::string(text))
            .merge(EnvOverrides::from_vars(vars));
        let file: ConfigFile = figment.extract().map_err(|errors| {
            let lines: Vec<String> = errors
                .into_iter()
                .map(|e| {
                    let from = match &e.metadata {
                        Some(m) if m.name.contains(ENV_PREFIX) => format!(" (from {})", m.name),
                        _ => format!(" (in {origin})"),
                    };
                    if e.path.is_empty() {
                        format!("{}{from}", e.kind)
                    } else {
                        format!("{}: {}{from}", e.path.join("."), e.kind)
                    }
                })
                .collect();
            Error::ConfigSyntax(lines.join("; "))
        })?;
        validate::resolve(file, base)
    }

    pub fn source(&self, name: &str) -> Option<&Arc<SourceDef>> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn view(&self, name: &str) -> Option<&Arc<ViewDef>> {
        self.views.iter().find(|v| v.name == name)
    }

    /// The distinct topics of all sources, in source order.
    pub fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = Vec::new();
        for source in &self.sources {
            if !topics.contains(&source.topic.as_str()) {
                topics.push(&source.topic);
            }
        }
        topics
    }
}

/// `BRAID__SECTION__KEY=value` variables as a figment provider. Values parse like TOML scalars
/// and arrays (`8080`, `true`, `[a, b]`); keys are lowercased.
struct EnvOverrides {
    vars: Vec<(String, String)>,
}

impl EnvOverrides {
    fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars = vars
            .into_iter()
            .filter_map(|(key, value)| {
                let rest = key.strip_prefix(ENV_PREFIX)?;
                let path = rest
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>();
                Some((path.join("."), value))
            })
            .collect();
        Self { vars }
    }
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{ENV_PREFIX}* environment variables"))
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (path, value) in &self.vars {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(figment::Error::from(format!(
                    "environment override `{ENV_PREFIX}{}` names no key",
                    path.to_ascii_uppercase().replace('.', "__")
                )));
            }
            let value: figment::value::Value = value
                .parse()
                .unwrap_or_else(|_| figment::value::Value::from(value.clone()));
            let nested = figment::util::nest(path, value)
                .into_dict()
                .unwrap_or_default();
            dict = merge_dicts(dict, nested);
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn merge_dicts(mut base: Dict, other: Dict) -> Dict {
    for (key, value) in other {
        let merged = match (base.remove(&key), value) {
            (Some(figment::value::Value::Dict(_, a)), figment::value::Value::Dict(tag, b)) => {
                figment::value::Value::Dict(tag, merge_dicts(a, b))
            }
            (_, value) => value,
        };
        base.insert(key, merged);
    }
    base
}
