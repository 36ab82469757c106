//! `braid bench speed`: throughput of the speed layer's real apply path in-process (alone and with
//! concurrent readers), end to end from the embedded broker, and memory per live cell.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use braid_shared::config::SHORT_FETCH_WAIT_MS;
use braid_shared::generator::{Payments, PaymentsShape};
use braid_shared::{CellQuery, Config, Coverage, SpeedReader, Value};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tokio_util::sync::CancellationToken;

use braid_speed::{DetachedPartition, SpeedLayer};

use crate::error::{BenchError, Result};

/// What the benchmark measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub events: usize,
    pub mean_event_bytes: f64,
    /// `serde_json::Value` parsing of the same bytes, events/s.
    pub raw_json_events_per_sec: f64,
    /// Decode + apply to every view of the config, one core, events/s.
    pub apply_events_per_sec: f64,
    /// The same while a reader thread queries continuously.
    pub apply_with_reads_events_per_sec: f64,
    /// Point-read latency (one key, one hour) during ingest: p50 and p99, microseconds.
    pub read_p50_us: f64,
    pub read_p99_us: f64,
    pub reads: usize,
    /// End to end from the embedded broker: consumed, decoded, applied, checkpointed; events/s.
    pub end_to_end_events_per_sec: f64,
    pub end_to_end_events: usize,
    /// A plain librdkafka consumer reading the same topic to its end, messages discarded,
    /// events/s: the ceiling of the end-to-end run.
    pub raw_consume_events_per_sec: f64,
    /// Stream processors over the same topic: name and events/s, or why it did not run.
    pub stream_peers: Vec<StreamPeer>,
    /// Resident memory per live cell of a view of `count` and `sum`, bytes.
    pub bytes_per_count_sum_cell: f64,
    /// Resident memory per live cell across the config's views after the in-process run, bytes.
    pub bytes_per_cell_all_views: f64,
    pub live_cells: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = |x: f64| x / 1e6;
        writeln!(
            f,
            "events: {}, mean {:.0} bytes",
            self.events, self.mean_event_bytes
        )?;
        writeln!(
            f,
            "raw serde_json::Value parse:        {:>6.2} M events/s",
            m(self.raw_json_events_per_sec)
        )?;
        writeln!(
            f,
            "decode + apply, one core:           {:>6.2} M events/s ({:.0} MB/s)",
            m(self.apply_events_per_sec),
            self.apply_events_per_sec * self.mean_event_bytes / 1e6
        )?;
        writeln!(
            f,
            "  with a concurrent reader:         {:>6.2} M events/s",
            m(self.apply_with_reads_events_per_sec)
        )?;
        writeln!(
            f,
            "  reads during ingest:              {} reads, p50 {:.1} us, p99 {:.1} us",
            self.reads, self.read_p50_us, self.read_p99_us
        )?;
        writeln!(
            f,
            "raw librdkafka consume, same topic: {:>6.2} M events/s (messages discarded)",
            m(self.raw_consume_events_per_sec)
        )?;
        writeln!(
            f,
            "end to end from the broker:         {:>6.2} M events/s ({} events) = {:.2}x the raw consume",
            m(self.end_to_end_events_per_sec),
            self.end_to_end_events,
            self.end_to_end_events_per_sec / self.raw_consume_events_per_sec
        )?;
        if self.stream_peers.is_empty() {
            writeln!(
                f,
                "stream processor peers:             not run (--stream-peers DIR runs them)"
            )?;
        }
        // The first entry is Braid on the peers' workload; the peers are compared with it.
        let braid = self.stream_peers.first().and_then(|(_, r)| r.as_ref().ok());
        for (i, (name, result)) in self.stream_peers.iter().enumerate() {
            match (i, result, braid) {
                (0, Ok(rate), _) => writeln!(
                    f,
                    "  per card 1-minute count + sum:    {:>6.3} M events/s (the stream peers' workload, same topic)",
                    m(*rate),
                )?,
                (_, Ok(rate), Some(braid)) => writeln!(
                    f,
                    "  peer {name:<29} {:>6.3} M events/s, same workload, topic and broker -> braid = {:.1}x",
                    m(*rate),
                    braid / rate
                )?,
                (_, Ok(rate), None) => {
                    writeln!(f, "  peer {name:<29} {:>6.3} M events/s", m(*rate))?
                }
                (_, Err(why), _) => writeln!(f, "  peer {name}: did not run: {why}")?,
            }
        }
        writeln!(
            f,
            "memory per live count+sum cell:     {:>6.0} bytes",
            self.bytes_per_count_sum_cell
        )?;
        // Measured as resident memory grown while the state was built: where the allocator
        // reused memory freed by the earlier measurements, it did not grow.
        match self.bytes_per_cell_all_views > 0.0 {
            true => write!(
                f,
                "memory per live cell, all views:    {:>6.0} bytes ({} cells)",
                self.bytes_per_cell_all_views, self.live_cells
            ),
            false => write!(
                f,
                "memory per live cell, all views:    not measured: the {} cells fit in memory freed earlier in this run (use more --events)",
                self.live_cells
            ),
        }
    }
}

/// Runs the benchmark for `config`'s first source (it must produce the payments fields).
pub fn run(
    config: &Config,
    events: usize,
    end_to_end_events: usize,
    brokers: Option<&str>,
    stream_peers: Option<&std::path::Path>,
) -> Result<Report> {
    // Memory first, while the heap is fresh: freed memory reused later would hide growth.
    let bytes_per_count_sum_cell = count_sum_cell_bytes();
    let messages = payments(events);
    let bytes: usize = messages.iter().map(Vec::len).sum();

    let started = Instant::now();
    for m in &messages {
        std::hint::black_box(serde_json::from_slice::<serde_json::Value>(m).ok());
    }
    let raw_json = events as f64 / started.elapsed().as_secs_f64();

    let rss_before = resident_bytes();
    let alone = apply_all(config, &messages, false)?;
    let live_cells = alone.partition.live_cells();
    let per_cell_all =
        resident_bytes().saturating_sub(rss_before) as f64 / live_cells.max(1) as f64;
    let apply = alone.rate;
    drop(alone);

    let with_reads = apply_all(config, &messages, true)?;
    let apply_with_reads = with_reads.rate;
    let (p50, p99, reads) = percentiles(with_reads.read_latencies_us);
    let (end_to_end, raw_consume, peers) =
        end_to_end(config, end_to_end_events, brokers, stream_peers)?;

    Ok(Report {
        events,
        mean_event_bytes: bytes as f64 / events as f64,
        raw_json_events_per_sec: raw_json,
        apply_events_per_sec: apply,
        apply_with_reads_events_per_sec: apply_with_reads,
        read_p50_us: p50,
        read_p99_us: p99,
        reads,
        end_to_end_events_per_sec: end_to_end,
        end_to_end_events,
        raw_consume_events_per_sec: raw_consume,
        stream_peers: peers,
        bytes_per_count_sum_cell,
        bytes_per_cell_all_views: per_cell_all,
        live_cells,
    })
}

fn payments(n: usize) -> Vec<Vec<u8>> {
    let mut generator = Payments::new(42, 1_790_000_000_000, PaymentsShape::default());
    (0..n).map(|_| generator.next_event()).collect()
}

/// Median and 99th percentile of latency samples, and their number.
fn percentiles(mut samples: Vec<f64>) -> (f64, f64, usize) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    (at(0.5), at(0.99), samples.len())
}

/// One in-process run: the apply rate, the state built, and read latencies (us) if reading.
struct Run {
    rate: f64,
    partition: DetachedPartition,
    read_latencies_us: Vec<f64>,
}

/// Decodes and applies `messages` as one partition's stream through the speed layer's apply
/// path. With `reads`, a second thread reads point queries the whole time.
fn apply_all(config: &Config, messages: &[Vec<u8>], reads: bool) -> Result<Run> {
    let temp = tempdir()?;
    let storage = Arc::new(braid_store::LocalStorage::new(temp.path()));
    let partition = DetachedPartition::new(config, storage)?;
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Set by the reader after its first read: the ingest starts only then, so even a short run
    // is measured under reads.
    let reading = Arc::new(AtomicBool::new(false));
    let reader = reads.then(|| {
        let (handle, stop, latencies, reading) = (
            partition.reader(),
            Arc::clone(&stop),
            Arc::clone(&latencies),
            Arc::clone(&reading),
        );
        let view = config
            .views
            .first()
            .map(|v| v.name.clone())
            .unwrap_or_default();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let query = CellQuery {
                    from_ms: 1_790_000_000_000,
                    to_ms: 1_790_000_000_000 + 3_600_000,
                    filters: vec![(0, Value::Str(format!("card-{:06}", i % 500).into()))],
                };
                let started = Instant::now();
                let _ = std::hint::black_box(handle.read(&view, &query, &Coverage::default()));
                if let Ok(mut l) = latencies.lock() {
                    l.push(started.elapsed().as_secs_f64() * 1e6);
                }
                reading.store(true, Ordering::Release);
            }
        })
    });
    while reader.is_some() && !reading.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let batch = config.speed.max_batch.max(1);
    let started = Instant::now();
    for (n, chunk) in messages.chunks(batch).enumerate() {
        partition.apply((n * batch) as i64, chunk)?;
    }
    let rate = messages.len() as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    drop(temp);
    let read_latencies_us = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(Run {
        rate,
        partition,
        read_latencies_us,
    })
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("braid-bench-")
        .tempdir()
        .map_err(BenchError::from)
}

/// Anonymous resident memory of this process (the heap, not the mapped binary, whose pages the
/// system may drop under load), from /proc (0 where unavailable).
fn resident_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Memory of one million live cells of a `count` + `sum` view keyed by a string id.
fn count_sum_cell_bytes() -> f64 {
    const CELLS: usize = 1_000_000;
    let Ok(config) = Config::from_toml(
        r#"
[[source]]
name = "s"
topic = "t"
event_time = "ts"
[[view]]
name = "v"
source = "s"
group_by = ["k"]
granularity = "1m"
[view.metrics]
n = "count"
total = "sum(x)"
"#,
    ) else {
        return 0.0;
    };
    let view = Arc::clone(&config.views[0]);
    let source = &config.sources[0];
    let (k, x) = (source.slot("k").unwrap_or(0), source.slot("x").unwrap_or(0));
    let before = resident_bytes();
    let mut state = braid_shared::ViewState::new(view);
    let mut events = Vec::with_capacity(10_000);
    for start in (0..CELLS).step_by(10_000) {
        events.clear();
        for i in start..start + 10_000 {
            let mut values = vec![Value::Null; source.fields.len()];
            values[k] = Value::Str(format!("key-{i:07}").into());
            values[x] = Value::Int(i as i64);
            events.push(braid_shared::Event { time_ms: 0, values });
        }
        state.apply(&events);
    }
    drop(events);
    let bytes = resident_bytes().saturating_sub(before) as f64 / state.len() as f64;
    std::hint::black_box(&state);
    bytes
}

/// Produces `n` events to the embedded broker, then measures a plain consumer reading them
/// all, the speed layer from its first partition assignment until it has applied them all, and
/// the stream-processor peers in `stream_peers`: (speed layer, plain consumer) events/s and the
/// peers' results.
fn end_to_end(
    config: &Config,
    n: usize,
    brokers: Option<&str>,
    stream_peers: Option<&std::path::Path>,
) -> Result<(f64, f64, Vec<StreamPeer>)> {
    // The embedded broker keeps a bounded log per partition (a few MB): spread the run over
    // enough partitions that nothing is truncated before it is consumed.
    let partitions = i32::try_from(n / 20_000 + 1).unwrap_or(i32::MAX);
    let (_cluster, bootstrap, topic) = match brokers {
        None => {
            let cluster = MockCluster::new(1)?;
            let topic = "bench-payments".to_owned();
            cluster.create_topic(&topic, partitions, 1)?;
            let bootstrap = cluster.bootstrap_servers();
            (Some(cluster), bootstrap, topic)
        }
        Some(brokers) => {
            let topic = format!(
                "braid-bench-{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_millis()
            );
            braid_kafka::create_topic(brokers, &topic, partitions, Duration::from_secs(15))
                .map_err(BenchError::Setup)?;
            (None, brokers.to_owned(), topic)
        }
    };
    let topic = topic.as_str();
    let temp = tempdir()?;
    let dir = temp.path().to_owned();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .create()?;
    for (i, payload) in payments(n).into_iter().enumerate() {
        let partition = i32::try_from(i % partitions as usize).unwrap_or(0);
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .partition(partition)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(5));
                    record = back;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let raw = raw_consume(&bootstrap, topic, partitions, n)?;
    let broker = Broker {
        bootstrap: &bootstrap,
        topic,
        partitions,
    };
    let rate = speed_layer_rate(config, &broker, "braid-bench", n, &dir)?;
    let peers = match stream_peers {
        Some(peers) => {
            // Braid again on the peers' workload alone, for the like-for-like ratio.
            let workload = Config::from_toml(PEER_WORKLOAD)
                .map_err(|e| BenchError::Setup(format!("the peers' workload: {e}")))?;
            let braid = speed_layer_rate(
                &workload,
                &broker,
                "braid-bench-peer-workload",
                n,
                &dir.join("peer"),
            )?;
            let mut results = vec![("braid, the same workload".to_owned(), Ok(braid))];
            results.extend(run_stream_peers(peers, &bootstrap, topic, n));
            results
        }
        None => Vec::new(),
    };
    drop(temp);
    Ok((rate, raw, peers))
}

/// The stream peers' workload as a Braid view: per card, a 1-minute count and sum of amount.
const PEER_WORKLOAD: &str = r#"
[kafka]
brokers = "embedded"
group_id = "braid-bench-peer-workload"

[[source]]
name = "payments"
topic = "payments"
format = "json"
event_time = "ts"
event_id = "tx_id"

[source.fields]
tx_id = "string"
card_id = "string"
merchant_id = "string"
country = "string"
amount = "float"
ts = "string"

[[view]]
name = "card_minute"
source = "payments"
group_by = ["card_id"]
granularity = "1m"

[view.metrics]
tx = "count"
amount = "sum(amount)"
"#;

/// Where the end-to-end run's events are.
struct Broker<'a> {
    bootstrap: &'a str,
    topic: &'a str,
    partitions: i32,
}

/// The speed layer of `config` (its first source read from the broker's topic, by consumer
/// group `group`, storing in `dir`) consuming the topic's `n` events: events/s.
fn speed_layer_rate(
    config: &Config,
    broker: &Broker<'_>,
    group: &str,
    n: usize,
    dir: &std::path::Path,
) -> Result<f64> {
    let mut config = config.clone();
    config.kafka.brokers = broker.bootstrap.to_owned();
    // The plain consumer's fetch wait (see `raw_consume`), whatever the config says.
    config.kafka.config.insert(
        "fetch.wait.max.ms".to_owned(),
        braid_shared::config::KafkaSetting::Int(SHORT_FETCH_WAIT_MS),
    );
    config.kafka.group_id = group.to_owned();
    config.storage.dir = dir.to_owned();
    let mut sources: Vec<braid_shared::SourceDef> =
        config.sources.iter().map(|s| (**s).clone()).collect();
    if let Some(first) = sources.first_mut() {
        first.topic = broker.topic.to_owned();
    }
    config.sources = sources.into_iter().map(Arc::new).collect();
    let cancel = CancellationToken::new();
    let storage = Arc::new(braid_store::LocalStorage::new(dir));
    let layer = SpeedLayer::start(&config, storage, cancel.clone())?;
    consume_rate(layer, &cancel, broker.partitions, n)
}

/// A stream processor's name and its events/s, or why it did not run.
pub type StreamPeer = (String, std::result::Result<f64, braid_shared::Invalid>);

/// The stream-processor peers: script, the virtualenv (under `$PEERS_HOME`) whose Python runs
/// it, and the name its report line starts with.
const STREAM_PEERS: [(&str, &str, &str); 2] = [
    ("stream_pathway.py", "venv-pathway", "pathway"),
    ("stream_bytewax.py", "venv", "bytewax"),
];

/// Runs each peer script of `dir` over `topic` (its `n` events from the start), one at a time,
/// at most 5 minutes each; its events/s from the line it prints, or why it did not run.
fn run_stream_peers(
    dir: &std::path::Path,
    bootstrap: &str,
    topic: &str,
    n: usize,
) -> Vec<StreamPeer> {
    let home = std::env::var_os("PEERS_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/braid-peers"))
        })
        .unwrap_or_default();
    STREAM_PEERS
        .iter()
        .map(|&(script, venv, name)| {
            let script = dir.join(script);
            let python = home.join(venv).join("bin/python");
            let result = if !script.is_file() {
                Err(format!("no {} in the peers folder", script.display()))
            } else if !python.is_file() {
                Err(format!(
                    "no {} (the peers' setup.sh installs it)",
                    python.display()
                ))
            } else {
                stream_peer_rate(&python, &script, name, bootstrap, topic, n)
            };
            (name.to_owned(), result.map_err(braid_shared::Invalid))
        })
        .collect()
}

fn stream_peer_rate(
    python: &std::path::Path,
    script: &std::path::Path,
    name: &str,
    bootstrap: &str,
    topic: &str,
    n: usize,
) -> std::result::Result<f64, String> {
    let output = std::process::Command::new("timeout")
        .arg("300")
        .arg(python)
        .arg(script)
        .args(["--bootstrap", bootstrap, "--topic", topic, "--events"])
        .arg(n.to_string())
        .output()
        .map_err(|e| format!("did not start: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(name) && l.contains(" events/s"));
    let rate = line.and_then(|l| {
        let before = &l[..l.find(" events/s")?];
        before
            .rsplit(' ')
            .next()?
            .replace(',', "")
            .parse::<f64>()
            .ok()
    });
    match rate {
        Some(rate) if rate > 0.0 => Ok(rate),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!(
                "{} ({})",
                output.status,
                last.chars().take(200).collect::<String>()
            ))
        }
    }
}

/// Events per second of a librdkafka consumer with the speed layer's fetch settings, assigned
/// every partition of `topic` from offset 0, polling until it has seen `n` messages (their
/// payloads touched, then discarded), timed from its first message.
fn raw_consume(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> Result<f64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message as _, Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "braid-bench-raw")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", SHORT_FETCH_WAIT_MS.to_string())
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut seen, mut bytes, mut started) = (0usize, 0usize, None);
    while seen < n {
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "the plain consumer saw {seen} of {n} events in 120 s"
            )));
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            started.get_or_insert_with(Instant::now);
            bytes += message.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    std::hint::black_box(bytes);
    let elapsed = started.map_or(Duration::ZERO, |s| s.elapsed());
    Ok(n as f64 / elapsed.as_secs_f64().max(1e-9))
}

/// Events per second of `layer` (started on `partitions` partitions holding `n` events from
/// offset 0, and stopped by `cancel`) from its first consumed events to having consumed them
/// all, as the plain consumer is timed (the events of that first observation are not counted,
/// the time to join the group and start fetching is not timed); stops and joins the layer.
pub fn consume_rate(
    layer: SpeedLayer,
    cancel: &CancellationToken,
    partitions: i32,
    n: usize,
) -> Result<f64> {
    let handle = layer.handle();
    let stalled = BenchError::Setup;
    let assigned_by = Instant::now() + Duration::from_secs(120);
    while handle.positions().len() < partitions as usize {
        if Instant::now() > assigned_by {
            cancel.cancel();
            let _ = layer.join();
            return Err(stalled(
                "the embedded broker never assigned every partition".to_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut first: Option<(Instant, i64)> = None;
    let (mut last_total, mut last_progress) = (0, Instant::now());
    loop {
        let total: i64 = handle.positions().values().sum();
        if total > 0 && first.is_none() {
            first = Some((Instant::now(), total));
        }
        if total >= n as i64 {
            break;
        }
        if total > last_total {
            (last_total, last_progress) = (total, Instant::now());
        }
        if last_progress.elapsed() > Duration::from_secs(30) {
            cancel.cancel();
            let positions = handle.positions();
            let _ = layer.join();
            return Err(stalled(format!(
                "end-to-end run stalled at {positions:?} of {n} events"
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (started, counted_before) = first.unwrap_or((Instant::now(), 0));
    let timed = (n as i64 - counted_before).max(1);
    let rate = timed as f64 / started.elapsed().as_secs_f64().max(1e-9);
    cancel.cancel();
    layer.join()?;
    Ok(rate)
}
