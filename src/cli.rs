//! Command-line interface: the `braid` commands and their options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Braid: batch and speed views over Kafka, merged exactly.
#[derive(Debug, Parser)]
#[command(name = "braid", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BRAID_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config and print the resolved sources and views (exit 2 on any error).
    Check {
        /// The config file; `-` or no flag checks the built-in example.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also check that the configured storage (`storage.url` or `storage.dir`) does what
        /// Braid needs of it, conditional writes above all, under a scratch prefix it removes
        /// afterwards (exit 1 when it does not).
        #[arg(long)]
        storage: bool,
    },
    /// Run the chosen layers against the configured brokers until SIGINT or SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Layers to run, comma separated.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Layer::Batch, Layer::Speed, Layer::Serve])]
        layers: Vec<Layer>,
    },
    /// Everything on one machine: the embedded broker (unless the config names brokers), the
    /// payments generator, all three layers and the HTTP API, on a fresh data dir.
    Dev {
        /// Default: the built-in example (payments source, card/merchant/country views).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Generated events per second; 0 runs no generator (produce events yourself).
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// The built-in example's payments as Avro or Protobuf (the generator's schema, written
        /// to the data dir as the source's schema file) instead of JSON.
        #[arg(long, value_enum)]
        format: Option<DevFormat>,
    },
    /// The synthetic payments generator against the configured brokers.
    Produce {
        #[arg(long, short)]
        config: PathBuf,
        /// The source whose topic receives the events.
        #[arg(long)]
        source: String,
        /// Events per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Stop after this many events (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Share of events whose time lies up to 10 minutes in the past.
        #[arg(long, default_value_t = 0.05)]
        late_share: f64,
        /// Seed of the generator (the same seed makes the same cards, merchants and amounts).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// How events are written (default: the source's format). Avro and Protobuf use the
        /// source's schema file, or the generator's own schema, registered under
        /// `<topic>-value` when the source reads a schema registry.
        #[arg(long, value_enum)]
        format: Option<ProduceFormat>,
    },
    /// Run one batch recompute, publish it, and exit (for cron and Kubernetes CronJobs).
    Batch {
        #[arg(long, short)]
        config: PathBuf,
        /// Recompute every view from the whole archive instead of incrementally.
        #[arg(long)]
        full: bool,
        /// Split the run into N shards, each computing its share of the partitions in a
        /// process of its own (`--shard I`); the last shard to finish merges them into one
        /// snapshot, equal cell for cell to an unsplit run.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
        shards: Option<u32>,
        /// The shard this process computes, 0 to N-1 (with `--shards N`).
        #[arg(long)]
        shard: Option<u32>,
        /// The sharded run's name, the same for every shard (a Kubernetes Job's name, say);
        /// default: named after the published snapshot the shards build on.
        #[arg(long)]
        run: Option<String>,
        /// Merge the shards of the sharded run `--run` (or of `--shards N` after the published
        /// snapshot) and publish it, when every shard is done but none merged.
        #[arg(long, conflicts_with_all = ["shard", "full"])]
        merge: bool,
    },
    /// Seeded randomized fault injection: each scenario (a seed) draws a workload, Braid
    /// processes and a fault schedule, runs them on librdkafka's mock cluster, and checks every
    /// answer against an oracle and liveness after the faults (exit 1 on any failure).
    Torture(TortureArgs),
    /// Measure a layer's throughput, latency and memory on this machine.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

/// `braid torture`'s options.
#[derive(Debug, Args)]
pub struct TortureArgs {
    /// Run only this seed (a failure's rerun); prints its scenario and every failure.
    #[arg(long, conflicts_with_all = ["first", "scenarios"])]
    pub seed: Option<u64>,
    /// Run these seeds (comma separated) as a sweep.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["seed", "first", "scenarios"])]
    pub seeds: Vec<u64>,
    /// The first seed of a sweep.
    #[arg(long, default_value_t = 1)]
    pub first: u64,
    /// Scenarios of the sweep (seeds `first` to `first + scenarios - 1`).
    #[arg(long, default_value_t = 20)]
    pub scenarios: u64,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Where scenario folders go (default: a fresh temp dir); a failing scenario's folder
    /// (configs, logs, `history.txt`) is kept.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write the sweep's summary as JSON here.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Keep every scenario's folder, passing ones too.
    #[arg(long)]
    pub keep: bool,
    /// With `--seed`: when it fails, drop faults one at a time to find those that matter.
    #[arg(long, requires = "seed")]
    pub shrink: bool,
    /// Share of seeds (0 to 1) run on a tansu broker process (`tansu` on the PATH) instead
    /// of the mock cluster, with every fault but the broker's own.
    #[arg(long, default_value_t = 0.0)]
    pub tansu_share: f64,
    /// Share of seeds (0 to 1) whose processes store in a bucket of moto's S3 server
    /// (installed by `scripts/install-deps.sh --tests`) instead of a local folder.
    #[arg(long, default_value_t = 0.0)]
    pub moto_share: f64,
    /// Share of seeds (0 to 1) whose payments are written in Avro or Protobuf through a schema
    /// registry (a second schema version mid-stream, registry outages among the faults).
    #[arg(long, default_value_t = 0.0)]
    pub registry_share: f64,
}

/// A layer `braid run` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Layer {
    /// The archiver and the scheduled recomputes.
    Batch,
    /// The speed layer's consumer.
    Speed,
    /// The HTTP API.
    Serve,
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// The batch layer: full and incremental recompute of generated events, side by side with
    /// DuckDB (the linked library) computing the same views from the same Parquet files.
    Batch {
        /// Config whose first source and its views are measured; default: the built-in example.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Events archived for the full run.
        #[arg(long, default_value_t = 10_000_000)]
        events: usize,
        /// New events for the incremental run, in percent of `--events`.
        #[arg(long, default_value_t = 1.0)]
        increment_percent: f64,
        /// Where to write the archive and snapshots (default: a fresh temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The serving layer: merged point- and range-query latency at a fixed request rate while
    /// events are ingested, and freshness (produce to visible in a merged answer).
    Serve {
        /// Config whose first source is generated; default: the built-in example.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Events in the batch snapshot before the load starts.
        #[arg(long, default_value_t = 200_000)]
        history: usize,
        /// Requests per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds of load per query kind.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Events per second produced during the load.
        #[arg(long, default_value_t = 2_000)]
        ingest_rate: u64,
        /// Freshness samples.
        #[arg(long, default_value_t = 200)]
        freshness_samples: usize,
        /// Pin the API's runtime alone to the first core, and every other thread (the load
        /// generator, speed layer, broker, archiver and ingest) to the second.
        #[arg(long)]
        pin: bool,
        /// Then hand the partitions to two speed instances and time the same point queries
        /// through a serving instance that gathers from them over HTTP (`serve.speed_peers`).
        #[arg(long)]
        peers: bool,
    },
    /// Fraud scoring: the speed layer's throughput with and without scoring every event, produce
    /// to alert on the live stream, and `POST /v1/fraud/score` latency at a fixed rate.
    Fraud {
        /// Config with a `[fraud]` section; default: the built-in example.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Events for each throughput run.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Throughput runs with and without scoring (alternated; the best of each counts).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Fraud-like bursts produced for the produce-to-alert latency.
        #[arg(long, default_value_t = 30)]
        bursts: usize,
        /// `POST /v1/fraud/score` requests per second.
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Seconds of on-demand scoring.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Background events per second during the latency measurements.
        #[arg(long, default_value_t = 2_000)]
        ingest_rate: u64,
        /// Spread the throughput events round-robin over the partitions instead of keying them
        /// by the fraud key: every partition then holds cells of every busy key (the worst case).
        #[arg(long)]
        spread: bool,
    },
    /// The audit endpoints over a generated archive: lineage of a cell, pages of 1,000 events,
    /// an as-of answer over one day, and a `view_*` SQL aggregate against `GET /v1/views`.
    Audit {
        /// Config whose first source and its views are measured; default: the built-in example.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Events in the archive.
        #[arg(long, default_value_t = 10_000_000)]
        events: usize,
        /// Event-time milliseconds between events (10M events 20 ms apart span 2.3 days).
        #[arg(long, default_value_t = 20)]
        spacing_ms: i64,
        /// Requests per measured kind.
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
    /// The speed layer: decode + apply in-process (alone and with readers), end to end from the
    /// embedded broker, and memory per live cell.
    Speed {
        /// Config whose first source and views are measured; default: the built-in example.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Events for the in-process runs.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Events for the end-to-end run through the embedded broker.
        #[arg(long, default_value_t = 300_000)]
        end_to_end_events: usize,
        /// A Kafka broker (`host:port`) for the end-to-end run instead of the embedded one: a
        /// new topic is created there for it.
        #[arg(long)]
        brokers: Option<String>,
        /// A folder of stream-processor peer scripts (`stream_pathway.py`, `stream_bytewax.py`,
        /// each run by the Python of its virtualenv under `$PEERS_HOME`, default
        /// `~/.cache/braid-peers`): each consumes the end-to-end run's topic from the same
        /// broker, computing the per-card 1-minute count and sum, and is timed beside Braid.
        #[arg(long)]
        stream_peers: Option<PathBuf>,
        /// Instead: decode + apply of the example's payments in a format, beside the same run's
        /// reference decode of the same bytes (`json-nested`: nested beside flat JSON).
        #[arg(long, value_enum)]
        format: Option<SpeedFormat>,
    },
}

/// `braid dev --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DevFormat {
    Json,
    Avro,
    Protobuf,
}

/// `braid produce --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProduceFormat {
    Json,
    Avro,
    Protobuf,
    Syslog,
}

impl From<ProduceFormat> for braid_shared::config::Format {
    fn from(format: ProduceFormat) -> Self {
        match format {
            ProduceFormat::Json => Self::Json,
            ProduceFormat::Avro => Self::Avro,
            ProduceFormat::Protobuf => Self::Protobuf,
            ProduceFormat::Syslog => Self::Syslog,
        }
    }
}

impl From<DevFormat> for braid_shared::config::Format {
    fn from(format: DevFormat) -> Self {
        match format {
            DevFormat::Json => Self::Json,
            DevFormat::Avro => Self::Avro,
            DevFormat::Protobuf => Self::Protobuf,
        }
    }
}

/// `braid bench speed --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpeedFormat {
    Avro,
    Protobuf,
    JsonNested,
}
