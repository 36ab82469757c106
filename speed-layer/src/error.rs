//! The speed layer's error type.

use std::path::PathBuf;

use braid_shared::TopicPartition;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },

    #[error(
        "{tp}: the broker's offsets end at {high_watermark} but the checkpoint continues from {checkpoint}; \
         the topic was deleted and recreated or truncated. Counting it again would double count: remove {} \
         to rebuild this partition from the broker",
        path.display()
    )]
    OffsetsBehindCheckpoint {
        tp: TopicPartition,
        high_watermark: i64,
        checkpoint: i64,
        path: PathBuf,
    },

    /// A bug or an earlier panic left the layer unable to go on.
    #[error("internal: {0}")]
    Internal(String),

    #[error("benchmark: {0}")]
    Bench(String),

    #[error(transparent)]
    Shared(#[from] braid_shared::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
