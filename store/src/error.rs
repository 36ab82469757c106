//! The store's error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no batch run {0:?}")]
    UnknownRun(String),

    /// A run could not be queued.
    #[error("{0} batch runs are already queued; try again when one has finished")]
    QueueFull(usize),

    /// Another batch run holds the run lease, or this one lost it.
    #[error("{0}")]
    RunBusy(String),

    #[error("encoding {what}: {reason}")]
    Encode { what: &'static str, reason: String },

    #[error(transparent)]
    Shared(#[from] braid_shared::Error),

    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),

    /// A stored object does not hold what its format says.
    #[error("{what} {key}: {reason}")]
    Codec {
        what: &'static str,
        key: String,
        reason: String,
    },

    /// A file an archive manifest lists is gone or damaged.
    #[error("archive file {}: {reason}", path.display())]
    ArchiveFile {
        path: std::path::PathBuf,
        reason: String,
    },

    /// A bug: data this crate wrote does not read back as it should.
    #[error("internal: {0}")]
    Internal(String),

    /// Another writer replaced an object this one holds: this writer no longer owns it.
    #[error("{key} was replaced by another writer; this process no longer owns it")]
    Conflict { key: String },
}

impl Error {
    pub(crate) fn codec(what: &'static str, key: &str) -> impl FnOnce(String) -> Self {
        let key = key.to_owned();
        move |reason| Self::Codec { what, key, reason }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
