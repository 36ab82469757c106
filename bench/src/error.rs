//! Why a benchmark could not run.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The benchmark's own setup or a check of what it measured failed.
    #[error("{0}")]
    Setup(String),

    #[error(transparent)]
    Speed(#[from] braid_speed::Error),

    #[error(transparent)]
    Batch(#[from] braid_batch::Error),

    #[error(transparent)]
    Serving(#[from] braid_serving::Error),

    #[error(transparent)]
    Store(#[from] braid_store::Error),

    #[error(transparent)]
    Storage(#[from] braid_store::StorageError),

    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),

    #[error(transparent)]
    Io(#[from] std::io::Error),

    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    #[error("http: {0}")]
    Http(#[from] hyper::Error),

    #[error("http request: {0}")]
    Request(#[from] hyper::http::Error),

    #[error("a task of the benchmark failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    #[error("an address: {0}")]
    Address(#[from] std::net::AddrParseError),
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Returns early with a [`BenchError::Setup`] of the formatted message.
macro_rules! bail {
    ($($message:tt)*) => {
        return Err($crate::error::BenchError::Setup(format!($($message)*)))
    };
}
pub(crate) use bail;

/// What was being done when an `Option` came back empty or a `Result` failed.
pub(crate) trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: &str) -> Result<T> {
        self.ok_or_else(|| BenchError::Setup(what.to_owned()))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| BenchError::Setup(what()))
    }
}

impl<T, E: Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| BenchError::Setup(format!("{what}: {e}")))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| BenchError::Setup(format!("{}: {e}", what())))
    }
}
