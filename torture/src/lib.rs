//! `braid torture`: Braid proven by seeded randomized fault injection. A scenario is a seed;
//! from it [`scenario::Scenario::draw`] draws a workload, the processes and a fault schedule,
//! [`run::run`] runs them for real (librdkafka's mock cluster, `braid` processes on local
//! storage) and checks every answer it collected against an oracle folded from what the broker
//! acknowledged, and liveness after the faults end. [`sweep`] runs many and sums them up.

pub mod audit;
mod formats;
pub mod run;
pub mod scenario;
pub mod sweep;

use std::path::{Path, PathBuf};

/// Why the harness itself could not run a scenario (never a wrong answer: those are
/// failures of the scenario's outcome).
#[derive(Debug, thiserror::Error)]
pub enum TortureError {
    #[error("the mock Kafka cluster: {0}")]
    Broker(rdkafka::error::KafkaError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("the scenario's config: {0}")]
    Config(String),

    #[error("{0}")]
    NotReady(String),

    #[error("a harness thread panicked")]
    Poisoned,

    /// The broker's acknowledgements leave offsets unaccounted for (a produce batch written
    /// twice after an injected error, its first copy never acknowledged): what the log holds is
    /// unknown, so no answer can be judged.
    #[error("{0}")]
    Unjudgeable(String),
}

impl TortureError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}
