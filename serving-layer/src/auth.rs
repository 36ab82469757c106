//! Optional bearer API keys (`serve.api_keys`). Keys are compared in constant time, and every
//! key is compared, so the time taken tells nothing about which key nearly matched.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ErrorKind};
use crate::state::AppState;

/// Paths answered without a key (and `/assets/*`, the page's static files): they hold no data
/// (metric labels are bounded names, never event values), so probes and Prometheus need no key.
const OPEN: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/"];

pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let keys = &state.0.config.serve.api_keys;
    let path = request.uri().path();
    if keys.is_empty() || OPEN.contains(&path) || path.starts_with("/assets/") {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return refuse("this server requires `Authorization: Bearer <key>`");
    };
    let matched = keys.iter().fold(subtle::Choice::from(0), |found, key| {
        found | key.as_bytes().ct_eq(presented.as_bytes())
    });
    if bool::from(matched) {
        next.run(request).await
    } else {
        refuse("the API key is not valid")
    }
}

fn refuse(message: &str) -> Response {
    let mut response =
        ApiError::new(ErrorKind::Unauthorized, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
