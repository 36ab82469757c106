//! The serving layer's errors, and the one place they become HTTP answers:
//! `{"error": {"code": "...", "message": "..."}}` with a 4xx or 5xx status.

use std::net::SocketAddr;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use braid_merge::answer::AnswerError;
use braid_shared::text::abbreviate;

use crate::sql::SqlError;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    #[error("accepting connections: {0}")]
    Accept(std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an answer is: the one place a failure becomes an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    NotFound,
    TooManyRequests,
    /// The work ran past its time limit and was stopped.
    Timeout,
    /// What was asked for is not there yet (an as-of offset the archive has not reached).
    Conflict,
    Internal,
    Unavailable,
    /// A refusal a middleware (body limit, timeout, router) answered with this status.
    Middleware(StatusCode),
}

impl ErrorKind {
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict => StatusCode::CONFLICT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Middleware(status) => status,
        }
    }
}

/// An answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_parameter`, `unknown_view`, `unauthorized`, ...
    pub code: String,
    /// What was wrong, naming the parameter or resource.
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind.http_status()
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }

    /// A bad query parameter: the message names it.
    pub fn parameter(name: &str, message: impl std::fmt::Display) -> Self {
        Self::bad_request("invalid_parameter", format!("{name}: {message}"))
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, code, message)
    }

    /// A failure of the server's own: `message` says what failed, never where on disk.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }

    /// The JSON answer for a status that a middleware produced without a body of ours.
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the request body is too large"),
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
                ("timeout", "the request took too long")
            }
            StatusCode::SERVICE_UNAVAILABLE => (
                "overloaded",
                "the server is at its limit of concurrent requests or the request timed out; retry",
            ),
            StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "this endpoint does not take that method",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "send the body as application/json",
            ),
            s if s.is_client_error() => ("bad_request", "the request is not valid"),
            _ => ("internal", "the server failed to answer"),
        };
        Self::new(ErrorKind::Middleware(status), code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (status, Json(body)).into_response()
    }
}

impl From<AnswerError> for ApiError {
    fn from(error: AnswerError) -> Self {
        let message = error.to_string();
        match error {
            AnswerError::UnknownView(_) => Self::not_found("unknown_view", message),
            AnswerError::NotInSnapshot(_) => Self::unavailable("view_not_in_snapshot", message),
            AnswerError::SnapshotChanging(_) => Self::unavailable("snapshot_changing", message),
            AnswerError::TooManyRows { .. } => Self::bad_request("too_many_rows", message),
            AnswerError::Internal(_) => Self::internal(message),
        }
    }
}

impl From<braid_store::Error> for ApiError {
    fn from(error: braid_store::Error) -> Self {
        match error {
            braid_store::Error::UnknownRun(id) => {
                Self::not_found("unknown_run", format!("no batch run {:?}", abbreviate(&id)))
            }
            braid_store::Error::QueueFull(_) => {
                Self::new(ErrorKind::TooManyRequests, "queue_full", error.to_string())
            }
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<braid_columnar::Error> for ApiError {
    fn from(error: braid_columnar::Error) -> Self {
        match error {
            braid_columnar::Error::Store(error) => error.into(),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<braid_merge::events::EventsError> for ApiError {
    fn from(error: braid_merge::events::EventsError) -> Self {
        use braid_merge::events::EventsError;
        match error {
            EventsError::BrokerUnavailable(why) => Self::unavailable("broker_unavailable", why),
            EventsError::Archive { what, reason } => {
                tracing::error!(error = %reason, "{what}");
                Self::internal(format!("{what} failed; the server log says why"))
            }
        }
    }
}

impl From<braid_merge::as_of::AsOfError> for ApiError {
    fn from(error: braid_merge::as_of::AsOfError) -> Self {
        use braid_merge::as_of::AsOfError;
        match error {
            AsOfError::NotArchived(why) => Self::new(ErrorKind::Conflict, "not_archived", why),
            AsOfError::Archive(reason) => {
                tracing::error!(error = %reason, "reading the archive for an as-of answer");
                Self::internal("reading the archive failed; the server log says why")
            }
            AsOfError::Merge(_) => Self::internal(error.to_string()),
        }
    }
}

impl From<SqlError> for ApiError {
    fn from(error: SqlError) -> Self {
        match error {
            SqlError::Refused(why) => Self::bad_request("sql_refused", why),
            SqlError::Failed(why) => Self::bad_request("sql_error", why),
            SqlError::Timeout(limit) => Self::new(
                ErrorKind::Timeout,
                "sql_timeout",
                format!(
                    "the query ran longer than serve.sql_timeout ({}) and was interrupted",
                    braid_shared::config::format_duration(limit)
                ),
            ),
            SqlError::Busy(slots) => Self::unavailable(
                "sql_busy",
                format!(
                    "{slots} SQL queries are running (serve.sql_concurrency); try again shortly"
                ),
            ),
            SqlError::Storage(why) => {
                tracing::error!(error = %why, "reading storage for a SQL query");
                Self::internal("reading storage failed; the server log says why")
            }
            SqlError::Answer(error) => error.into(),
            SqlError::Incomplete { table, missing } => Self::unavailable(
                "incomplete",
                format!(
                    "{table}: partitions {} are held by no live speed instance right now, so the \
                     table would miss their events; try again shortly",
                    missing.join(", ")
                ),
            ),
            SqlError::Internal(why) => {
                tracing::error!(error = %why, "SQL engine");
                Self::internal("the SQL engine failed; the server log says why")
            }
        }
    }
}

impl From<braid_merge::lineage::LineageError> for ApiError {
    fn from(error: braid_merge::lineage::LineageError) -> Self {
        use braid_merge::lineage::LineageError;
        match error {
            LineageError::NoCell { view, bucket_ms } => Self::not_found(
                "no_cell",
                format!(
                    "view {view:?} has no event of that key in the bucket starting {}",
                    braid_shared::text::format_time(bucket_ms)
                ),
            ),
            LineageError::Incomplete { missing } => Self::unavailable(
                "incomplete",
                format!(
                    "partitions {} are held by no live speed instance right now, so the cell's \
                     lineage would miss their events; try again shortly",
                    missing.join(", ")
                ),
            ),
            LineageError::Answer(error) => error.into(),
            LineageError::Archive(reason) => {
                tracing::error!(error = %reason, "reading the archive manifests for a lineage");
                Self::internal("reading the archive manifests failed; the server log says why")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misaligned_coverage_is_an_internal_error_not_a_retry() {
        let misaligned = braid_shared::Error::CoverageMisaligned(
            "coverage of payments/0 at offset 350 is not a multiple of the segment size 100"
                .to_owned(),
        );
        let answer = AnswerError::from(misaligned);
        assert!(matches!(answer, AnswerError::Internal(_)), "{answer:?}");
        let api = ApiError::from(answer);
        assert_eq!(api.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(api.code, "internal");
        assert!(api.message.contains("segment size"), "{}", api.message);

        let dropped = AnswerError::from(braid_shared::Error::CoverageDropped(
            "payments/0: events below offset 100 were dropped".to_owned(),
        ));
        assert!(matches!(dropped, AnswerError::SnapshotChanging(_)));
        assert_eq!(
            ApiError::from(dropped).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn storage_errors_name_keys_never_server_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_owned();
        let storage: std::sync::Arc<dyn braid_store::Storage> =
            std::sync::Arc::new(braid_store::LocalStorage::new(dir.path()));
        let history = braid_store::History::new(std::sync::Arc::clone(&storage));
        // A damaged record, and a record path that is a directory (an I/O error).
        std::fs::create_dir_all(dir.path().join("batch/history/run-2.json")).unwrap();
        std::fs::write(dir.path().join("batch/history/run-1.json"), b"{not json").unwrap();
        for (id, key) in [
            ("run-1", "batch/history/run-1.json"),
            ("run-2", "batch/history/run-2.json"),
        ] {
            let error = ApiError::from(history.get(id).unwrap_err());
            assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(!error.message.contains(&root), "{}", error.message);
            assert!(error.message.contains(key), "{}", error.message);
        }
    }

    #[test]
    fn long_ids_are_abbreviated() {
        let id = "a".repeat(5000);
        let message = ApiError::from(braid_store::Error::UnknownRun(id)).message;
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("5000 characters"), "{message}");
    }
}
