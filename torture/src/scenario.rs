//! A scenario: everything a seed draws. The workload (partitions, events with late, malformed,
//! duplicate and out-of-order ones and jumps of the event clock), the processes (one `braid
//! run`, or speed, serving and batch tiers), the broker's shape and the fault schedule. The
//! same seed draws the same scenario, always.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Event times start here (2026-09-21), the oracle's query range is around it.
pub const BASE_MS: i64 = 1_790_000_000_000;

/// Who runs the layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One `braid run` with every layer.
    Single,
    /// `speeds` speed instances, `serves` serving instances and one batch instance, as separate
    /// processes sharing storage.
    Tiers { speeds: usize, serves: usize },
}

/// A process of the scenario, as faults name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `braid run` with every layer (the single topology).
    All,
    Speed(usize),
    Serve(usize),
    Batch,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("braid"),
            Self::Speed(i) => write!(f, "speed-{i}"),
            Self::Serve(i) => write!(f, "serve-{i}"),
            Self::Batch => f.write_str("batch"),
        }
    }
}

/// A broker request kind errors are injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Produce,
    Fetch,
    ListOffsets,
    Metadata,
    JoinGroup,
    SyncGroup,
    Heartbeat,
}

/// One fault, at a moment of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// SIGKILL, and a fresh process after `down`.
    Kill { role: Role, down: Duration },
    /// SIGSTOP for `paused`, then SIGCONT: past the session timeout, a zombie whose
    /// partitions were handed over while it slept.
    Pause { role: Role, paused: Duration },
    /// The broker stops answering for `down` (librdkafka's mock cluster: every answer it
    /// gives meanwhile is held back until after the outage).
    BrokerDown { broker: i32, down: Duration },
    /// The next `count` requests of `api` fail with a retriable error.
    RequestErrors { api: Api, count: usize },
    /// A partition's leadership moves to another broker.
    LeaderMove { partition: i32, broker: i32 },
    /// An extra speed instance joins the group, and leaves (SIGTERM) after `stays`.
    Join { stays: Duration },
    /// A speed instance stops (SIGTERM) and starts again after `gone`.
    Leave { role: Role, gone: Duration },
    /// A `braid batch` run.
    BatchRun,
    /// A `braid batch --shards N` run, its shards as processes started together.
    ShardedRun { shards: u32 },
    /// The schema registry answers the processes' lookups with 503 for `down`.
    RegistryDown { down: Duration },
    /// Every process's storage refuses writes, loses the answers of writes done, and slows
    /// down, for `lasts`.
    Storage {
        fail_writes: f64,
        lose_acks: f64,
        slow_ms: u64,
        lasts: Duration,
    },
}

impl Fault {
    /// The kind, as the sweep's summary counts faults.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kill { .. } => "kill -9",
            Self::Pause { .. } => "pause (SIGSTOP/SIGCONT)",
            Self::BrokerDown { .. } => "broker outage (stops answering)",
            Self::RequestErrors { .. } => "broker request errors",
            Self::LeaderMove { .. } => "partition leader move",
            Self::Join { .. } => "rebalance: instance joins",
            Self::Leave { .. } => "rebalance: instance leaves",
            Self::BatchRun => "batch run",
            Self::ShardedRun { .. } => "sharded batch run",
            Self::Storage { .. } => "storage faults",
            Self::RegistryDown { .. } => "schema registry outage",
        }
    }
}

/// A fault and when it strikes, from the start of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    pub at: Duration,
    pub fault: Fault,
}

/// One message of the workload: its partition and bytes.
#[derive(Debug, Clone)]
pub struct Message {
    pub partition: i32,
    pub payload: Vec<u8>,
}

/// Shares of seeds (0 to 1) run on something other than the default (librdkafka's mock
/// cluster, a local storage folder), each drawn from a random stream of its own so that the
/// rest of a seed's draw does not change with them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shares {
    /// On a tansu broker process.
    pub tansu: f64,
    /// Storage in a bucket of moto's S3 server.
    pub moto: f64,
    /// Payments in Avro or Protobuf through a schema registry (with its outages).
    pub registry: f64,
}

/// A workload written in a registry format instead of JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryFormat {
    Avro,
    Protobuf,
}

/// What a seed draws.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    /// Brokers of the mock cluster.
    pub brokers: i32,
    /// On a tansu broker process instead of the mock cluster (no broker faults then).
    pub on_tansu: bool,
    /// Storage in a bucket of moto's S3 server instead of a local folder.
    pub on_moto: bool,
    /// The layers share partitions through Kafka's consumer group protocol instead of
    /// partition leases (one mock-cluster scenario in five).
    pub consumer_group: bool,
    pub partitions: i32,
    pub topology: Topology,
    /// The consumers' session timeout.
    pub session_timeout_ms: u64,
    /// Speed segment size (a batch swap drops whole segments).
    pub segment_size: u64,
    /// The archiver compacts a partition's runs of this many small files.
    pub compact_files: usize,
    pub messages: Vec<Message>,
    /// Messages per produced chunk, and the pause between chunks.
    pub chunk: usize,
    pub pause: Duration,
    /// Runs of events whose clock jumped (hours, forward or back).
    pub clock_jumps: usize,
    /// Messages sent a second time (the same bytes).
    pub duplicates: usize,
    /// A crash-recovery scenario: kill -9s of single processes, well apart, and no other
    /// fault, so that each restart's time to ready and to caught up is its own.
    pub kills_only: bool,
    pub schedule: Vec<Scheduled>,
    /// Payments written in Avro or Protobuf through a schema registry, the second schema
    /// version from message `switch_at` on; `None`: JSON.
    pub registry: Option<(RegistryFormat, usize)>,
}

impl Scenario {
    /// The scenario of `seed`; `shares` of seeds on a tansu broker (without broker faults) or
    /// on moto's S3 server.
    pub fn draw(seed: u64, shares: &Shares) -> Self {
        let share = |salt: u64, share: f64| {
            StdRng::seed_from_u64(seed ^ salt).random_bool(share.clamp(0.0, 1.0))
        };
        let on_tansu = share(0x7461_6e73_7500, shares.tansu);
        let on_moto = share(0x6d6f_746f_0000, shares.moto);
        // Also a stream of its own: the seeds drawn before this choice existed draw the same.
        let consumer_group = !on_tansu && share(0x6772_6f75_7000, 0.2);
        let mut rng = StdRng::seed_from_u64(seed);
        let brokers = rng.random_range(1..=3);
        let partitions = rng.random_range(2..=4);
        let topology = if rng.random_bool(0.4) {
            Topology::Single
        } else {
            Topology::Tiers {
                speeds: rng.random_range(1..=3),
                serves: rng.random_range(1..=2),
            }
        };
        let session_timeout_ms = if rng.random_bool(0.5) { 3000 } else { 6000 };
        let segment_size = [50, 100, 200][rng.random_range(0..3)];
        let compact_files = rng.random_range(2..=4);
        let count = rng.random_range(1500..=4000);
        // The nested parts of each event come from a stream of their own, so every other draw of
        // a seed is what it was before they were added.
        let mut nested = StdRng::seed_from_u64(seed ^ 0x6e65_7374_6564);
        let (messages, clock_jumps, duplicates) =
            workload(&mut rng, &mut nested, count, partitions);
        let kills_only = rng.random_bool(0.15);
        let (chunk, pause, schedule) = if kills_only {
            // 1-2 kills 12 s apart while the stream goes on.
            let kills = rng.random_range(1..=2);
            let chunk = (messages.len() / (kills * 120)).max(1);
            let roles: Vec<Role> = match topology {
                Topology::Single => vec![Role::All],
                Topology::Tiers { speeds, .. } => (0..speeds).map(Role::Speed).collect(),
            };
            let schedule = (0..kills)
                .map(|k| Scheduled {
                    at: Duration::from_millis(1000 + k as u64 * 12_000 + rng.random_range(0..1000)),
                    fault: Fault::Kill {
                        role: roles[rng.random_range(0..roles.len())],
                        down: Duration::from_millis(rng.random_range(100..2000)),
                    },
                })
                .collect();
            (chunk, Duration::from_millis(100), schedule)
        } else {
            let chunk = rng.random_range(20..=60);
            let pause = Duration::from_millis(rng.random_range(40..=90));
            let stream = pause * (messages.len() / chunk) as u32;
            (
                chunk,
                pause,
                schedule(&mut rng, &topology, brokers, partitions, stream),
            )
        };
        // A stream of its own again: the format, the schema switch and the registry's outages.
        let registry = share(0x7265_6769_7374, shares.registry).then(|| {
            let mut draw = StdRng::seed_from_u64(seed ^ 0x666f_726d_6174);
            let format = if draw.random_bool(0.5) {
                RegistryFormat::Avro
            } else {
                RegistryFormat::Protobuf
            };
            (
                format,
                draw.random_range(messages.len() / 4..messages.len() * 3 / 4),
            )
        });
        let mut schedule = schedule;
        if registry.is_some() && !kills_only {
            let mut draw = StdRng::seed_from_u64(seed ^ 0x6f75_7461_6765);
            let stream = pause * (messages.len() / chunk.max(1)) as u32;
            for _ in 0..draw.random_range(1..=2) {
                let at = stream.mul_f64(draw.random_range(0.0..1.0));
                let down = Duration::from_millis(draw.random_range(1000..6000));
                schedule.push(Scheduled {
                    at,
                    fault: Fault::RegistryDown { down },
                });
            }
            schedule.sort_by_key(|s| s.at);
        }
        let (brokers, schedule) = if on_tansu {
            let process_faults = schedule
                .into_iter()
                .filter(|s| {
                    !matches!(
                        s.fault,
                        Fault::BrokerDown { .. }
                            | Fault::RequestErrors { .. }
                            | Fault::LeaderMove { .. }
                    )
                })
                .collect();
            (1, process_faults)
        } else {
            (brokers, schedule)
        };
        Self {
            seed,
            brokers,
            on_tansu,
            on_moto,
            consumer_group,
            partitions,
            topology,
            session_timeout_ms,
            segment_size,
            compact_files,
            messages,
            chunk,
            pause,
            clock_jumps,
            duplicates,
            kills_only,
            schedule,
            registry,
        }
    }

    /// Every process the scenario starts with.
    pub fn roles(&self) -> Vec<Role> {
        match self.topology {
            Topology::Single => vec![Role::All],
            Topology::Tiers { speeds, serves } => (0..speeds)
                .map(Role::Speed)
                .chain((0..serves).map(Role::Serve))
                .chain([Role::Batch])
                .collect(),
        }
    }

    /// The processes answering queries.
    pub fn serving(&self) -> Vec<Role> {
        match self.topology {
            Topology::Single => vec![Role::All],
            Topology::Tiers { serves, .. } => (0..serves).map(Role::Serve).collect(),
        }
    }

    /// The same scenario with only the faults at `keep` (indices into the schedule).
    pub fn with_faults(&self, keep: &[usize]) -> Self {
        let mut smaller = self.clone();
        smaller.schedule = keep.iter().map(|&i| self.schedule[i].clone()).collect();
        smaller
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {:?}, {} partitions on {} ({}), storage {}, session timeout {} ms, \
             segment {}, compaction of {} files",
            self.seed,
            self.topology,
            self.partitions,
            if self.on_tansu {
                "tansu".to_owned()
            } else {
                format!("{} mock broker(s)", self.brokers)
            },
            if self.consumer_group {
                "consumer groups"
            } else {
                "partition leases"
            },
            if self.on_moto {
                "on moto (S3)"
            } else {
                "local"
            },
            self.session_timeout_ms,
            self.segment_size,
            self.compact_files
        )?;
        writeln!(
            f,
            "  {} messages ({} duplicates, {} clock jumps), {} per chunk every {:?}{}",
            self.messages.len(),
            self.duplicates,
            self.clock_jumps,
            self.chunk,
            self.pause,
            if self.kills_only {
                "; crash recovery: kills only"
            } else {
                ""
            }
        )?;
        if let Some((format, switch_at)) = self.registry {
            writeln!(
                f,
                "  written in {format:?} through a schema registry, the second schema version from message {switch_at}"
            )?;
        }
        for scheduled in &self.schedule {
            writeln!(
                f,
                "  at {:>6.2}s  {:?}",
                scheduled.at.as_secs_f64(),
                scheduled.fault
            )?;
        }
        Ok(())
    }
}

/// Payments: late by up to 2 hours, out of order, ~3% malformed, some duplicated, with runs
/// whose clock jumped hours forward or back.
fn workload(
    rng: &mut StdRng,
    nested: &mut StdRng,
    count: usize,
    partitions: i32,
) -> (Vec<Message>, usize, usize) {
    let jumps: Vec<(usize, usize, i64)> = (0..rng.random_range(0..=2))
        .map(|_| {
            let start = rng.random_range(0..count);
            let hours = rng.random_range(1..=20) * if rng.random_bool(0.5) { 1 } else { -1 };
            (start, rng.random_range(50..300), hours * 3_600_000)
        })
        .collect();
    let mut messages: Vec<Message> = Vec::with_capacity(count);
    let mut duplicates = 0;
    for i in 0..count {
        if i > 10 && rng.random_bool(0.02) {
            let again = messages[rng.random_range(0..messages.len())].clone();
            messages.push(again);
            duplicates += 1;
            continue;
        }
        let partition = rng.random_range(0..partitions);
        let late = if rng.random_bool(0.2) {
            rng.random_range(0..7_200_000)
        } else {
            0
        };
        let jump: i64 = jumps
            .iter()
            .filter(|(start, len, _)| (*start..start + len).contains(&i))
            .map(|(_, _, by)| by)
            .sum();
        let ts = BASE_MS + (i as i64) * 250 - late + jump;
        let payload = match rng.random_range(0..100) {
            0 => b"this is not json".to_vec(),
            1 => format!(r#"{{"tx_id":"t{i}","card_id":"c1","amount":"12.50","ts":{ts}}}"#)
                .into_bytes(),
            2 => format!(r#"{{"tx_id":"t{i}","card_id":"c1","amount":3}}"#).into_bytes(),
            _ => {
                let card = rng.random_range(0..40);
                let merchant = rng.random_range(0..25);
                let country = ["US", "DE", "BR", "JP"][rng.random_range(0..4)];
                let amount = rng.random_range(1..100_000) as f64 / 100.0;
                // Nested parts, read by paths: a merchant object (its tier absent now and
                // then) and a list of items (empty now and then).
                let tier = match nested.random_range(0..5) {
                    0 => String::new(),
                    t => format!(r#","risk":{{"tier":{t}}}"#),
                };
                let items: Vec<String> = (0..nested.random_range(0..3))
                    .map(|_| format!(r#"{{"sku":"s{}"}}"#, nested.random_range(0..8)))
                    .collect();
                format!(
                    r#"{{"tx_id":"t{i}","card_id":"card-{card}","merchant_id":"m{merchant}","country":"{country}","amount":{amount},"ts":{ts},"merchant":{{"id":"m{merchant}"{tier}}},"items":[{}]}}"#,
                    items.join(",")
                )
                .into_bytes()
            }
        };
        messages.push(Message { partition, payload });
    }
    (messages, jumps.len(), duplicates)
}

/// Two to five faults over the stream and a little after it.
fn schedule(
    rng: &mut StdRng,
    topology: &Topology,
    brokers: i32,
    partitions: i32,
    stream: Duration,
) -> Vec<Scheduled> {
    let processes: Vec<Role> = match topology {
        Topology::Single => vec![Role::All],
        Topology::Tiers { speeds, serves } => (0..*speeds)
            .map(Role::Speed)
            .chain((0..*serves).map(Role::Serve))
            .chain([Role::Batch])
            .collect(),
    };
    let speeds: Vec<Role> = processes
        .iter()
        .copied()
        .filter(|r| matches!(r, Role::Speed(_) | Role::All))
        .collect();
    let span = stream.as_millis() as u64 + 2000;
    let mut schedule: Vec<Scheduled> = (0..rng.random_range(2..=5))
        .map(|_| {
            let at = Duration::from_millis(rng.random_range(300..span));
            let ms = |rng: &mut StdRng, lo: u64, hi: u64| {
                Duration::from_millis(rng.random_range(lo..hi))
            };
            let fault = loop {
                let fault = match rng.random_range(0..10) {
                    0 => Fault::Kill {
                        role: processes[rng.random_range(0..processes.len())],
                        down: ms(rng, 100, 2000),
                    },
                    1 => Fault::Pause {
                        role: processes[rng.random_range(0..processes.len())],
                        paused: ms(rng, 300, 5000),
                    },
                    2 => Fault::BrokerDown {
                        broker: rng.random_range(1..=brokers),
                        down: ms(rng, 300, 3000),
                    },
                    3 => Fault::RequestErrors {
                        api: [
                            Api::Produce,
                            Api::Fetch,
                            Api::ListOffsets,
                            Api::Metadata,
                            Api::JoinGroup,
                            Api::SyncGroup,
                            Api::Heartbeat,
                        ][rng.random_range(0..7)],
                        count: rng.random_range(1..=10),
                    },
                    4 if brokers > 1 => Fault::LeaderMove {
                        partition: rng.random_range(0..partitions),
                        broker: rng.random_range(1..=brokers),
                    },
                    5 if matches!(topology, Topology::Tiers { .. }) => Fault::Join {
                        stays: ms(rng, 1000, 6000),
                    },
                    6 if matches!(topology, Topology::Tiers { speeds, .. } if *speeds > 1) => {
                        Fault::Leave {
                            role: speeds[rng.random_range(0..speeds.len())],
                            gone: ms(rng, 500, 4000),
                        }
                    }
                    7 => Fault::BatchRun,
                    8 => Fault::ShardedRun {
                        shards: rng.random_range(2..=3),
                    },
                    9 => Fault::Storage {
                        fail_writes: rng.random_range(0.05..0.5),
                        lose_acks: if rng.random_bool(0.5) {
                            rng.random_range(0.0..0.2)
                        } else {
                            0.0
                        },
                        slow_ms: if rng.random_bool(0.3) {
                            rng.random_range(1..50)
                        } else {
                            0
                        },
                        lasts: ms(rng, 500, 3000),
                    },
                    _ => continue,
                };
                break fault;
            };
            Scheduled { at, fault }
        })
        .collect();
    schedule.sort_by_key(|s| s.at);
    schedule
}
