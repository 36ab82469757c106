//! The `braid` binary: parses the command line, loads the config, wires the layers.
//!
//! - `cli`: commands and options; `check`: the `braid check` report.

mod check;
mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use braid_shared::Config;
use clap::Parser as _;

use cli::{BenchTarget, Cli, Command, LogFormat};

/// Many small, long-lived allocations (cells, keys, sketches): mimalloc keeps them compact.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The built-in example config, used when no `--config` is given.
pub const EXAMPLE_CONFIG: &str = include_str!("../deploy/config/example.toml");

/// Exit code for bad usage or config (clap uses the same for usage errors).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Check { config } => match load(config.as_deref()) {
            Ok(config) => {
                let mut stdout = std::io::stdout().lock();
                let _ = write!(stdout, "{}", check::describe(&config));
                let _ = writeln!(stdout, "\nconfig OK");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Bench {
            target:
                BenchTarget::Speed {
                    config,
                    events,
                    end_to_end_events,
                },
        } => {
            let config = match load(config.as_deref()) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match braid_speed::bench::run(&config, events.max(1), end_to_end_events.max(1)) {
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
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
