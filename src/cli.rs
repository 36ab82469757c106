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
    /// Measure a layer's throughput, latency and memory on this machine.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
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
    },
}
