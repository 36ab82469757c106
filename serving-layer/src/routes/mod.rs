//! The router: every endpoint, the limits that are always on, auth, metrics, and JSON errors for
//! whatever a middleware refuses.
//!
//! `views`: definitions and merged rows. `trends`: keys rising above their baseline. `fraud`:
//! on-demand scores. `batch`: runs. `status`: status and rejected events. `lineage`: where a cell's number comes from.
//! `ops`: metrics, health, readiness, the OpenAPI document, the dashboard.

mod as_of;
mod batch;
mod events;
mod fraud;
mod lineage;
mod ops;
mod sql;
mod status;
mod trends;
mod views;

use std::time::Instant;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Braid", description = "Exact merged answers of batch and speed views over Kafka"),
    paths(
        views::list_views,
        views::get_view,
        trends::trends,
        fraud::score,
        fraud::alerts,
        batch::start_run,
        batch::list_runs,
        batch::get_run,
        status::status,
        status::rejected,
        lineage::lineage,
        events::events,
        sql::sql,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// Declares the optional bearer key.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

/// Body size, request time and concurrency (refused with 503 when full), as one layer stack.
macro_rules! limits {
    ($slots:expr, $timeout:expr, $max_body_bytes:expr) => {
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|error: tower::BoxError| async move {
                if error.is::<tower::load_shed::error::Overloaded>() {
                    crate::metrics::refused_concurrency();
                }
                ApiError::for_status(StatusCode::SERVICE_UNAVAILABLE)
            }))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::with_semaphore($slots))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                $timeout,
            ))
            .layer(DefaultBodyLimit::max($max_body_bytes))
    };
}

/// The whole API with its limits: body size, request time, concurrency (refused with 503 when
/// full), optional keys.
pub fn router(state: AppState) -> Router {
    let serve = &state.0.config.serve;
    crate::metrics::register_server();
    // One semaphore for every route (`Router::layer` wraps each route on its own).
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(serve.max_concurrency));
    // A SQL query has its own limit (`serve.sql_timeout`, answered 408), on top of the time to
    // read its body and gather its tables.
    let sql_timeout = serve.request_timeout.0 + serve.sql_timeout.0;
    let sql = Router::new()
        .route("/v1/sql", axum::routing::post(sql::sql))
        .layer(limits!(
            std::sync::Arc::clone(&slots),
            sql_timeout,
            serve.max_body_bytes
        ));
    Router::new()
        .route("/v1/views", get(views::list_views))
        .route("/v1/views/{view}", get(views::get_view))
        .route("/v1/trends/{view}", get(trends::trends))
        .route("/v1/fraud/score", axum::routing::post(fraud::score))
        .route("/v1/fraud/alerts", get(fraud::alerts))
        .route(
            "/v1/batch/runs",
            get(batch::list_runs).post(batch::start_run),
        )
        .route("/v1/batch/runs/{id}", get(batch::get_run))
        .route("/v1/status", get(status::status))
        .route("/v1/rejected/{source}", get(status::rejected))
        .route("/v1/lineage/{view}", get(lineage::lineage))
        .route("/v1/events/{source}", get(events::events))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi))
        .route("/", get(ops::dashboard))
        .route("/assets/{file}", get(ops::asset))
        .layer(limits!(
            slots,
            serve.request_timeout.0,
            serve.max_body_bytes
        ))
        .merge(sql)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_key,
        ))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Records the request's metrics, and turns an error answer without a JSON body (a refused
/// body, a timeout, no such route) into the JSON error every client expects.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let in_flight = crate::metrics::InFlight::enter();
    let response = next.run(request).await;
    drop(in_flight);
    let status = response.status();
    crate::metrics::request(&route, status.as_u16(), started.elapsed());
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        return ApiError::for_status(status).into_response();
    }
    response
}
