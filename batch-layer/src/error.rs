//! The batch layer's error type.

use std::path::PathBuf;

use braid_shared::TopicPartition;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] braid_kafka::Error),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),

    /// A file the archive manifest lists is gone or damaged.
    #[error("archive file {}: {reason}", path.display())]
    ArchiveFile { path: PathBuf, reason: String },

    #[error(
        "{tp}: the archive ends at offset {archived}, behind the published snapshot's coverage {covered}; \
         the archive was moved or truncated. Run with the archive restored, or remove batch/CURRENT.json \
         and the speed checkpoints to rebuild every layer"
    )]
    ArchiveBehindSnapshot {
        tp: TopicPartition,
        archived: i64,
        covered: i64,
    },

    /// A sharded run asked for what cannot be: a bad run name or shard, a run started with
    /// other settings, shards missing at a merge.
    #[error("sharded run: {0}")]
    BadShardedRun(String),

    /// A bug or an earlier panic left the layer unable to go on.
    #[error("internal: {0}")]
    Internal(String),

    #[error(transparent)]
    Shared(#[from] braid_shared::Error),

    #[error(transparent)]
    Store(#[from] braid_store::Error),

    #[error(transparent)]
    Columnar(#[from] braid_columnar::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<braid_store::StorageError> for Error {
    fn from(error: braid_store::StorageError) -> Self {
        Self::Store(error.into())
    }
}
