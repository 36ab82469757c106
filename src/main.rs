//! The `braid` binary: parses the command line, loads the config, wires the layers.
//!
//! - `cli`: commands and options; `check`: the `braid check` report; `run`: `braid run` and
//!   `braid batch`; `dev`: `braid dev`; `produce`: the generator (`braid produce`);
//!   `metrics`: which layers run. `braid bench ...` is the `braid-bench` crate's.

mod check;
mod cli;
mod dev;
mod metrics;
mod produce;
mod run;
mod torture;

use std::io::Write as _;
use std::process::ExitCode;

use braid_shared::Config;
use clap::Parser as _;

use cli::{BenchTarget, Cli, Command, LogFormat};

/// Prints `error` and maps it to the config exit code.
fn config_error(error: &braid_shared::Error) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

/// Many small, long-lived allocations (cells, keys, sketches): mimalloc keeps them compact.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The built-in example config, used when no `--config` is given.
pub const EXAMPLE_CONFIG: &str = include_str!("../deploy/config/example.toml");

/// Exit code for bad usage or config (clap uses the same for usage errors).
pub const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // No transparent huge pages: the allocator asks for them, and then every fresh page of a
    // new thread's heap is a 2 MiB page the kernel zeroes. Threads come and go with requests
    // (blocking sections, peer reads), and `braid bench serve --peers` measured point queries
    // through two speed peers at p50 24 ms, p99 235 ms with them against 1.4 ms and 44 ms
    // without; the speed layer's throughput did not change beyond this machine's noise.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    // `braid torture` reports on stdout and stderr itself; its own broker client's complaints
    // during the outages it causes are not news.
    if !matches!(cli.command, Command::Torture(_)) {
        init_tracing(cli.log_format);
    }
    match cli.command {
        Command::Check { config, storage } => match load(config.as_deref()) {
            Ok(config) => {
                let mut stdout = std::io::stdout().lock();
                let _ = write!(stdout, "{}", check::describe(&config));
                let _ = writeln!(stdout, "\nconfig OK");
                drop(stdout);
                if storage {
                    check::storage(&config)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(error) => config_error(&error),
        },
        Command::Run { config, layers } => match Config::load(&config) {
            Ok(config) => run::run(&config, &layers),
            Err(error) => config_error(&error),
        },
        Command::Batch {
            config,
            full,
            shards,
            shard,
            run: name,
            merge,
        } => {
            let mode = match (shards, shard, merge) {
                (None, None, false) if name.is_none() => run::BatchMode::Whole,
                (Some(shards), Some(index), false) if index < shards => run::BatchMode::Shard {
                    shards,
                    index,
                    name,
                },
                (Some(shards), Some(index), false) => {
                    eprintln!(
                        "error: --shard {index} is out of range: shards are 0 to {}",
                        shards - 1
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
                (shards, None, true) if name.is_some() || shards.is_some() => {
                    run::BatchMode::Merge { shards, name }
                }
                (_, _, true) => {
                    eprintln!(
                        "error: --merge needs the run: --run NAME, or --shards N for the default name"
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
                (Some(_), None, false) => {
                    eprintln!(
                        "error: --shards needs --shard I (the shard this process computes), or --merge"
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
                (None, _, false) => {
                    eprintln!("error: --shard and --run are for sharded runs: give --shards N too");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match Config::load(&config) {
                Ok(config) => run::batch(&config, full, mode),
                Err(error) => config_error(&error),
            }
        }
        Command::Dev {
            config,
            rate,
            format,
        } => {
            let builtin = config.is_none();
            if !builtin && format.is_some() {
                eprintln!(
                    "error: --format applies to the built-in example; a config names its source's format"
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            match load(config.as_deref()) {
                Ok(config) => dev::run(config, builtin, rate, format),
                Err(error) => config_error(&error),
            }
        }
        Command::Produce {
            config,
            source,
            rate,
            count,
            late_share,
            seed,
            format,
        } => match Config::load(&config) {
            Ok(config) => {
                if !(0.0..=1.0).contains(&late_share) {
                    eprintln!("error: --late-share {late_share} is outside 0..=1");
                    return ExitCode::from(EXIT_CONFIG);
                }
                let plan = braid_kafka::GeneratorPlan {
                    rate: rate.max(1),
                    count,
                    late_share,
                    seed,
                    encoder: braid_shared::format::encode::Encoder::Json,
                };
                produce::run(&config, &source, plan, format.map(Into::into))
            }
            Err(error) => config_error(&error),
        },
        Command::Bench { target } => bench(target),
        Command::Torture(args) => torture::run(args),
    }
}

fn bench(target: BenchTarget) -> ExitCode {
    let report = match target {
        BenchTarget::Speed {
            format: Some(format),
            events,
            ..
        } => {
            use braid_bench::formats::BenchFormat;
            let format = match format {
                cli::SpeedFormat::Avro => BenchFormat::Avro,
                cli::SpeedFormat::Protobuf => BenchFormat::Protobuf,
                cli::SpeedFormat::JsonNested => BenchFormat::JsonNested,
            };
            braid_bench::formats::run(format, events.max(1))
                .map(|report| report.to_string())
                .map_err(|e| e.to_string())
        }
        BenchTarget::Speed {
            config,
            events,
            end_to_end_events,
            brokers,
            stream_peers,
            format: None,
        } => match load(config.as_deref()) {
            Ok(config) => braid_bench::speed::run(
                &config,
                events.max(1),
                end_to_end_events.max(1),
                brokers.as_deref(),
                stream_peers.as_deref(),
            )
            .map(|report| report.to_string())
            .map_err(|e| e.to_string()),
            Err(error) => return config_error(&error),
        },
        BenchTarget::Serve {
            config,
            history,
            rate,
            seconds,
            ingest_rate,
            freshness_samples,
            pin,
            peers,
        } => match load(config.as_deref()) {
            Ok(config) => {
                let options = braid_bench::serve::Options {
                    peers,
                    history: history.max(1),
                    rate: rate.max(1),
                    seconds: seconds.max(1),
                    ingest_rate: ingest_rate.max(1),
                    freshness_samples: freshness_samples.max(1),
                    pin,
                };
                braid_bench::serve::run(&config, &options).map_err(|e| e.to_string())
            }
            Err(error) => return config_error(&error),
        },
        BenchTarget::Fraud {
            config,
            events,
            rounds,
            bursts,
            rate,
            seconds,
            ingest_rate,
            spread,
        } => match load(config.as_deref()) {
            Ok(config) => {
                let options = braid_bench::fraud::Options {
                    spread,
                    events: events.max(1),
                    rounds: rounds.max(1),
                    bursts: bursts.max(1),
                    rate: rate.max(1),
                    seconds: seconds.max(1),
                    ingest_rate: ingest_rate.max(1),
                };
                braid_bench::fraud::run(&config, &options).map_err(|e| e.to_string())
            }
            Err(error) => return config_error(&error),
        },
        BenchTarget::Audit {
            config,
            events,
            spacing_ms,
            requests,
        } => match load(config.as_deref()) {
            Ok(config) => {
                let options = braid_bench::audit::Options {
                    events: events.max(1),
                    spacing_ms: spacing_ms.max(1),
                    requests: requests.max(1),
                };
                braid_bench::audit::run(&config, &options).map_err(|e| e.to_string())
            }
            Err(error) => return config_error(&error),
        },
        BenchTarget::Batch {
            config,
            events,
            increment_percent,
            dir,
        } => match load(config.as_deref()) {
            Ok(config) => braid_bench::batch::run(
                &config,
                events.max(1),
                increment_percent.clamp(0.0, 100.0),
                dir.as_deref(),
            )
            .map_err(|e| e.to_string()),
            Err(error) => return config_error(&error),
        },
    };
    match report {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the config at `path`, or the built-in example (with `BRAID__*` overrides) without one.
fn load(path: Option<&std::path::Path>) -> braid_shared::Result<Config> {
    match path {
        Some(path) if path.as_os_str() != "-" => Config::load(path),
        _ => Config::from_toml_with_env(EXAMPLE_CONFIG, std::env::vars()),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BRAID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colors only on a terminal: a log redirected to a file reads as plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
