//! The store's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A snapshot's cell file does not hold what its manifest says.
    #[error("snapshot file {}: {reason}", path.display())]
    SnapshotFile { path: PathBuf, reason: String },

    #[error("no batch run {0:?}")]
    UnknownRun(String),

    /// A run could not be queued.
    #[error("{0} batch runs are already queued; try again when one has finished")]
    QueueFull(usize),

    #[error("encoding {what}: {reason}")]
    Encode { what: &'static str, reason: String },

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
