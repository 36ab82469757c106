//! Command-line interface: the `braid` commands and their options.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    },
}
