//! The columnar crate's error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A snapshot's cell file does not hold what its manifest says.
    #[error("snapshot file {key}: {reason}")]
    SnapshotFile { key: String, reason: String },

    /// An archive file could not be read as Parquet.
    #[error("reading archive files: {0}")]
    Parquet(String),

    /// A file an archive manifest lists is gone or damaged.
    #[error("archive file {}: {reason}", path.display())]
    ArchiveFile {
        path: std::path::PathBuf,
        reason: String,
    },

    /// A stored object does not hold what its format says.
    #[error("{what} {key}: {reason}")]
    Codec {
        what: &'static str,
        key: String,
        reason: String,
    },

    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),

    #[error(transparent)]
    Shared(#[from] braid_shared::Error),

    #[error(transparent)]
    Store(#[from] braid_store::Error),

    #[error(transparent)]
    Storage(#[from] braid_store::StorageError),

    /// A bug: data this crate wrote does not read back as it should.
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
