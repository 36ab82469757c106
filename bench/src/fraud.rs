//! `braid bench fraud`: what scoring every applied event costs the speed layer, how soon an
//! alert is visible on the live stream after its event was produced, and on-demand score latency
//! at a fixed rate, on the embedded broker with the config's `[fraud]`.
//!
//! 1. Throughput: the same generated payments consumed end to end by a speed layer without the
//!    scorer and by one with it (fresh group and storage each, alternated, best of each kept).
//!    The events are keyed by the fraud key, as a fraud source's producers key them, or with
//!    `--spread` sent round-robin: then every partition holds cells of every busy key, and a
//!    score visits each of them.
//! 2. Produce to alert on `GET /v1/fraud/alerts` (`text/event-stream`): while background payments
//!    are ingested, fraud-like bursts of fresh cards (many merchants, large amounts, seconds
//!    apart) are produced to partition 0 one event at a time; each alert that arrives names its
//!    event's offset, and its latency is measured from that event's send.
//! 3. `POST /v1/fraud/score` at a fixed rate while the background ingest runs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{BenchError, Context as _, Result, bail};
use braid_merge::{AlertScorer, SnapshotCache};
use braid_serving::Backends;
use braid_shared::Config;
use braid_shared::generator::{Payments, PaymentsShape};
use braid_speed::SpeedLayer;
use braid_store::LocalStorage;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use tokio_util::sync::CancellationToken;

use crate::serve::{RequestOf, Stats, load, send, send_record, send_spread, start_ready};

pub struct Options {
    /// Events for each throughput run.
    pub events: usize,
    /// Throughput runs of each kind (alternated; the best of each is reported).
    pub rounds: usize,
    /// Fraud-like bursts produced for the alert latency.
    pub bursts: usize,
    /// On-demand score requests per second.
    pub rate: u64,
    /// Seconds of on-demand scoring.
    pub seconds: u64,
    /// Background events per second during the latency measurements.
    pub ingest_rate: u64,
    /// Throughput events round-robin over the partitions, not keyed by the fraud key.
    pub spread: bool,
}

pub fn run(config: &Config, options: &Options) -> Result<String> {
    let fraud = config
        .fraud
        .clone()
        .context("the config has no [fraud] section to measure")?;
    let topic = fraud.source.topic.clone();
    // Metrics recorded as `braid run` records them, with and without scoring.
    braid_serving::install_metrics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "braid bench fraud: source {:?}, {} features, {} rules",
        fraud.source.name,
        fraud.features.len(),
        fraud.rules.len()
    );

    // 1. Throughput with and without the scorer.
    let cluster = MockCluster::new(1)?;
    // The embedded broker keeps a bounded log per partition: spread the events.
    let partitions = i32::try_from(options.events / 20_000 + 1).unwrap_or(i32::MAX);
    cluster.create_topic(&topic, partitions, 1)?;
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("linger.ms", "20")
        .create()?;
    // Recent event times, so the velocity windows hold real neighbours.
    let start_ms = chrono::Utc::now().timestamp_millis() - options.events as i64;
    let mut payments = Payments::new(5, start_ms, PaymentsShape::default());
    let layout = if options.spread {
        send_spread(&producer, &topic, partitions, &mut payments, options.events)?;
        "round-robin".to_owned()
    } else {
        send_keyed(&producer, &topic, &fraud.key, &mut payments, options.events)?;
        format!("keyed by {}", fraud.key)
    };
    let (mut plain, mut scored) = (0.0f64, 0.0f64);
    let mut alerts = 0;
    for round in 0..options.rounds.max(1) {
        for scoring in [false, true] {
            eprintln!(
                "bench fraud: throughput round {}, {}",
                round + 1,
                if scoring { "scoring" } else { "not scoring" }
            );
            let (rate, raised) = throughput(
                config,
                &cluster.bootstrap_servers(),
                options.events,
                partitions,
                scoring,
                &format!("braid-bench-fraud-{round}-{scoring}"),
            )?;
            if scoring {
                scored = scored.max(rate);
                alerts = raised;
            } else {
                plain = plain.max(rate);
            }
        }
    }
    let _ = writeln!(
        report,
        "  speed layer end to end, {} events {layout} over {partitions} partitions, best of {}: {:.0} events/s without scoring, {:.0} events/s scoring every event ({alerts} alerts raised): {:.1}% slower",
        options.events,
        options.rounds.max(1),
        plain,
        scored,
        (1.0 - scored / plain.max(f64::MIN_POSITIVE)) * 100.0
    );
    drop(cluster);

    // 2 and 3: the whole scoring path with the API, under a background ingest.
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(&topic, 3, 1)?;
    let temp = tempfile::tempdir()?;
    let mut config = config.clone();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.group_id = "braid-bench-fraud-live".to_owned();
    config.storage.dir = temp.path().to_owned();
    config.serve.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.serve.max_concurrency = 10_000;
    config.kafka.prefer_short_fetch_wait();
    let cancel = CancellationToken::new();
    let (speed, snapshot, alerts_logged) = start_scoring(&config, &cancel)?;
    let backends = Backends {
        speed: Some(Arc::new(speed.handle())),
        snapshot: Some(snapshot),
        alerts_logged: Some(alerts_logged),
        ..Backends::default()
    };
    let server = start_ready(&runtime, &config, backends, &cancel)?;
    let addr = server.addr();
    let ingest_stop = CancellationToken::new();
    let ingest = background(
        &cluster.bootstrap_servers(),
        &topic,
        options.ingest_rate,
        &ingest_stop,
    );
    eprintln!("bench fraud: produce -> alert on the event stream");
    let (raised, latency) = runtime.block_on(alert_latency(
        addr,
        &cluster.bootstrap_servers(),
        &topic,
        options.bursts,
    ))?;
    let _ = writeln!(
        report,
        "  produced -> alert logged ({} events/s ingested meanwhile): {raised}",
        options.ingest_rate
    );
    let _ = writeln!(report, "  produced -> alert on the event stream: {latency}");
    eprintln!(
        "bench fraud: POST /v1/fraud/score at {} requests/s",
        options.rate
    );
    let cards: Vec<String> = (0..200).map(|i| format!("card-{i:06}")).collect();
    let score = |i: usize| {
        let event = serde_json::json!({
            "tx_id": format!("bench-{i}"),
            "card_id": cards[i % cards.len()],
            "merchant_id": "m-00001",
            "country": "DE",
            "amount": 120.5,
            "currency": "USD",
            "ts": chrono::Utc::now().timestamp_millis(),
        });
        ("/v1/fraud/score".to_owned(), Some(event.to_string()))
    };
    let score: &RequestOf<'_> = &score;
    let stats = runtime.block_on(load(addr, score, options.rate, options.seconds))?;
    let _ = writeln!(
        report,
        "  POST /v1/fraud/score, {} requests/s: {stats}",
        options.rate
    );
    ingest_stop.cancel();
    let ingested = ingest
        .join()
        .map_err(|_| BenchError::Setup("ingest thread panicked".to_owned()))??;
    let _ = write!(report, "  background events ingested: {ingested}");
    cancel.cancel();
    runtime.block_on(server.join())?;
    speed.join()?;
    Ok(report)
}

/// Produces `n` generated payments with the fraud key's value as the Kafka key, so the
/// producer's partitioner keeps each key's events in one partition, as producers of a fraud
/// source do (it also orders each key's events).
fn send_keyed(
    producer: &BaseProducer,
    topic: &str,
    key_field: &str,
    payments: &mut Payments,
    n: usize,
) -> Result<()> {
    for _ in 0..n {
        let event = payments.next_event();
        let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&event)?;
        let key = match fields.get(key_field) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => bail!("generated payments have no field {key_field:?} to key them by"),
        };
        send_record(
            producer,
            BaseRecord::<str, [u8]>::to(topic).key(&key).payload(&event),
        );
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

/// A speed layer handing every applied event of the fraud source to an [`AlertScorer`].
fn start_scoring(
    config: &Config,
    cancel: &CancellationToken,
) -> Result<(
    SpeedLayer,
    Arc<SnapshotCache>,
    tokio::sync::watch::Receiver<u64>,
)> {
    let storage: Arc<dyn braid_store::Storage> = Arc::new(LocalStorage::new(&config.storage.dir));
    let snapshot = Arc::new(SnapshotCache::new(
        Arc::new(config.clone()),
        Arc::clone(&storage),
    ));
    let fraud = config
        .fraud
        .clone()
        .context("the config has no [fraud] section")?;
    let scorer = AlertScorer::new(fraud, Arc::clone(&storage), Arc::clone(&snapshot), None)?;
    let hook = Arc::clone(&scorer) as Arc<dyn braid_shared::fraud::EventScorer>;
    let layer = SpeedLayer::start_scoring(config, storage, Some(hook), cancel.clone())?;
    Ok((layer, snapshot, scorer.logged()))
}

/// Events per second of one speed layer consuming `events` from offset 0, and the alerts it
/// raised (0 without scoring).
fn throughput(
    config: &Config,
    brokers: &str,
    events: usize,
    partitions: i32,
    scoring: bool,
    group: &str,
) -> Result<(f64, usize)> {
    let temp = tempfile::tempdir()?;
    let mut config = config.clone();
    config.kafka.brokers = brokers.to_owned();
    config.kafka.group_id = group.to_owned();
    config.storage.dir = temp.path().to_owned();
    let cancel = CancellationToken::new();
    let layer = if scoring {
        start_scoring(&config, &cancel)?.0
    } else {
        let storage = Arc::new(LocalStorage::new(temp.path()));
        SpeedLayer::start(&config, storage, cancel.clone())?
    };
    let rate = crate::speed::consume_rate(layer, &cancel, partitions, events)?;
    let raised = if scoring {
        braid_store::alerts::read_all(&LocalStorage::new(temp.path()))?
            .0
            .len()
    } else {
        0
    };
    Ok((rate, raised))
}

/// Generated payments to partitions 1 and 2 at `rate` per second until `stop`.
fn background(
    brokers: &str,
    topic: &str,
    rate: u64,
    stop: &CancellationToken,
) -> std::thread::JoinHandle<Result<u64>> {
    let (stop, topic, brokers) = (stop.clone(), topic.to_owned(), brokers.to_owned());
    std::thread::spawn(move || -> Result<u64> {
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "5")
            .create()?;
        let mut payments = Payments::new(
            13,
            chrono::Utc::now().timestamp_millis(),
            PaymentsShape::default(),
        );
        let started = Instant::now();
        let mut produced = 0u64;
        while !stop.is_cancelled() {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
            if produced >= due {
                producer.poll(Duration::from_millis(2));
                continue;
            }
            payments.set_clock_ms(chrono::Utc::now().timestamp_millis());
            send(
                &producer,
                &topic,
                1 + (produced % 2) as i32,
                &payments.next_event(),
            );
            produced += 1;
        }
        producer.flush(Duration::from_secs(10))?;
        Ok(produced)
    })
}

/// Events in one burst, and the event-time (and send) spacing between them.
const BURST_EVENTS: usize = 12;
const BURST_SPACING: Duration = Duration::from_millis(20);

/// Produces `bursts` fraud-like bursts to partition 0 and times each alert of the live stream
/// from its event's send: until the alert was logged (its `raised_at`, millisecond wall clock)
/// and until it arrived on the stream.
async fn alert_latency(
    addr: SocketAddr,
    brokers: &str,
    topic: &str,
    bursts: usize,
) -> Result<(Stats, Stats)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/v1/fraud/alerts")
        .header("host", "braid")
        .header("accept", "text/event-stream")
        .body(http_body_util::Full::<bytes::Bytes>::default())?;
    let response = sender.send_request(request).await?;
    if response.status() != 200 {
        bail!("the alert stream answered {}", response.status());
    }
    let mut body = response.into_body();
    // Partition 0 carries only the bursts, and one idempotent producer sends them in order:
    // the n-th event sent has offset n.
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .set("enable.idempotence", "true")
        .create()?;
    // When each event was sent: on this clock, and on the wall clock alerts are stamped with.
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, i64)>();
    let to = topic.to_owned();
    // Burst 0 warms up (the layer takes partition 0, the stream starts): it is sent first, and
    // the timed bursts only once one of its alerts arrived.
    let (warm_tx, warm_rx) = std::sync::mpsc::channel::<()>();
    let mut warm_tx = Some(warm_tx);
    let producing = tokio::task::spawn_blocking(move || {
        for burst in 0..=bursts {
            if burst == 1 && warm_rx.recv_timeout(Duration::from_secs(30)).is_err() {
                return Err(rdkafka::error::KafkaError::Canceled);
            }
            for i in 0..BURST_EVENTS {
                let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let event = format!(
                    r#"{{"tx_id":"burst-{burst}-{i}","card_id":"bench-burst-{burst:05}","merchant_id":"m-b{i:03}","country":"US","amount":2500.00,"currency":"USD","ts":"{ts}"}}"#
                );
                let _ = sent_tx.send((Instant::now(), chrono::Utc::now().timestamp_millis()));
                send(&producer, &to, 0, event.as_bytes());
                producer.poll(Duration::ZERO);
                std::thread::sleep(BURST_SPACING);
            }
        }
        producer.flush(Duration::from_secs(10))
    });
    let mut sent: Vec<(Instant, i64)> = Vec::new();
    let (mut latencies, mut raised) = (Vec::new(), Vec::new());
    let mut text = String::new();
    let mut produced = false;
    let prefix = "id: ".to_owned();
    // After the last event is sent, wait this long for the last alerts.
    let grace = Duration::from_secs(5);
    let mut done_at: Option<Instant> = None;
    loop {
        let wait = done_at.map_or(Duration::from_secs(30), |at| {
            at.saturating_duration_since(Instant::now())
        });
        let frame = tokio::time::timeout(wait, body.frame()).await;
        let arrived = Instant::now();
        while let Ok(at) = sent_rx.try_recv() {
            sent.push(at);
        }
        if !produced && producing.is_finished() {
            produced = true;
            done_at = Some(Instant::now() + grace);
        }
        let Ok(frame) = frame else {
            if produced {
                break;
            }
            bail!("no alert arrived on the event stream for 30 s");
        };
        let Some(frame) = frame else {
            bail!("the alert stream ended");
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        text.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            let id = message
                .lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()));
            // Ids are `<topic>/<partition>/<offset>`: only the bursts' partition is timed.
            let Some(offset) = id.and_then(|id| id.strip_prefix(&format!("{topic}/0/"))) else {
                continue;
            };
            let offset: usize = offset.parse().context("an alert id with a bad offset")?;
            if offset < BURST_EVENTS {
                if let Some(warm) = warm_tx.take() {
                    let _ = warm.send(());
                }
                continue;
            }
            let (sent_at, sent_ms) = sent
                .get(offset)
                .with_context(|| format!("an alert for offset {offset}, not produced yet"))?;
            latencies.push(arrived.saturating_duration_since(*sent_at));
            let raised_ms = message
                .lines()
                .find_map(|line| line.strip_prefix("data: "))
                .and_then(|data| serde_json::from_str::<serde_json::Value>(data).ok())
                .and_then(|alert| alert["raised_at_ms"].as_i64())
                .context("an alert without raised_at_ms")?;
            raised.push(Duration::from_millis(
                u64::try_from(raised_ms - sent_ms).unwrap_or(0),
            ));
        }
    }
    producing
        .await?
        .context("producing the bursts (the warm-up burst must alert within 30 s)")?;
    if latencies.is_empty() {
        bail!("the bursts raised no alert: do the config's rules alert on a burst?");
    }
    Ok((Stats::of(raised, 0, None), Stats::of(latencies, 0, None)))
}
