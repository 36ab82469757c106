//! Test support shared by every crate's integration tests: librdkafka's mock cluster, a
//! producer, a payments stream with late and malformed events, a config per test, the reference
//! state computed independently from the produced bytes, and polling with a deadline; moto's S3
//! server (`moto`).

pub mod moto;
pub mod oracle;
pub mod registry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_shared::{Config, Decoder, Event, ViewState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};

pub type Cluster = MockCluster<'static, DefaultProducerContext>;

pub fn cluster(brokers: i32) -> Cluster {
    MockCluster::new(brokers).expect("mock cluster")
}

pub fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        // Kafka-compatible brokers such as tansu 0.6 mishandle idempotent producers.
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer")
}

/// One produced message: where it was sent and its bytes.
#[derive(Clone, Debug)]
pub struct Produced {
    pub partition: i32,
    pub payload: Vec<u8>,
}

/// Payments with event times up to 2 hours late, in random order, and about 3% malformed.
pub fn payments(seed: u64, count: usize, partitions: i32) -> Vec<Produced> {
    let mut rng = StdRng::seed_from_u64(seed);
    let base_ms: i64 = 1_790_000_000_000;
    (0..count)
        .map(|i| {
            let partition = rng.random_range(0..partitions);
            let late = if rng.random_bool(0.2) { rng.random_range(0..7_200_000) } else { 0 };
            let ts = base_ms + (i as i64) * 250 - late;
            let payload = match rng.random_range(0..100) {
                0 => b"this is not json".to_vec(),
                1 => format!(r#"{{"tx_id":"t{i}","card_id":"c1","amount":"12.50","ts":{ts}}}"#).into_bytes(),
                2 => format!(r#"{{"tx_id":"t{i}","card_id":"c1","amount":3}}"#).into_bytes(),
                _ => {
                    let card = rng.random_range(0..40);
                    let merchant = rng.random_range(0..25);
                    let country = ["US", "DE", "BR", "JP"][rng.random_range(0..4)];
                    let amount = rng.random_range(1..100_000) as f64 / 100.0;
                    let time = if rng.random_bool(0.5) {
                        ts.to_string()
                    } else {
                        format!("\"{}\"", chrono::DateTime::from_timestamp_millis(ts).unwrap().to_rfc3339())
                    };
                    format!(
                        r#"{{"tx_id":"t{i}","card_id":"card-{card}","merchant_id":"m{merchant}","country":"{country}","amount":{amount},"ts":{time}}}"#
                    )
                    .into_bytes()
                }
            };
            Produced { partition, payload }
        })
        .collect()
}

pub fn produce(producer: &BaseProducer, topic: &str, messages: &[Produced]) {
    for message in messages {
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .partition(message.partition)
            .payload(&message.payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    producer.poll(Duration::from_millis(10));
                    record = returned;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// A config for one test: its own topic, group and storage dir.
pub fn config(
    bootstrap: &str,
    topic: &str,
    group: &str,
    dir: &Path,
    extra_kafka: &str,
) -> (PathBuf, Config) {
    let text = format!(
        r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
[kafka.config]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500
"topic.metadata.refresh.interval.ms" = 1000
{extra_kafka}

[storage]
dir = "{dir}"

[serve]
listen = "127.0.0.1:0"

[speed]
segment_size = 100
checkpoint_interval = "100ms"
checkpoint_events = 500
max_batch = 200

[batch]
interval = "off"
flush_interval = "200ms"
flush_rows = 2000
compact_files = 4

{source}"#,
        dir = dir.display(),
        source = payments_source(topic),
    );
    let path = dir.join("braid.toml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, &text).unwrap();
    (path, Config::from_toml(&text).unwrap())
}

/// The payments source on `topic` and its two views (`card_minute`, `country_hour`) that the
/// tests and the torture suite query, as TOML.
pub fn payments_source(topic: &str) -> String {
    format!(
        r#"[[source]]
name = "payments"
topic = "{topic}"
event_time = "ts"
event_id = "tx_id"

[[view]]
name = "card_minute"
source = "payments"
group_by = ["card_id"]
granularity = "1m"
[view.metrics]
tx = "count"
amount = "sum(amount)"
high = "max(amount)"
merchants = "approx_distinct(merchant_id)"

[[view]]
name = "country_hour"
source = "payments"
group_by = ["country"]
granularity = "1h"
[view.metrics]
tx = "count"
avg = "avg(amount)"
p90 = "quantile(amount, 0.9)"
top = "top_k(merchant_id, 3)"
"#
    )
}

/// One test's world: a mock cluster with a fresh topic, a storage dir and a config for both.
pub struct Fixture {
    pub cluster: Cluster,
    pub topic: String,
    pub dir: tempfile::TempDir,
    /// The config file, for child processes.
    pub path: PathBuf,
    pub config: Config,
}

pub fn fixture(partitions: i32, extra_kafka: &str) -> Fixture {
    let cluster = cluster(1);
    let topic = unique("payments");
    cluster.create_topic(&topic, partitions, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, config) = config(
        &cluster.bootstrap_servers(),
        &topic,
        &unique("group"),
        dir.path(),
        extra_kafka,
    );
    Fixture {
        cluster,
        topic,
        dir,
        path,
        config,
    }
}

impl Fixture {
    pub fn produce(&self, messages: &[Produced]) {
        produce(
            &producer(&self.cluster.bootstrap_servers()),
            &self.topic,
            messages,
        );
    }
}

/// The messages each partition holds, in offset order.
pub fn by_partition(messages: &[Produced], partitions: i32) -> Vec<Vec<Vec<u8>>> {
    let mut out = vec![Vec::new(); partitions as usize];
    for m in messages {
        out[m.partition as usize].push(m.payload.clone());
    }
    out
}

/// The reference: every valid event from offset `from[p]` of each partition, folded by
/// `ViewState::recompute`.
pub fn reference(
    config: &Config,
    view: &str,
    partitions: &[Vec<Vec<u8>>],
    from: &[i64],
) -> ViewState {
    reference_of(config, view, partitions, |p, len| {
        from.get(p).copied().unwrap_or(0) as usize..len
    })
}

/// The reference over the offsets `offsets(partition, messages in it)` of each partition.
pub fn reference_of(
    config: &Config,
    view: &str,
    partitions: &[Vec<Vec<u8>>],
    offsets: impl Fn(usize, usize) -> std::ops::Range<usize>,
) -> ViewState {
    let view = Arc::clone(config.view(view).unwrap());
    let decoder = Decoder::new(config.source(&view.source).unwrap());
    let events: Vec<Event> = partitions
        .iter()
        .enumerate()
        .flat_map(|(p, messages)| {
            let range = offsets(p, messages.len());
            messages[range.start.min(messages.len())..range.end.min(messages.len())].iter()
        })
        .filter_map(|bytes| decoder.decode(bytes).ok())
        .collect();
    ViewState::recompute(view, &events)
}

/// Produces messages in the background, a chunk at a time with a pause between chunks, so
/// crash tests kill their children mid-stream.
pub struct Trickle {
    produced: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Trickle {
    pub fn start(
        bootstrap: &str,
        topic: &str,
        messages: &[Produced],
        chunk: usize,
        pause: Duration,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let produced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (messages, bootstrap, topic) =
            (messages.to_vec(), bootstrap.to_owned(), topic.to_owned());
        let thread = {
            let (produced, stop) = (Arc::clone(&produced), Arc::clone(&stop));
            std::thread::spawn(move || {
                let producer = producer(&bootstrap);
                for chunk in messages.chunks(chunk) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    produce(&producer, &topic, chunk);
                    produced.fetch_add(chunk.len(), Ordering::Relaxed);
                    std::thread::sleep(pause);
                }
            })
        };
        Self {
            produced,
            stop,
            thread,
        }
    }

    /// Messages produced so far (all flushed to the broker).
    pub fn produced(&self) -> usize {
        self.produced.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops after the chunk in flight; returns how many were produced.
    pub fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.finish()
    }

    /// Waits until every message is produced; returns how many were.
    pub fn finish(self) -> usize {
        let Self {
            produced, thread, ..
        } = self;
        thread.join().expect("the producer thread");
        produced.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Polls `condition` until it holds or the deadline passes.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn unique(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), rand::random::<u32>())
}

/// Fails with the first difference when `got` is not `expected` (floats to 1e-9 relative).
pub fn assert_same(got: &ViewState, expected: &ViewState) {
    if let Err(difference) = got.approx_eq(expected, 1e-9) {
        panic!("state differs from the reference: {difference}");
    }
}

/// The environment variable through which a child test process gets its config path.
pub const CHILD_CONFIG_ENV: &str = "BRAID_CHILD_CONFIG";

/// Runs the ignored test `name` of the current test binary as a separate process (to be killed
/// with -9), handing it `config` through [`CHILD_CONFIG_ENV`].
pub fn spawn_child_test(name: &str, config: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture"])
        .env(CHILD_CONFIG_ENV, config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("child starts")
}

/// In a child test process: the config its parent handed over.
pub fn child_config() -> Config {
    let path =
        std::env::var(CHILD_CONFIG_ENV).expect("started by a crash test with its config path");
    Config::load(Path::new(&path)).expect("child config")
}

/// Metrics seen through a debugging recorder, accumulated over its snapshots (which drain it):
/// counters summed, the last value of each gauge and how often it was set, histogram samples
/// counted. Keys read `name{label=value,...}` with labels sorted.
#[derive(Debug, Default)]
pub struct SeenMetrics(pub std::collections::BTreeMap<String, (f64, usize)>);

impl SeenMetrics {
    pub fn refresh(&mut self, snapshotter: &metrics_util::debugging::Snapshotter) {
        use metrics_util::debugging::DebugValue;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let entry = self
                .0
                .entry(format!("{}{{{}}}", key.name(), labels.join(",")))
                .or_default();
            match value {
                DebugValue::Counter(n) => entry.0 += n as f64,
                DebugValue::Gauge(g) => {
                    entry.0 = g.into_inner();
                    entry.1 += 1;
                }
                DebugValue::Histogram(samples) => entry.1 += samples.len(),
            }
        }
    }

    /// A counter's total or a gauge's last value (0 when never seen).
    pub fn value(&self, key: &str) -> f64 {
        self.0.get(key).map_or(0.0, |(v, _)| *v)
    }

    /// Histogram samples or gauge settings seen.
    pub fn samples(&self, key: &str) -> usize {
        self.0.get(key).map_or(0, |(_, n)| *n)
    }
}
