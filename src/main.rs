//! The `braid` binary: parses the command line, loads the config, wires the layers.
//!
//! - `cli`: commands and options; `check`: the `braid check` report.

mod check;
mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use braid_shared::Config;
use clap::Parser as _;

use cli::{Cli, Command, LogFormat};

/// The built-in example config, used when no `--config` is given.
pub const EXAMPLE_CONFIG: &str = include_str!("../deploy/config/example.toml");

/// Exit code for bad usage or config (clap uses the same for usage errors).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Check { config } => {
            let loaded = match config.as_deref() {
                Some(path) if path.as_os_str() != "-" => Config::load(path),
                _ => Config::from_toml_with_env(EXAMPLE_CONFIG, std::env::vars()),
            };
            match loaded {
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
            }
        }
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
