//! Why an answer could not be given. Typed, so that the one error-to-status map (`crate::error`)
//! decides what a client sees.

/// Why an answer could not be given.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("no view {0:?}")]
    UnknownView(String),

    /// The published snapshot does not hold the view (new or changed since the last run).
    #[error("{0}")]
    NotInSnapshot(String),

    /// The speed layer kept following newer snapshots than the one loaded, past every retry.
    #[error("{0}")]
    SnapshotChanging(String),

    #[error(
        "the answer has {rows} rows, over the limit of {max}: narrow from/to, add a coarser step, filter, group by fewer fields, or set limit"
    )]
    TooManyRows { rows: usize, max: usize },

    /// A bug or damaged state: what failed, never retried.
    #[error("{0}")]
    Internal(String),
}

impl From<braid_shared::Error> for AnswerError {
    fn from(error: braid_shared::Error) -> Self {
        match error {
            braid_shared::Error::UnknownView(view) => Self::UnknownView(view),
            braid_shared::Error::CoverageDropped(message) => Self::SnapshotChanging(message),
            other => Self::Internal(format!("merging the view's cells: {other}")),
        }
    }
}
