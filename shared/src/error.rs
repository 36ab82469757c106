//! The crate's one error type.

use std::fmt;
use std::path::PathBuf;

/// One problem found while validating a configuration: the key it concerns and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted path of the offending key, e.g. `view[card_spend].granularity`.
    pub key: String,
    /// What is wrong, naming the bad value.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Errors raised by the shared contract: configuration, metric expressions and state encodings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {}: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("invalid config: {0}")]
    ConfigSyntax(String),

    #[error("invalid config ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, list(.0))]
    ConfigInvalid(Vec<ConfigIssue>),

    #[error("cannot decode {what}: {reason}")]
    Codec { what: &'static str, reason: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("unknown view {0:?}")]
    UnknownView(String),

    /// A consumer group assigned a partition of a topic that no source reads.
    #[error("assigned {0}, a topic no source reads")]
    Unrouted(crate::TopicPartition),

    /// The speed layer has dropped events a read's coverage needs, for a newer snapshot: read
    /// the snapshot pointer again and ask at its coverage.
    #[error("coverage: {0}")]
    CoverageDropped(String),

    /// A coverage off the segment grid: a bug in whoever made it, never retried.
    #[error("coverage: {0}")]
    CoverageMisaligned(String),

    #[error("cannot merge {what}: {reason}")]
    Mismatch { what: &'static str, reason: String },
}

fn list(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|issue| format!("  - {issue}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a check found wrong: a state, sketch or record that breaks its invariants, a value
/// that is not what its field takes, or the first difference of two states compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
