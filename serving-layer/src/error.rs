//! The serving layer's errors, and the one place they become HTTP answers:
//! `{"error": {"code": "...", "message": "..."}}` with a 4xx or 5xx status.

use std::net::SocketAddr;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

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

/// An answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
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
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A bad query parameter: the message names it.
    pub fn parameter(name: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!("{name}: {message}"),
        )
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
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
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<braid_store::Error> for ApiError {
    fn from(error: braid_store::Error) -> Self {
        match error {
            braid_store::Error::UnknownRun(id) => {
                Self::not_found("unknown_run", format!("no batch run {id:?}"))
            }
            braid_store::Error::QueueFull(_) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                error.to_string(),
            ),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<braid_shared::Error> for ApiError {
    fn from(error: braid_shared::Error) -> Self {
        match error {
            braid_shared::Error::UnknownView(view) => {
                Self::not_found("unknown_view", format!("no view {view:?}"))
            }
            braid_shared::Error::Coverage(message) => {
                Self::unavailable("snapshot_changing", message)
            }
            other => Self::internal(other.to_string()),
        }
    }
}
