//! `GET /metrics`, `/healthz`, `/readyz`, `/openapi.json`, the dashboard page `/` and its
//! static assets (`/assets/*`: the vendored uPlot charting library and its licence).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// What is still missing.
    pub waiting_for: Vec<String>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the published snapshot has been read, and the speed layer (when it runs here)
/// holds partitions.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let inner = &state.0;
    let mut waiting_for = Vec::new();
    if !inner.snapshot.is_ready() {
        waiting_for.push("the published batch snapshot to be read".to_owned());
    }
    if let Some(speed) = &inner.backends.speed
        && speed.status().is_empty()
    {
        waiting_for.push("the speed layer to be assigned partitions".to_owned());
    }
    if let Some(registry) = &inner.config.registry
        && let Some(why) = registry.down()
    {
        waiting_for.push(format!(
            "the schema registry at {} to answer ({why})",
            registry.url()
        ));
    }
    let ready = waiting_for.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, waiting_for }))
}

/// Prometheus metrics of every layer in this process.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String), (status = 503, body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let handle = state.0.backends.metrics.as_ref().ok_or_else(|| {
        ApiError::unavailable("metrics_unavailable", "no metrics recorder in this process")
    })?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response())
}

/// This API's OpenAPI document.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_default(),
    )
        .into_response()
}

/// The live dashboard page.
pub async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../dashboard.html"))
}

/// The page's static files, compiled in: no CDN, no build step.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_str!("../../assets/uPlot.LICENSE"),
    ),
];

/// One of the page's static files.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(file, _, _)| *file == name)
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_asset",
                format!("no asset {:?}", braid_shared::text::abbreviate(&name)),
            )
        })?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        *body,
    )
        .into_response())
}
