//! The speed layer's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] braid_kafka::Error),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A bug or an earlier panic left the layer unable to go on.
    #[error("internal: {0}")]
    Internal(String),

    /// The storage `storage.url` names could not be opened.
    #[error("opening storage: {0}")]
    OpenStorage(String),

    #[error(transparent)]
    Shared(#[from] braid_shared::Error),

    #[error(transparent)]
    Store(#[from] braid_store::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
