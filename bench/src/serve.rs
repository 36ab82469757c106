//! `braid bench serve`: merged-query latency at a fixed request rate while events are ingested,
//! on-demand fraud scores when the config has `[fraud]`, and freshness (produce to visible in a
//! merged answer), on the embedded broker.
//!
//! Setup: a history of generated payments is archived and recomputed into a published batch
//! snapshot; then the speed layer and the API run while a generator keeps producing. Requests
//! are sent open-loop on a fixed schedule, each released at its own due time; latency is timed
//! from each actual send, and how far behind schedule the sends fell is reported beside it, so a
//! stalled server shows there.
//! With `pin`, the API's runtime runs alone on one core and every other thread (the load
//! generator, speed layer, broker, archiver and ingest) on another (thread affinity), so nothing
//! else takes the API's CPU.
//!
//! With `peers`, the in-process speed layer then stops (its last checkpoint hands its partitions
//! over), two speed instances in its consumer group take them up and answer on their own
//! listen addresses, and the point queries run again, at the same rate, through a serving
//! instance that gathers the speed cells from both over HTTP, as `braid run --layers serve`
//! with `serve.speed_peers` does.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{BenchError, Context as _, Result, bail};
use braid_batch::{Archiver, BatchRunner, Trigger};
use braid_serving::{Backends, Server};
use braid_shared::Config;
use braid_shared::generator::{Payments, PaymentsShape};
use braid_speed::SpeedLayer;
use http_body_util::BodyExt as _;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;

pub struct Options {
    /// Events archived into the batch snapshot before measuring.
    pub history: usize,
    /// Requests per second of the load.
    pub rate: u64,
    /// Seconds of load per query kind.
    pub seconds: u64,
    /// Events per second produced during the load.
    pub ingest_rate: u64,
    /// Freshness samples.
    pub freshness_samples: usize,
    /// The API on the first core, the load generator on the second.
    pub pin: bool,
    /// Point queries again through two speed peers over HTTP.
    pub peers: bool,
}

/// The cores the server and the load generator are pinned to, when pinning.
struct Pinning {
    server: core_affinity::CoreId,
    client: core_affinity::CoreId,
}

impl Pinning {
    fn new() -> Result<Self> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        match cores.as_slice() {
            [server, client, ..] => Ok(Self {
                server: *server,
                client: *client,
            }),
            _ => bail!(
                "--pin needs two cores this process may run on; it has {}",
                cores.len()
            ),
        }
    }
}

pub fn run(config: &Config, options: &Options) -> Result<String> {
    // Pinned, every thread but the API's runtime starts from this one and inherits its core:
    // the broker, archiver, speed layer, ingest and load generator share the second core, and
    // the API has the first to itself.
    let pinning = options.pin.then(Pinning::new).transpose()?;
    if let Some(pinning) = &pinning
        && !core_affinity::set_for_current(pinning.client)
    {
        bail!("cannot pin the bench to core {}", pinning.client.id);
    }
    let cluster = MockCluster::new(1)?;
    let source = config.sources.first().context("the config has no source")?;
    let topic = source.topic.clone();
    cluster.create_topic(&topic, PARTITIONS, 1)?;
    let temp = tempfile::tempdir()?;
    let mut config = config.clone();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.group_id = "braid-bench-serve".to_owned();
    config.storage.dir = temp.path().to_owned();
    config.serve.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.serve.max_concurrency = 10_000;
    // The history is archived in files of a fifth of a second, so the bench need not wait out
    // the flush interval before its batch run; the archiver measured alongside the queries
    // flushes as configured.
    let flush_interval = config.batch.flush_interval;
    config.batch.flush_interval = braid_shared::config::Period(Duration::from_millis(200));
    // Coverage is whole segments: small ones, so the snapshot covers most of the history.
    config.speed.segment_size = 10_000;
    config.kafka.prefer_short_fetch_wait();
    let storage: Arc<dyn braid_store::Storage> =
        Arc::new(braid_store::LocalStorage::new(temp.path()));
    // Batches of many messages: the embedded broker finds a fetch's offset by walking its
    // message sets, so thousands of one-message sets cost its consumers' fetches (up to 40% of
    // the CPU in the peers' phase); a real broker indexes offsets.
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("linger.ms", "50")
        .create()?;

    // History: an hour of payments, archived and published as a snapshot.
    let now = chrono::Utc::now().timestamp_millis();
    let spacing = (3_600_000 / options.history.max(1) as i64).max(1);
    let shape = PaymentsShape {
        spacing_ms: spacing,
        ..PaymentsShape::default()
    };
    let mut history = Payments::new(7, now - 3_600_000, shape);
    send_spread(&producer, &topic, PARTITIONS, &mut history, options.history)?;
    let cancel = CancellationToken::new();
    let archiving = cancel.child_token();
    let archiver = Archiver::start(&config, Arc::clone(&storage), archiving.clone())?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while archiver.handle().archived().values().sum::<i64>() < options.history as i64 {
        if Instant::now() > deadline {
            bail!("the archiver did not catch up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let record =
        BatchRunner::new(&config, Arc::clone(&storage))?.run(Trigger::Command, true, &cancel)?;
    if record.error.is_some() {
        bail!("batch run failed: {:?}", record.error);
    }
    archiving.cancel();
    archiver.join()?;
    config.batch.flush_interval = flush_interval;
    let archiver = Archiver::start(&config, Arc::clone(&storage), cancel.clone())?;
    // The in-process speed layer and its API stop before the speed peers take over.
    let in_process = cancel.child_token();
    let speed = SpeedLayer::start(&config, Arc::clone(&storage), in_process.clone())?;

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(2).enable_all();
    if let Some(pinning) = &pinning {
        let core = pinning.server;
        runtime.worker_threads(1).on_thread_start(move || {
            core_affinity::set_for_current(core);
        });
    }
    let runtime = runtime.build()?;
    let backends = Backends {
        speed: Some(Arc::new(speed.handle())),
        ..Backends::default()
    };
    let server = start_ready(&runtime, &config, backends, &in_process)?;
    let addr = server.addr();
    let mut local = Some((server, speed));

    // Live ingest in the background for the whole measurement.
    let ingest_stop = CancellationToken::new();
    let ingest = {
        let (stop, topic) = (ingest_stop.clone(), topic.clone());
        let brokers = cluster.bootstrap_servers();
        let rate = options.ingest_rate;
        std::thread::spawn(move || -> Result<u64> {
            // Batched as the history is; freshness is measured with its own producer.
            let producer: BaseProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", "50")
                .create()?;
            let plan = braid_kafka::GeneratorPlan {
                rate,
                count: None,
                late_share: 0.05,
                seed: 11,
                encoder: braid_shared::format::encode::Encoder::Json,
            };
            Ok(braid_kafka::generate(&producer, &topic, &plan, &stop).0)
        })
    };

    let mut report = String::new();
    let _ = writeln!(
        report,
        "braid bench serve: {} events in the batch snapshot, {} events/s ingested meanwhile, {} s per query kind",
        options.history, options.ingest_rate, options.seconds
    );
    if let Some(pinning) = &pinning {
        let _ = writeln!(
            report,
            "  pinned: the API's runtime alone on core {}; the load generator, speed layer, broker, archiver and ingest on core {}",
            pinning.server.id, pinning.client.id
        );
    }
    let cards: Vec<String> = (0..200).map(|i| format!("card-{i:06}")).collect();
    let point = |i: usize| {
        let path = format!(
            "/v1/views/card_spend?from=now-1h&to=now%2B1m&card_id={}",
            cards[i % cards.len()]
        );
        (path, None)
    };
    let range = |_: usize| {
        let path = "/v1/views/country_totals?from=now-2h&to=now%2B1m&step=1h".to_owned();
        (path, None)
    };
    // A payment of a card now, scored against every feature of the config's [fraud] (the
    // example's: 2 and 10 minutes and a 30-day profile of minutes).
    let score = |i: usize| {
        let event = serde_json::json!({
            "tx_id": format!("bench-{i}"),
            "card_id": cards[i % cards.len()],
            "merchant_id": "merchant-0001",
            "country": "DE",
            "amount": 120.5,
            "ts": chrono::Utc::now().timestamp_millis(),
        });
        ("/v1/fraud/score".to_owned(), Some(event.to_string()))
    };
    // Range queries merge sketches of every country and hour: a tenth of the rate; scores one
    // point read per feature view: a tenth too.
    let range_rate = (options.rate / 10).max(1);
    let mut kinds: Vec<(&str, &RequestOf<'_>, u64)> = vec![
        ("point query (one card, 1 h)", &point, options.rate),
        (
            "range query (8 countries x 3 hours, sketches)",
            &range,
            range_rate,
        ),
    ];
    if config.fraud.is_some() {
        kinds.push(("POST /v1/fraud/score (one card)", &score, range_rate));
    }
    let measure = |addr: SocketAddr, path: &RequestOf<'_>, rate: u64| match &pinning {
        None => runtime.block_on(load(addr, path, rate, options.seconds)),
        Some(pinning) => load_pinned(pinning.client, addr, path, rate, options.seconds),
    };
    let mut in_process_point = None;
    for (name, path, rate) in kinds {
        eprintln!("bench serve: measuring {name} at {rate} requests/s");
        let stats = measure(addr, path, rate)?;
        let _ = writeln!(report, "  {name}, {rate} requests/s: {stats}");
        in_process_point.get_or_insert((stats.p50, stats.p99));
    }
    eprintln!("bench serve: measuring freshness");
    let freshness = runtime.block_on(freshness(
        addr,
        &cluster.bootstrap_servers(),
        &topic,
        options.freshness_samples,
    ))?;
    let _ = writeln!(
        report,
        "  freshness (produce -> visible in a merged answer): {freshness}"
    );
    if options.peers {
        in_process.cancel();
        if let Some((server, speed)) = local.take() {
            runtime.block_on(server.join())?;
            speed.join()?;
        }
        let peers = SpeedPeers::start(&config, &cancel)?;
        let mut remote = config.clone();
        remote.serve.speed_peers = peers.addrs.iter().map(ToString::to_string).collect();
        let backends = Backends {
            speed: Some(Arc::new(braid_speed::RemoteSpeed::new(Arc::new(
                remote.clone(),
            )))),
            ..Backends::default()
        };
        let server = start_ready(&runtime, &remote, backends, &cancel)?;
        let first = point(0).0;
        runtime.block_on(peers.complete(server.addr(), &first))?;
        eprintln!("bench serve: measuring point queries through two speed peers over HTTP");
        let stats = measure(server.addr(), &point, options.rate)?;
        let _ = writeln!(
            report,
            "  point query (one card, 1 h) through 2 speed peers over HTTP, {} requests/s: {stats}",
            options.rate
        );
        if let Some((p50, p99)) = in_process_point {
            let added =
                |over: Duration, base: Duration| (over.as_secs_f64() - base.as_secs_f64()) * 1e3;
            let _ = writeln!(
                report,
                "  added by the speed peers over HTTP: p50 {:+.3} ms, p99 {:+.3} ms",
                added(stats.p50, p50),
                added(stats.p99, p99)
            );
        }
        cancel.cancel();
        runtime.block_on(server.join())?;
        peers.join()?;
    }
    ingest_stop.cancel();
    let ingested = ingest
        .join()
        .map_err(|_| BenchError::Setup("ingest thread panicked".to_owned()))??;
    let _ = writeln!(report, "  events ingested during the run: {ingested}");
    cancel.cancel();
    if let Some((server, speed)) = local.take() {
        runtime.block_on(server.join())?;
        speed.join()?;
    }
    archiver.join()?;
    Ok(report)
}

/// Messages behind the topic's end below which a speed peer counts as caught up.
const CAUGHT_UP: i64 = 1_000;

/// Two speed instances in one consumer group, each answering serving instances on its own
/// address, from a runtime of their own (as separate processes would), not the API's.
struct SpeedPeers {
    layers: Vec<SpeedLayer>,
    addrs: Vec<SocketAddr>,
    runtime: tokio::runtime::Runtime,
}

impl SpeedPeers {
    fn start(config: &Config, cancel: &CancellationToken) -> Result<Self> {
        // A group of their own: the in-process layer's member is not waited out (the embedded
        // broker would drop the events behind them meanwhile); they restore from its
        // checkpoints all the same.
        let mut config = config.clone();
        config.kafka.group_id = "braid-bench-serve-peers".to_owned();
        let config = &config;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("braid-bench-peer")
            .enable_all()
            .build()?;
        let (mut layers, mut addrs) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let storage = braid_store::open(&config.storage)?;
            let layer = SpeedLayer::start(config, storage, cancel.clone())?;
            let reader = layer.handle();
            let listen = SocketAddr::from(([127, 0, 0, 1], 0));
            let (addr, _task) = runtime.block_on(braid_speed::serve_endpoint(
                listen,
                config,
                reader,
                cancel.clone(),
            ))?;
            layers.push(layer);
            addrs.push(addr);
        }
        Ok(Self {
            layers,
            addrs,
            runtime,
        })
    }

    /// Waits until both instances hold partitions and have caught up with the topic, and an
    /// answer through them is complete.
    async fn complete(&self, addr: SocketAddr, path: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let shared = self.layers.iter().all(|layer| {
                let handle = layer.handle();
                let (held, lag) = (handle.positions(), handle.lag());
                !held.is_empty()
                    && lag.len() == held.len()
                    && lag.values().all(|&behind| behind < CAUGHT_UP)
            });
            let (status, body) = fetch(addr, path).await?;
            if shared && status == 200 && body["provenance"]["complete"] == true {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the speed peers never answered completely: {status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn join(self) -> Result<()> {
        for layer in self.layers {
            layer.join()?;
        }
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        Ok(())
    }
}

/// The API over `backends`, once `/readyz` says the speed layer holds every partition.
pub(crate) fn start_ready(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    backends: Backends,
    cancel: &CancellationToken,
) -> Result<Server> {
    let storage = braid_store::open(&config.storage)?;
    let server = runtime.block_on(async {
        let listener = braid_serving::bind(config.serve.listen).await?;
        let config = Arc::new(config.clone());
        Server::start(config, storage, backends, listener, cancel.clone()).await
    })?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while runtime.block_on(fetch(server.addr(), "/readyz"))?.0 != 200 {
        if Instant::now() > deadline {
            bail!("the server never became ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

/// Sends the next `n` events of `payments` round-robin over `partitions`, and waits for all.
pub(crate) fn send_spread(
    producer: &BaseProducer,
    topic: &str,
    partitions: i32,
    payments: &mut Payments,
    n: usize,
) -> Result<()> {
    for i in 0..n {
        let partition = i32::try_from(i % partitions.max(1) as usize).unwrap_or(0);
        send(producer, topic, partition, &payments.next_event());
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

pub(crate) fn send(producer: &BaseProducer, topic: &str, partition: i32, payload: &[u8]) {
    send_record(
        producer,
        BaseRecord::<(), [u8]>::to(topic)
            .partition(partition)
            .payload(payload),
    );
}

/// Sends `record`, waiting for room in the producer's queue while it is full.
pub(crate) fn send_record<K: rdkafka::message::ToBytes + ?Sized>(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, K, [u8]>,
) {
    while let Err((_, back)) = producer.send(record) {
        producer.poll(Duration::from_millis(5));
        record = back;
    }
}

/// The `i`-th request of a load: its path and, for a POST, its body.
pub(crate) type RequestOf<'a> = dyn Fn(usize) -> (String, Option<String>) + Sync + 'a;

/// One request on a fresh connection (setup and freshness polling).
async fn fetch(addr: SocketAddr, path: &str) -> Result<(u16, serde_json::Value)> {
    let mut connection = Connection::open(addr).await?;
    connection.get(path).await
}

pub(crate) struct Connection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl Connection {
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    pub(crate) async fn get(&mut self, path: &str) -> Result<(u16, serde_json::Value)> {
        self.send(path, None).await
    }

    pub(crate) async fn post(
        &mut self,
        path: &str,
        body: &str,
    ) -> Result<(u16, serde_json::Value)> {
        self.send(path, Some(body)).await
    }

    /// GET `path`, or POST `body` to it; the answer parsed as JSON.
    async fn send(&mut self, path: &str, body: Option<&str>) -> Result<(u16, serde_json::Value)> {
        let (status, body) = self.exchange(path, body).await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
    }

    /// GET `path`, or POST `body` to it; the answer's status and bytes (the load generator
    /// reads the whole answer but spends no time parsing it).
    async fn exchange(&mut self, path: &str, body: Option<&str>) -> Result<(u16, bytes::Bytes)> {
        self.sender.ready().await?;
        let request = match body {
            None => Request::get(path)
                .header("host", "braid")
                .body(http_body_util::Full::default())?,
            Some(body) => Request::post(path)
                .header("host", "braid")
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    body.to_owned(),
                )))?,
        };
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }
}

/// Latency percentiles of requests sent at `rate` per second for `seconds`, timed from each
/// send, with how far behind schedule the sends fell.
///
/// A pacer thread releases each request at its due time, each on the next of 32 connections in
/// turn. It sleeps with the kernel's timer slack at its minimum, so sends are spread evenly:
/// tokio's timer wakes on millisecond ticks, which at 10,000 requests/s would release ten
/// requests at once every millisecond and time the queue they form rather than the server.
pub(crate) async fn load(
    addr: SocketAddr,
    path: &RequestOf<'_>,
    rate: u64,
    seconds: u64,
) -> Result<Stats> {
    const CONNECTIONS: usize = 32;
    let total = (rate * seconds) as usize;
    let rate = rate.max(1) as f64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut releases = Vec::with_capacity(CONNECTIONS);
    for c in 0..CONNECTIONS {
        let paths: Vec<(String, Option<String>)> =
            (c..total).step_by(CONNECTIONS).map(path).collect();
        let mut connection = Connection::open(addr).await?;
        let (release, mut released) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        releases.push(release);
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(paths.len());
            let mut errors = 0usize;
            let mut behind = Vec::with_capacity(paths.len());
            for (path, body) in paths {
                let Some(due) = released.recv().await else {
                    break;
                };
                let sent = Instant::now();
                behind.push(sent.saturating_duration_since(due));
                match connection.exchange(&path, body.as_deref()).await {
                    Ok((200, _)) => latencies.push(sent.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, behind, errors)
        });
    }
    let start = Instant::now() + Duration::from_millis(50);
    // Spawned from this thread, the pacer runs on its core when pinned.
    let pacer = std::thread::spawn(move || {
        // 1 ns: sleeps end when due rather than up to the default 50 us later.
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if releases[i % CONNECTIONS].send(due).is_err() {
                break;
            }
        }
    });
    let mut latencies = Vec::with_capacity(total);
    let mut behind = Vec::with_capacity(total);
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (mut l, mut b, e) = done?;
        latencies.append(&mut l);
        behind.append(&mut b);
        errors += e;
    }
    pacer
        .join()
        .map_err(|_| BenchError::Setup("the load generator's pacer panicked".to_owned()))?;
    let achieved = latencies.len() as f64 / start.elapsed().as_secs_f64();
    let mut stats = Stats::of(latencies, errors, Some(achieved));
    behind.sort_unstable();
    stats.behind_p99 = behind.get(behind.len() * 99 / 100).copied();
    Ok(stats)
}

/// [`load`] from a thread of its own on `core`, with a runtime of its own.
fn load_pinned(
    core: core_affinity::CoreId,
    addr: SocketAddr,
    path: &RequestOf<'_>,
    rate: u64,
    seconds: u64,
) -> Result<Stats> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if !core_affinity::set_for_current(core) {
                    bail!("cannot pin the load generator to core {}", core.id);
                }
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(load(addr, path, rate, seconds))
            })
            .join()
            .map_err(|_| BenchError::Setup("the load generator panicked".to_owned()))?
    })
}

/// Produces one marked event at a time and polls a merged answer until it shows.
async fn freshness(addr: SocketAddr, brokers: &str, topic: &str, samples: usize) -> Result<Stats> {
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()?;
    let mut connection = Connection::open(addr).await?;
    let mut latencies = Vec::with_capacity(samples);
    let mut errors = 0;
    for i in 0..samples {
        let card = format!("fresh-{i}");
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let event = format!(
            r#"{{"tx_id":"f{i}","card_id":"{card}","merchant_id":"m-1","country":"US","amount":1.0,"currency":"USD","ts":"{ts}"}}"#
        );
        let path = format!("/v1/views/card_spend?from=now-1h&to=now%2B1h&card_id={card}");
        let sent = Instant::now();
        send(
            &producer,
            topic,
            (i % PARTITIONS as usize) as i32,
            event.as_bytes(),
        );
        producer.poll(Duration::ZERO);
        let deadline = sent + Duration::from_secs(10);
        loop {
            let (_, answer) = connection.get(&path).await?;
            if answer["rows"]
                .as_array()
                .is_some_and(|rows| !rows.is_empty())
            {
                latencies.push(sent.elapsed());
                break;
            }
            if Instant::now() > deadline {
                errors += 1;
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    Ok(Stats::of(latencies, errors, None))
}

pub(crate) struct Stats {
    count: usize,
    errors: usize,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    achieved: Option<f64>,
    /// How late the 99th percentile send started against its schedule.
    behind_p99: Option<Duration>,
}

impl Stats {
    pub(crate) fn of(mut latencies: Vec<Duration>, errors: usize, achieved: Option<f64>) -> Self {
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Self {
            count: latencies.len(),
            errors,
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: latencies.last().copied().unwrap_or_default(),
            achieved,
            behind_p99: None,
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.1} ms over {} ({} failed)",
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.p999.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.count,
            self.errors
        )?;
        if let Some(rate) = self.achieved {
            write!(f, ", {rate:.0} requests/s achieved")?;
        }
        if let Some(behind) = self.behind_p99 {
            write!(
                f,
                ", sends p99 {:.1} ms behind schedule",
                behind.as_secs_f64() * 1e3
            )?;
        }
        Ok(())
    }
}
