//! Running one scenario: the mock cluster, the Braid processes, the producer that records
//! what the broker acknowledged, the checker that keeps asking the serving processes, the
//! fault schedule, and at the end the liveness wait and the oracle's verdict on every answer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_shared::Config;
use braid_testkit::oracle::{
    Asked, CARD_TOTALS, CARD_TRENDS, COUNTRY_HOURS, ONE_CARD, Produced, Shape,
};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientContext, Message as _};
use serde_json::Value as Json;

use crate::TortureError;
use crate::scenario::{Api, Fault, Role, Scenario, Topology};

/// The queries the checker asks every serving process, again and again: views (one over
/// nested fields) and trends.
pub const ASKED: [Asked; 5] = [
    Asked::View(COUNTRY_HOURS),
    Asked::View(CARD_TOTALS),
    Asked::View(ONE_CARD),
    Asked::Trends(CARD_TRENDS),
    Asked::View(TIER_HOURS),
];

/// A view over nested fields (`merchant.risk.tier`, `items[0].sku`), every tier per hour.
const TIER_HOURS: Shape = Shape {
    view: "tier_hour",
    params: "",
    keep: None,
    step_ms: Some(3_600_000),
    filters: &[],
};

/// [`TIER_HOURS`]'s view.
const TIER_VIEW: &str = r#"
[[view]]
name = "tier_hour"
source = "payments"
group_by = ["merchant.risk.tier"]
granularity = "1h"
[view.metrics]
tx = "count"
merchants = "approx_distinct(merchant.id)"
first_sku = "top_k(items[0].sku, 3)"
"#;

/// How a scenario runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `braid` binary started for every process.
    pub braid: PathBuf,
    /// Scenario folders go below it.
    pub dir: PathBuf,
    /// Keep a passing scenario's folder (a failing one's is always kept).
    pub keep: bool,
    /// Shares of seeds run on a tansu broker, on moto's S3 server.
    pub shares: crate::scenario::Shares,
}

/// A restart after a kill -9, measured from outside.
#[derive(Debug, Clone, Copy, Default)]
pub struct Restart {
    /// In a kills-only scenario (no other fault around it).
    pub isolated: bool,
    /// The scenario's consumer session timeout.
    pub session_timeout_ms: u64,
    /// From the new process's start to its first successful readiness answer.
    pub ready: Option<Duration>,
    /// From the new process's start until every serving process answered complete with at
    /// least every event acknowledged before the start.
    pub caught_up: Option<Duration>,
}

/// What one scenario did and found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub seed: u64,
    /// Answers compared with the oracle.
    pub answers: usize,
    /// Rows (cells of an answer) compared.
    pub rows: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Wrong answers, liveness failures and broken processes: empty when the scenario passed.
    pub failures: Vec<String>,
    pub restarts: Vec<Restart>,
    /// Processes that exited by themselves (restarted as a supervisor would).
    pub crashes: usize,
    /// Why each did: the last error its log names, numbers blanked.
    pub crash_causes: Vec<String>,
    /// From the last fault's end to every answer complete and caught up.
    pub recovery: Option<Duration>,
    pub elapsed: Duration,
    /// The scenario's folder, when kept.
    pub kept: Option<PathBuf>,
}

/// The scenario's broker: librdkafka's mock cluster in this process, or a tansu process.
struct Broker {
    bootstrap: String,
    mock: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    tansu: Option<Child>,
}

impl Broker {
    fn start(scenario: &Scenario, dir: &Path, topic: &str) -> Result<Self, TortureError> {
        if !scenario.on_tansu {
            let cluster = MockCluster::new(scenario.brokers).map_err(TortureError::Broker)?;
            cluster
                .create_topic(topic, scenario.partitions, scenario.brokers.min(3))
                .map_err(TortureError::Broker)?;
            return Ok(Self {
                bootstrap: cluster.bootstrap_servers(),
                mock: Some(cluster),
                tansu: None,
            });
        }
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log_path = dir.join("tansu.log");
        let log = std::fs::File::create(&log_path).map_err(|e| TortureError::io(&log_path, e))?;
        // tansu 0.6 mangles absolute SQLite paths: its database lives in its working dir.
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                TortureError::NotReady(format!(
                    "cannot start tansu ({e}); scripts/install-deps.sh --tansu installs it"
                ))
            })?;
        let broker = Self {
            bootstrap: format!("127.0.0.1:{port}"),
            mock: None,
            tansu: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(TortureError::NotReady(format!(
                    "tansu did not listen on {port}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        braid_kafka::create_topic(
            &broker.bootstrap,
            topic,
            scenario.partitions,
            Duration::from_secs(10),
        )
        .map_err(TortureError::NotReady)?;
        Ok(broker)
    }

    /// Stalls broker `id` of the mock cluster: every answer it gives waits `stall`, so its
    /// clients see a broker that stopped answering. (Taking a mock broker down and up again
    /// is not safe: the mock cluster aborts its whole process when the broker cannot listen on
    /// its port again, which another socket may have taken meanwhile.)
    fn stall(&self, id: i32, stall: Duration) -> Result<(), TortureError> {
        self.mock()?
            .broker_round_trip_time(id, stall)
            .map_err(TortureError::Broker)
    }

    /// The mock cluster, for broker faults (never drawn for tansu).
    fn mock(
        &self,
    ) -> Result<&MockCluster<'static, rdkafka::producer::DefaultProducerContext>, TortureError>
    {
        self.mock
            .as_ref()
            .ok_or_else(|| TortureError::Config("a broker fault on tansu".to_owned()))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut tansu) = self.tansu.take() {
            let _ = tansu.kill();
            let _ = tansu.wait();
            let port = self
                .bootstrap
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok());
            release_ports(port);
        }
    }
}

/// One process of the scenario.
struct Process {
    role: Role,
    config: PathBuf,
    log: PathBuf,
    layers: &'static str,
    /// Its HTTP port: `serve.listen`, or `speed.listen` for a speed-only process.
    port: Option<u16>,
    child: Option<Child>,
    /// Stopped on purpose (killed, left): not restarted by the supervisor.
    down_on_purpose: bool,
    /// Stopped on purpose and gone for good (an extra instance that left).
    retired: bool,
}

/// An action at a moment: a fault's start or end.
#[derive(Debug)]
enum Action {
    Fault(Fault),
    Start { role: Role, measured: bool },
    Cont(Role),
    BrokerUp(i32),
    RegistryUp,
    StorageOff,
    Retire(Role),
}

/// When a restarted process first answered ready, once it has.
type ReadyAt = Arc<Mutex<Option<Duration>>>;

/// What the checker saw.
struct Observation {
    at: Instant,
    role: Role,
    /// Its index in [`ASKED`].
    asked: usize,
    status: u16,
    body: Json,
}

/// Acknowledged offsets, by message index.
struct Deliveries {
    acked: Mutex<Vec<Option<(i32, i64)>>>,
}

/// The producer's context: records each delivery report.
struct Recorder(Arc<Deliveries>);

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Self::DeliveryOpaque) {
        if let (Ok(message), Ok(mut acked)) = (result, self.0.acked.lock()) {
            acked[*index] = Some((message.partition(), message.offset()));
        }
    }
}

impl Deliveries {
    /// Messages acknowledged per partition, counted up to the first one not yet acknowledged.
    fn counts(&self, partitions: i32) -> Vec<i64> {
        let acked = self.acked.lock().map(|a| a.clone()).unwrap_or_default();
        let mut seen: Vec<Vec<i64>> = vec![Vec::new(); partitions as usize];
        for (p, offset) in acked.into_iter().flatten() {
            seen[p as usize].push(offset);
        }
        seen.into_iter()
            .map(|mut offsets| {
                offsets.sort_unstable();
                offsets
                    .iter()
                    .enumerate()
                    .take_while(|(i, o)| **o == *i as i64)
                    .count() as i64
            })
            .collect()
    }
}

/// Runs `scenario`: its outcome, failures included. An error means the harness itself could
/// not run (no broker, no binary), never a wrong answer.
pub fn run(scenario: &Scenario, options: &Options) -> Result<Outcome, TortureError> {
    let started = Instant::now();
    let dir = options.dir.join(format!("seed-{}", scenario.seed));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| TortureError::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| TortureError::io(&dir, e))?;
    let topic = format!("torture-{}", scenario.seed);
    let broker = Broker::start(scenario, &dir, &topic)?;
    let bootstrap = broker.bootstrap.clone();
    let control = dir.join("storage-faults");
    let mut env = vec![(
        braid_store::storage::faults::FAULTS_ENV.to_owned(),
        control.display().to_string(),
    )];
    // Declared before the processes: stopped after them.
    let _moto = if scenario.on_moto {
        let moto = braid_testkit::moto::Moto::try_start().map_err(TortureError::NotReady)?;
        moto.try_create_bucket(MOTO_BUCKET)
            .map_err(TortureError::NotReady)?;
        env.extend(moto.env());
        Some(moto)
    } else {
        None
    };
    // The schema registry of a registry-format scenario, and the workload written in it.
    let registry = scenario
        .registry
        .map(|_| braid_testkit::registry::TestRegistry::start());
    let messages: Vec<crate::scenario::Message> = match (scenario.registry, &registry) {
        (Some((format, switch_at)), Some(registry)) => {
            let payloads: Vec<Vec<u8>> = scenario
                .messages
                .iter()
                .map(|m| m.payload.clone())
                .collect();
            crate::formats::encode(registry, format, &topic, &payloads, switch_at)?
                .into_iter()
                .zip(&scenario.messages)
                .map(|(payload, m)| crate::scenario::Message {
                    partition: m.partition,
                    payload,
                })
                .collect()
        }
        _ => scenario.messages.clone(),
    };
    let mut world = World::new(
        scenario,
        &dir,
        &bootstrap,
        &topic,
        options,
        registry.as_ref(),
    )?;
    world.env = env;
    let mut outcome = Outcome {
        seed: scenario.seed,
        ..Outcome::default()
    };
    for role in scenario.roles() {
        world.start(role)?;
    }
    world.wait_ready(Duration::from_secs(60))?;

    // The producer: every message in order, chunk by chunk, its acknowledged offset recorded.
    let deliveries = Arc::new(Deliveries {
        acked: Mutex::new(vec![None; scenario.messages.len()]),
    });
    let producing = {
        let producer: BaseProducer<Recorder> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "5")
            // tansu 0.6 mishandles idempotent producers; it gets no broker faults either.
            .set(
                "enable.idempotence",
                if scenario.on_tansu { "false" } else { "true" },
            )
            .set("message.timeout.ms", "120000")
            // A request to a broker taken down is given up after 10 s, not 60.
            .set("socket.timeout.ms", "10000")
            .create_with_context(Recorder(Arc::clone(&deliveries)))
            .map_err(TortureError::Broker)?;
        let (messages, topic, chunk, pause) = (
            messages.clone(),
            topic.clone(),
            scenario.chunk,
            scenario.pause,
        );
        std::thread::spawn(move || {
            for (index, message) in messages.iter().enumerate() {
                let mut record =
                    BaseRecord::<(), [u8], Box<usize>>::with_opaque_to(&topic, Box::new(index))
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
                if (index + 1) % chunk == 0 {
                    std::thread::sleep(pause);
                }
            }
            producer.flush(Duration::from_secs(120))
        })
    };

    // The checker: every shape from every serving process, all the time.
    let observations: Arc<Mutex<Vec<Observation>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (observations, stop) = (Arc::clone(&observations), Arc::clone(&stop));
        let bases: Vec<(Role, String)> = world.serving_bases();
        std::thread::spawn(move || {
            let agent = agent(Duration::from_secs(2));
            while !stop.load(Ordering::Relaxed) {
                for (role, base) in &bases {
                    for (i, asked) in ASKED.iter().enumerate() {
                        let (status, body) = get(&agent, &asked.url(base));
                        if let Ok(mut seen) = observations.lock() {
                            seen.push(Observation {
                                at: Instant::now(),
                                role: *role,
                                asked: i,
                                status,
                                body,
                            });
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // The schedule, with every fault's end as an action of its own.
    let stream = Instant::now();
    world.started = stream;
    let mut pending: Vec<(Instant, Action)> = scenario
        .schedule
        .iter()
        .map(|s| (stream + s.at, Action::Fault(s.fault.clone())))
        .collect();
    let mut restarts: Vec<(Instant, Vec<i64>, ReadyAt)> = Vec::new();
    let mut storage_faulty_until = None::<Instant>;
    let mut batch_runs: Vec<(String, Child, Instant)> = Vec::new();
    let mut failed_runs = Vec::new();
    let mut produced_noted = false;
    let mut sharded_runs = 0;
    let mut registry_outages = 0usize;
    loop {
        pending.sort_by_key(|(at, _)| *at);
        let now = Instant::now();
        while pending.first().is_some_and(|(at, _)| *at <= now) {
            let (_, action) = pending.remove(0);
            match action {
                Action::Fault(fault) => {
                    *outcome.faults.entry(fault.kind()).or_default() += 1;
                    world.note(&format!("fault: {fault:?}"));
                    match fault {
                        Fault::Kill { role, down } => {
                            if world.kill(role) {
                                pending.push((
                                    now + down,
                                    Action::Start {
                                        role,
                                        measured: true,
                                    },
                                ));
                            }
                        }
                        Fault::Pause { role, paused } => {
                            if world.signal(role, "STOP") {
                                pending.push((now + paused, Action::Cont(role)));
                            }
                        }
                        Fault::RegistryDown { down } => {
                            if let Some(registry) = &registry {
                                registry_outages += 1;
                                registry.set_down(true);
                                pending.push((now + down, Action::RegistryUp));
                            }
                        }
                        Fault::BrokerDown { broker: id, down } => {
                            broker.stall(id, down)?;
                            pending.push((now + down, Action::BrokerUp(id)));
                        }
                        Fault::RequestErrors { api, count } => {
                            let (key, error) = request_error(api);
                            broker.mock()?.request_errors(key, &vec![error; count]);
                        }
                        Fault::LeaderMove {
                            partition,
                            broker: id,
                        } => {
                            broker
                                .mock()?
                                .partition_leader(&topic, partition, Some(id))
                                .map_err(TortureError::Broker)?;
                        }
                        Fault::Join { stays } => {
                            let role = world.extra_speed();
                            world.start(role)?;
                            pending.push((now + stays, Action::Retire(role)));
                        }
                        Fault::Leave { role, gone } => {
                            if world.terminate(role) {
                                pending.push((
                                    now + gone,
                                    Action::Start {
                                        role,
                                        measured: false,
                                    },
                                ));
                            }
                        }
                        Fault::BatchRun => {
                            batch_runs.push(world.batch_run(None)?);
                        }
                        Fault::ShardedRun { shards } => {
                            sharded_runs += 1;
                            let name = format!("sharded-{sharded_runs}");
                            for shard in 0..shards {
                                batch_runs.push(world.batch_run(Some((&name, shards, shard)))?);
                            }
                        }
                        Fault::Storage {
                            fail_writes,
                            lose_acks,
                            slow_ms,
                            lasts,
                        } => {
                            let faults = braid_store::storage::faults::Faults {
                                fail_writes,
                                lose_acks,
                                slow_ms,
                            };
                            std::fs::write(&control, faults.render())
                                .map_err(|e| TortureError::io(&control, e))?;
                            storage_faulty_until = Some(now + lasts + Duration::from_secs(1));
                            pending.push((now + lasts, Action::StorageOff));
                        }
                    }
                }
                Action::Start { role, measured } => {
                    world.start(role)?;
                    if measured {
                        let ready = Arc::new(Mutex::new(None));
                        world.measure_ready(role, Arc::clone(&ready));
                        restarts.push((
                            Instant::now(),
                            deliveries.counts(scenario.partitions),
                            ready,
                        ));
                    }
                }
                Action::Cont(role) => {
                    world.signal(role, "CONT");
                }
                Action::BrokerUp(id) => {
                    broker.stall(id, Duration::ZERO)?;
                }
                Action::RegistryUp => {
                    // Outages overlap: the registry answers again when the last one ends.
                    registry_outages -= 1;
                    if let (Some(registry), 0) = (&registry, registry_outages) {
                        registry.set_down(false);
                    }
                }
                Action::StorageOff => {
                    std::fs::write(&control, "").map_err(|e| TortureError::io(&control, e))?;
                }
                Action::Retire(role) => {
                    world.retire(role);
                }
            }
        }
        // The supervisor: a process that exited by itself starts again.
        let causes = world.restart_crashed()?;
        outcome.crashes += causes.len();
        outcome.crash_causes.extend(causes);
        // Batch runs that failed with no storage fault to blame are failures.
        batch_runs.retain_mut(|(name, child, since)| match child.try_wait() {
            Ok(Some(status)) => {
                let blamed = storage_faulty_until.is_some_and(|until| *since <= until);
                // A sharded run that another run overtook is refused by design.
                let log = world.log_tail(&world.dir.join(format!("{name}.log")), 1500);
                // So is a run while another holds the run lease (one run at a time), and a sharded
                // run another sharded run replaced before it was done.
                let overtaken = log.contains("another run published a snapshot after run")
                    || log.contains("holds the run lease")
                    || log.contains("abandoned: ");
                if !status.success() && !blamed && !overtaken {
                    failed_runs.push(format!(
                        "batch run {name} failed with {status} and no storage fault to blame: {log}"
                    ));
                }
                false
            }
            _ => true,
        });
        if producing.is_finished() && !produced_noted {
            produced_noted = true;
            world.note("every message produced and acknowledged");
        }
        if pending.is_empty() && producing.is_finished() && batch_runs.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let flushed = producing.join();
    if !matches!(flushed, Ok(Ok(()))) {
        outcome
            .failures
            .push("the producer could not deliver every message within 120 s".to_owned());
    }
    outcome.failures.extend(failed_runs);

    // The oracle: what the broker acknowledged, in offset order.
    let acked = deliveries
        .acked
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    let mut partitions: Vec<BTreeMap<i64, Vec<u8>>> =
        vec![BTreeMap::new(); scenario.partitions as usize];
    for (message, ack) in messages.iter().zip(&acked) {
        if let Some((p, offset)) = ack {
            partitions[*p as usize].insert(*offset, message.payload.clone());
        }
    }
    let mut bytes: Vec<Vec<Vec<u8>>> = Vec::new();
    for (p, messages) in partitions.into_iter().enumerate() {
        let contiguous = messages.keys().enumerate().all(|(i, o)| *o == i as i64);
        if !contiguous {
            stop.store(true, Ordering::Relaxed);
            let _ = checker.join();
            world.stop_all();
            return Err(TortureError::Unjudgeable(format!(
                "partition {p}'s acknowledged offsets have gaps: the broker holds messages it \
                 never acknowledged, so the oracle cannot tell what it holds"
            )));
        }
        bytes.push(messages.into_values().collect());
    }
    let config = world.config()?;
    let produced = Produced::new(&config, "payments", &bytes);

    // Liveness: every answer complete and caught up with everything acknowledged.
    let quiet = Instant::now();
    let delivered = deliveries.counts(scenario.partitions);
    // With consumer groups, each injected group error (join, sync, heartbeat) sends the
    // members into another round of rebalancing, each as long as a session on the mock
    // cluster: their time is added. Partition leases never ask the group coordinator.
    let group_errors: usize = scenario
        .schedule
        .iter()
        .filter(|_| scenario.consumer_group)
        .map(|s| match s.fault {
            Fault::RequestErrors {
                api: Api::JoinGroup | Api::SyncGroup | Api::Heartbeat,
                count,
            } => count,
            _ => 0,
        })
        .sum();
    let session = Duration::from_millis(scenario.session_timeout_ms);
    let deadline = quiet + Duration::from_secs(30) + session * (2 + group_errors as u32);
    let agent = agent(Duration::from_secs(2));
    let mut last: BTreeMap<(Role, usize), Json> = BTreeMap::new();
    let (_, first_base) = world.serving_bases()[0].clone();
    let quiet_checks = crate::audit::Quiet {
        agent: &agent,
        base: &first_base,
        config: &config,
        topic: &topic,
        produced: &produced,
    };
    let mut archived = false;
    loop {
        let causes = world.restart_crashed()?;
        outcome.crashes += causes.len();
        outcome.crash_causes.extend(causes);
        let mut caught_up = true;
        for (role, base) in world.serving_bases() {
            for (i, asked) in ASKED.iter().enumerate() {
                let (_, answer) = get(&agent, &asked.url(&base));
                caught_up &= covers(&answer, &topic, &delivered, true);
                last.insert((role, i), answer);
            }
        }
        // The archive too: every valid acknowledged event, once.
        if caught_up && !archived {
            match quiet_checks.archive_caught_up() {
                Ok(done) => archived = done,
                Err(failure) => {
                    outcome.failures.push(failure);
                    break;
                }
            }
            caught_up = archived;
        }
        if caught_up {
            outcome.recovery = Some(quiet.elapsed());
            let earlier = earlier_answers(&observations, &world.serving_bases());
            let audit = quiet_checks.audit(&earlier);
            outcome.answers += audit.answers;
            outcome.failures.extend(audit.failures);
            break;
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = last
                .iter()
                .map(|((role, asked), answer)| {
                    format!(
                        "  {role} {}: {}",
                        ASKED[*asked].name(),
                        answer["provenance"]
                    )
                })
                .collect();
            outcome.failures.push(format!(
                "liveness: {:?} after the faults ended, not every answer was complete with \
                 every acknowledged event ({delivered:?}){}:\n{}",
                deadline - quiet,
                if archived {
                    ""
                } else {
                    ", or the archive had not caught up"
                },
                seen.join("\n")
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = checker.join();

    // Stop everything; a process that does not stop cleanly is a failure.
    for failure in world.stop_all() {
        outcome.failures.push(failure);
    }

    let observations =
        std::mem::take(&mut *observations.lock().map_err(|_| TortureError::Poisoned)?);
    let mut wrong = 0;
    for seen in &observations {
        match seen.status {
            200 => {
                outcome.answers += 1;
                let rows = seen.body["rows"]
                    .as_array()
                    .or(seen.body["trends"].as_array());
                outcome.rows += rows.map_or(0, Vec::len);
                let provenance = &seen.body["provenance"];
                let named_missing = provenance["complete"] == true
                    || provenance["missing"]
                        .as_array()
                        .is_some_and(|m| !m.is_empty());
                let verdict = if named_missing {
                    ASKED[seen.asked].check(&config, &topic, &produced, &seen.body)
                } else {
                    Err(format!(
                        "an incomplete answer names no missing partition: {provenance}"
                    ))
                };
                if let Err(difference) = verdict {
                    wrong += 1;
                    if wrong <= 3 {
                        outcome.failures.push(format!(
                            "wrong answer from {} at {:.2}s: {difference}\n  provenance: {provenance}",
                            seen.role,
                            (seen.at - started).as_secs_f64()
                        ));
                    }
                }
            }
            // Nothing answered (killed, paused, starting), or not ready yet.
            0 | 503 => {}
            status => {
                wrong += 1;
                if wrong <= 3 {
                    outcome.failures.push(format!(
                        "{} answered {status} at {:.2}s: {}",
                        seen.role,
                        (seen.at - started).as_secs_f64(),
                        seen.body
                    ));
                }
            }
        }
    }
    if wrong > 3 {
        outcome
            .failures
            .push(format!("{} more wrong answers", wrong - 3));
    }

    // Restarts: ready as measured, caught up from the checker's observations.
    for (spawned, counts, ready) in restarts {
        let caught_up = world
            .serving_bases()
            .iter()
            .map(|(role, _)| {
                observations
                    .iter()
                    .filter(|o| o.role == *role && o.at >= spawned && o.status == 200)
                    .find(|o| covers(&o.body, &topic, &counts, false))
                    .map(|o| o.at - spawned)
            })
            .try_fold(Duration::ZERO, |worst, d| d.map(|d| worst.max(d)));
        outcome.restarts.push(Restart {
            isolated: scenario.kills_only,
            session_timeout_ms: scenario.session_timeout_ms,
            ready: ready.lock().ok().and_then(|r| *r),
            caught_up,
        });
    }
    outcome.elapsed = started.elapsed();
    if outcome.failures.is_empty() && !options.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        outcome.kept = Some(dir);
    }
    Ok(outcome)
}

/// Up to three complete answers of the first serving process, spread over the run, with
/// the path that asked them (for as-of replays).
fn earlier_answers(
    observations: &Mutex<Vec<Observation>>,
    bases: &[(Role, String)],
) -> Vec<(String, Json)> {
    let Ok(seen) = observations.lock() else {
        return Vec::new();
    };
    let Some((first, _)) = bases.first() else {
        return Vec::new();
    };
    let complete: Vec<&Observation> = seen
        .iter()
        .filter(|o| o.role == *first && o.status == 200 && o.body["provenance"]["complete"] == true)
        .filter(|o| matches!(ASKED[o.asked], Asked::View(_)))
        .collect();
    let step = (complete.len() / 3).max(1);
    complete
        .iter()
        .step_by(step)
        .take(3)
        .map(|o| (ASKED[o.asked].url(""), o.body.clone()))
        .collect()
}

/// The last error a log names, its numbers and hex blanked, so that causes can be counted.
fn crash_cause(log: &str) -> String {
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .or_else(|| log.lines().rev().find(|l| l.contains(" ERROR ")))
        .unwrap_or("no error logged");
    let message = line.split_once(" ERROR ").map_or(line, |(_, m)| m);
    // Each run of letters and digits: a number or a hex token (one with a digit) becomes N;
    // a word's digits (`vm-12`, `p2`) too.
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let hex = word.chars().all(|c| c.is_ascii_hexdigit());
        if hex && word.chars().any(|c| c.is_ascii_digit()) {
            out.push('N');
        } else {
            let mut digits = false;
            for c in word.chars() {
                if c.is_ascii_digit() {
                    if !digits {
                        out.push('N');
                    }
                    digits = true;
                } else {
                    digits = false;
                    out.push(c);
                }
            }
        }
        word.clear();
    };
    for c in message.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.chars().take(160).collect()
}

/// Whether `answer` is complete and covers at least (or, `exact`, exactly) `counts` events of
/// each partition.
fn covers(answer: &Json, topic: &str, counts: &[i64], exact: bool) -> bool {
    let provenance = &answer["provenance"];
    provenance["complete"] == true
        && counts.iter().enumerate().all(|(p, &n)| {
            let at = provenance["offsets"][format!("{topic}/{p}")]
                .as_i64()
                .unwrap_or(0);
            if exact { at == n } else { at >= n }
        })
}

fn request_error(api: Api) -> (RDKafkaApiKey, RDKafkaRespErr) {
    use RDKafkaRespErr::*;
    match api {
        Api::Produce => (
            RDKafkaApiKey::Produce,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ),
        Api::Fetch => (
            RDKafkaApiKey::Fetch,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ),
        Api::ListOffsets => (
            RDKafkaApiKey::ListOffsets,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        ),
        Api::Metadata => (RDKafkaApiKey::Metadata, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT),
        Api::JoinGroup => (RDKafkaApiKey::JoinGroup, RD_KAFKA_RESP_ERR_NOT_COORDINATOR),
        Api::SyncGroup => (
            RDKafkaApiKey::SyncGroup,
            RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        ),
        Api::Heartbeat => (
            RDKafkaApiKey::Heartbeat,
            RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        ),
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// GET: status and JSON body (status 0 when nothing answers).
fn get(agent: &ureq::Agent, url: &str) -> (u16, Json) {
    match agent.get(url).call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response.body_mut().read_json().unwrap_or(Json::Null);
            (status, body)
        }
        Err(_) => (0, Json::Null),
    }
}

/// Ports handed to the scenarios running now: never handed twice, so that a scenario's
/// serving process never asks another scenario's speed instance (found by the torture suite
/// itself: a port an extra speed instance of one scenario was to use was bound by another's).
static PORTS: Mutex<std::collections::BTreeSet<u16>> =
    Mutex::new(std::collections::BTreeSet::new());

/// A port free now and handed to no running scenario; [`release_ports`] gives it back.
fn free_port() -> Result<u16, TortureError> {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| TortureError::io(Path::new("127.0.0.1:0"), e))?;
        if PORTS
            .lock()
            .map_err(|_| TortureError::Poisoned)?
            .insert(port)
        {
            return Ok(port);
        }
    }
}

fn release_ports(ports: impl IntoIterator<Item = u16>) {
    if let Ok(mut handed) = PORTS.lock() {
        for port in ports {
            handed.remove(&port);
        }
    }
}

/// The processes of a scenario and what they share.
struct World {
    dir: PathBuf,
    braid: PathBuf,
    processes: BTreeMap<Role, Process>,
    /// Ports of every speed instance that may ever run (the serving processes ask them all).
    speed_ports: Vec<u16>,
    serve_ports: Vec<u16>,
    text: String,
    env: Vec<(String, String)>,
    events: Mutex<Vec<String>>,
    started: Instant,
    /// The processes' schema registry address, and the one the oracle reads instead.
    oracle_registry: Option<(String, String)>,
}

impl World {
    fn new(
        scenario: &Scenario,
        dir: &Path,
        bootstrap: &str,
        topic: &str,
        options: &Options,
        registry: Option<&braid_testkit::registry::TestRegistry>,
    ) -> Result<Self, TortureError> {
        let (speeds, serves) = match scenario.topology {
            Topology::Single => (0, 1),
            Topology::Tiers { speeds, serves } => (speeds + 3, serves),
        };
        let speed_ports = (0..speeds).map(|_| free_port()).collect::<Result<_, _>>()?;
        let serve_ports = (0..serves).map(|_| free_port()).collect::<Result<_, _>>()?;
        let text = config_text(
            scenario,
            dir,
            bootstrap,
            topic,
            registry.map(|r| r.url.as_str()),
        );
        Ok(Self {
            oracle_registry: registry.map(|r| (r.url.clone(), r.steady_url.clone())),
            dir: dir.to_owned(),
            braid: options.braid.clone(),
            processes: BTreeMap::new(),
            speed_ports,
            serve_ports,
            text,
            env: Vec::new(),
            events: Mutex::default(),
            started: Instant::now(),
        })
    }

    /// The config the oracle decodes with: the processes', but reading the schema registry
    /// where its outages do not reach.
    fn config(&self) -> Result<Config, TortureError> {
        let (text, _, _) = self.process_config(Role::Batch);
        let text = match &self.oracle_registry {
            Some((url, steady)) => text.replace(url.as_str(), steady),
            None => text,
        };
        Config::from_toml(&text).map_err(|e| TortureError::Config(e.to_string()))
    }

    fn note(&self, what: &str) {
        if let Ok(mut events) = self.events.lock() {
            events.push(format!(
                "{:>7.2}s {what}",
                self.started.elapsed().as_secs_f64()
            ));
        }
    }

    fn serving_bases(&self) -> Vec<(Role, String)> {
        self.serve_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let role = if self.speed_ports.is_empty() {
                    Role::All
                } else {
                    Role::Serve(i)
                };
                (role, format!("http://127.0.0.1:{port}"))
            })
            .collect()
    }

    /// The next speed instance no process has been yet.
    fn extra_speed(&self) -> Role {
        let used = self
            .processes
            .keys()
            .filter(|r| matches!(r, Role::Speed(_)))
            .count();
        Role::Speed(used.min(self.speed_ports.len() - 1))
    }

    fn process_config(&self, role: Role) -> (String, &'static str, Option<u16>) {
        let peers: Vec<String> = self
            .speed_ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        match role {
            Role::All => {
                let port = self.serve_ports[0];
                (
                    self.text
                        .replace("@SERVE@", &format!("listen = \"127.0.0.1:{port}\"")),
                    "batch,speed,serve",
                    Some(port),
                )
            }
            Role::Speed(i) => {
                let port = self.speed_ports[i];
                (
                    self.text
                        .replace("@SERVE@", "listen = \"127.0.0.1:0\"")
                        .replace(
                            "[speed]\n",
                            &format!("[speed]\nlisten = \"127.0.0.1:{port}\"\n"),
                        ),
                    "speed",
                    Some(port),
                )
            }
            Role::Serve(i) => {
                let port = self.serve_ports[i];
                (
                    self.text.replace(
                        "@SERVE@",
                        &format!(
                            "listen = \"127.0.0.1:{port}\"\nspeed_peers = [{}]\nspeed_timeout = \"400ms\"",
                            peers.join(", ")
                        ),
                    ),
                    "serve",
                    Some(port),
                )
            }
            Role::Batch => (
                self.text.replace("@SERVE@", "listen = \"127.0.0.1:0\""),
                "batch",
                None,
            ),
        }
    }

    fn start(&mut self, role: Role) -> Result<(), TortureError> {
        let (text, layers, port) = self.process_config(role);
        let config = self.dir.join(format!("{role}.toml"));
        std::fs::write(&config, text).map_err(|e| TortureError::io(&config, e))?;
        let log = self.dir.join(format!("{role}.log"));
        let mut process = Process {
            role,
            config,
            log,
            layers,
            port,
            child: None,
            down_on_purpose: false,
            retired: false,
        };
        process.child = Some(self.spawn(&process)?);
        self.note(&format!("started {role}"));
        self.processes.insert(role, process);
        Ok(())
    }

    fn spawn(&self, process: &Process) -> Result<Child, TortureError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&process.log)
            .map_err(|e| TortureError::io(&process.log, e))?;
        Command::new(&self.braid)
            .args(["run", "--config"])
            .arg(&process.config)
            .args(["--layers", process.layers])
            .env(
                "BRAID_LOG",
                std::env::var("BRAID_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| TortureError::io(&self.braid, e))
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), TortureError> {
        let deadline = Instant::now() + timeout;
        let agent = agent(Duration::from_secs(1));
        for (role, base) in self.serving_bases() {
            while get(&agent, &format!("{base}/readyz")).0 != 200 {
                if Instant::now() > deadline {
                    return Err(TortureError::NotReady(format!(
                        "{role} was not ready in {timeout:?}: {}",
                        self.log_tail(&self.dir.join(format!("{role}.log")), 2000)
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Polls the restarted `role`'s readiness (a speed instance: its status endpoint) and
    /// records how long it took.
    fn measure_ready(&self, role: Role, into: ReadyAt) {
        let Some(process) = self.processes.get(&role) else {
            return;
        };
        let url = match (role, process.port) {
            (Role::Speed(_), Some(port)) => {
                format!("http://127.0.0.1:{port}/internal/v1/speed/status")
            }
            (_, Some(port)) => format!("http://127.0.0.1:{port}/readyz"),
            (_, None) => return,
        };
        let spawned = Instant::now();
        std::thread::spawn(move || {
            let agent = agent(Duration::from_millis(500));
            while spawned.elapsed() < Duration::from_secs(60) {
                if get(&agent, &url).0 == 200 {
                    if let Ok(mut ready) = into.lock() {
                        *ready = Some(spawned.elapsed());
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
    }

    /// SIGKILL; whether there was a process to kill.
    fn kill(&mut self, role: Role) -> bool {
        let Some(process) = self.processes.get_mut(&role) else {
            return false;
        };
        let Some(mut child) = process.child.take() else {
            return false;
        };
        let _ = child.kill();
        let _ = child.wait();
        process.down_on_purpose = true;
        true
    }

    fn signal(&self, role: Role, signal: &str) -> bool {
        let Some(child) = self.processes.get(&role).and_then(|p| p.child.as_ref()) else {
            return false;
        };
        Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGTERM and wait for the exit; whether there was a process.
    fn terminate(&mut self, role: Role) -> bool {
        let Some(process) = self.processes.get_mut(&role) else {
            return false;
        };
        let Some(mut child) = process.child.take() else {
            return false;
        };
        process.down_on_purpose = true;
        let _ = Command::new("kill")
            .args(["-CONT", &child.id().to_string()])
            .status();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    fn retire(&mut self, role: Role) {
        self.terminate(role);
        if let Some(process) = self.processes.get_mut(&role) {
            process.retired = true;
        }
    }

    /// Starts again every process that exited by itself; why each did.
    fn restart_crashed(&mut self) -> Result<Vec<String>, TortureError> {
        let mut crashed = Vec::new();
        for process in self.processes.values_mut() {
            if let Some(child) = process.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                process.child = None;
                crashed.push((process.role, status));
            }
        }
        let mut causes = Vec::new();
        for (role, status) in &crashed {
            self.note(&format!(
                "{role} exited by itself with {status}; restarting it"
            ));
            let process = &self.processes[role];
            causes.push(crash_cause(&self.log_tail(&process.log, 4000)));
            let child = self.spawn(process)?;
            if let Some(process) = self.processes.get_mut(role) {
                process.child = Some(child);
            }
        }
        Ok(causes)
    }

    /// `braid batch`, or one shard of a sharded run: its name, child and start.
    fn batch_run(
        &self,
        shard: Option<(&str, u32, u32)>,
    ) -> Result<(String, Child, Instant), TortureError> {
        let name = match shard {
            Some((run, _, shard)) => format!("{run}-shard-{shard}"),
            None => format!("batch-run-{}", self.started.elapsed().as_millis()),
        };
        // A file of its own: another run starting meanwhile must not rewrite it under this one.
        let config = self.dir.join(format!("{name}.toml"));
        let (text, _, _) = self.process_config(Role::Batch);
        std::fs::write(&config, text).map_err(|e| TortureError::io(&config, e))?;
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| TortureError::io(&log_path, e))?;
        let mut command = Command::new(&self.braid);
        command.args(["batch", "--config"]).arg(&config);
        if let Some((run, shards, shard)) = shard {
            command.args([
                "--shards",
                &shards.to_string(),
                "--shard",
                &shard.to_string(),
                "--run",
                run,
            ]);
        }
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| TortureError::io(&self.braid, e))?;
        self.note(&format!("started {name}"));
        Ok((name, child, Instant::now()))
    }

    /// Resumes, then stops every process with SIGTERM; a process that does not exit cleanly
    /// is named.
    fn stop_all(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        let roles: Vec<Role> = self.processes.keys().copied().collect();
        for role in roles {
            let Some(process) = self.processes.get_mut(&role) else {
                continue;
            };
            let Some(mut child) = process.child.take() else {
                continue;
            };
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-CONT", &pid]).status();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    _ if Instant::now() > deadline => break None,
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            let log = process.log.clone();
            match status {
                Some(status) if status.success() => {}
                // Stopping itself on an injected storage fault (a layer that could not write
                // stops its process, for its supervisor to restart) is not a failure, even when
                // it happens as the scenario ends.
                Some(_) if self.log_tail(&log, 4000).contains("injected storage fault") => {}
                Some(status) => failures.push(format!(
                    "{role} exited with {status} on SIGTERM: {}",
                    self.log_tail(&log, 1500)
                )),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push(format!("{role} did not stop within 30 s of SIGTERM"));
                }
            }
        }
        failures
    }

    fn log_tail(&self, path: &Path, bytes: usize) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let start = (text.len().saturating_sub(bytes)..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// What happened, in order (faults, starts, restarts).
    fn history(&self) -> String {
        self.events.lock().map(|e| e.join("\n")).unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for process in self.processes.values_mut() {
            if let Some(mut child) = process.child.take() {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::write(self.dir.join("history.txt"), self.history());
        release_ports(self.speed_ports.iter().chain(&self.serve_ports).copied());
    }
}

/// Fraud scoring: a rule on the event alone, so that the oracle knows every alert exactly
/// (a feature is required; it is read, not used).
const FRAUD: &str = r#"[fraud]
source = "payments"
key = "card_id"
alert_threshold = 0.7
[[fraud.feature]]
name = "tx_10m"
view = "card_minute"
metric = "tx"
window = "10m"
[[fraud.rule]]
name = "large"
when = "event.amount > 950"
weight = 1.0
"#;

/// The amount above which the torture's fraud rule alerts.
pub const ALERT_ABOVE: f64 = 950.0;

/// The bucket of a scenario on moto (each scenario starts its own server).
const MOTO_BUCKET: &str = "torture";

/// The config every process starts from (`@SERVE@` is its `[serve]` listen line).
fn config_text(
    scenario: &Scenario,
    dir: &Path,
    bootstrap: &str,
    topic: &str,
    registry: Option<&str>,
) -> String {
    let session = scenario.session_timeout_ms;
    let (registry_section, source) = match (scenario.registry, registry) {
        (Some((format, _)), Some(url)) => {
            let format = match format {
                crate::scenario::RegistryFormat::Avro => "avro",
                crate::scenario::RegistryFormat::Protobuf => "protobuf",
            };
            (
                format!("[schema_registry]\nurl = \"{url}\"\n"),
                braid_testkit::payments_source(topic).replacen(
                    &format!("topic = \"{topic}\"\n"),
                    &format!("topic = \"{topic}\"\nformat = \"{format}\"\n"),
                    1,
                ),
            )
        }
        _ => (String::new(), braid_testkit::payments_source(topic)),
    };
    format!(
        r#"{registry_section}
[kafka]
brokers = "{bootstrap}"
group_id = "torture-{seed}"
assignment = "{assignment}"
[kafka.config]
"session.timeout.ms" = {session}
"heartbeat.interval.ms" = {heartbeat}
"topic.metadata.refresh.interval.ms" = 1000
"fetch.wait.max.ms" = 20

[storage]
dir = "{storage}"
{bucket}

[serve]
@SERVE@

[speed]
segment_size = {segment}
checkpoint_interval = "100ms"
checkpoint_events = 300
max_batch = 200

[batch]
interval = "off"
flush_interval = "200ms"
flush_rows = 500
compact_files = {compact}

{source}
{tier_view}
{fraud}"#,
        seed = scenario.seed,
        heartbeat = session / 6,
        assignment = if scenario.consumer_group {
            "group"
        } else {
            "leases"
        },
        storage = dir.join("storage").display(),
        bucket = if scenario.on_moto {
            format!("url = \"s3://{MOTO_BUCKET}/braid\"")
        } else {
            String::new()
        },
        segment = scenario.segment_size,
        compact = scenario.compact_files,
        tier_view = TIER_VIEW,
        fraud = FRAUD,
    )
}

#[cfg(test)]
mod tests {
    use super::crash_cause;

    /// Causes count together whatever their numbers, pids and writer tokens.
    #[test]
    fn a_crash_cause_blanks_numbers_and_hex_tokens() {
        let log = "INFO started\nerror: archiver: storage put archive/torture-300153~0~00000000000000000120~00000000000000000240~bfe41a2c9d0e7f31.parquet: refused\n";
        assert_eq!(
            crash_cause(log),
            "error: archiver: storage put archive/torture-N~N~N~N~N.parquet: refused"
        );
        assert_eq!(
            crash_cause("2026-12-07T20:08:34Z ERROR speed: groups/g/members/vm-25915.json: x"),
            "speed: groups/g/members/vm-N.json: x"
        );
    }
}
