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

/// Why the speed endpoint did not answer with cells: the one place its answers get a status.
/// A serving instance reads 409 as "a newer snapshot is out" and anything else as a failure.
#[derive(Debug)]
pub(crate) enum Refusal {
    BadRequest(String),
    /// The read failed: the view is unknown, or the coverage asked for was already dropped.
    Read(braid_shared::Error),
    Internal(String),
}

impl axum::response::IntoResponse for Refusal {
    fn into_response(self) -> axum::response::Response {
        use axum::http::StatusCode;
        let (status, message) = match self {
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::Read(braid_shared::Error::CoverageDropped(message)) => {
                (StatusCode::CONFLICT, message)
            }
            Self::Read(braid_shared::Error::UnknownView(view)) => {
                (StatusCode::NOT_FOUND, format!("no view {view:?}"))
            }
            Self::Read(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
            Self::Internal(message) => (StatusCode::INTERNAL_SERVER_ERROR, message),
        };
        (status, message).into_response()
    }
}
