//! `POST /v1/fraud/score`: one event scored against the merged views as they are now, as if it
//! were the next event of its key; nothing is ingested. `GET /v1/fraud/alerts`: the alerts
//! raised while events are applied.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use braid_merge::alerts::{self, Filter};
use braid_merge::answer::Provenance;
use braid_merge::fraud;
use braid_shared::fraud::{Fired, FraudDef};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::query::{Params, parse_time};
use crate::state::{AppState, now_ms};

#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreAnswer {
    /// `1 - Π(1 - weight)` over the rules that fired, 0 to 1.
    pub score: f64,
    /// Whether the score reaches `fraud.alert_threshold`.
    pub alert: bool,
    /// Every rule, in configuration order.
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<Fired>,
    /// Feature name -> value (`null`: no value over the window, such as an empty average).
    #[schema(value_type = Object)]
    pub features: BTreeMap<String, Option<f64>>,
    /// `null` when no feature is configured.
    pub provenance: Option<Provenance>,
}

/// Scores one event of `fraud.source`, as it would appear on the topic.
#[utoipa::path(post, path = "/v1/fraud/score", tag = "fraud",
    request_body(content = Object, description = "one event of the fraud source, as on the topic"),
    responses(
        (status = 200, body = ScoreAnswer),
        (status = 400, body = ErrorBody, description = "not a valid event of the source; the message names the field"),
        (status = 404, body = ErrorBody, description = "no [fraud] section is configured"),
        (status = 503, body = ErrorBody, description = "a feature's view is not in the published snapshot yet"),
    ))]
pub async fn score(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<ScoreAnswer>, ApiError> {
    let (fraud, event) = scored_event(&state, &body)?;
    let started = std::time::Instant::now();
    let (score, features) =
        fraud::score(state.sources(), fraud, &event, &[], (true, now_ms())).await?;
    crate::metrics::scored_on_demand(started.elapsed(), score.alert);
    let names = fraud.features.iter().map(|f| f.name.clone());
    Ok(Json(ScoreAnswer {
        score: score.score,
        alert: score.alert,
        rules: score.rules,
        features: names.zip(features.values).collect(),
        provenance: features.provenance,
    }))
}

/// `[fraud]`, and `body` decoded as an event of its source that carries the key.
fn scored_event<'a>(
    state: &'a AppState,
    body: &[u8],
) -> Result<(&'a FraudDef, braid_shared::Event), ApiError> {
    let inner = &state.0;
    let (Some(fraud), Some(decoder)) = (&inner.config.fraud, &inner.fraud_decoder) else {
        return Err(not_configured());
    };
    let event = decoder.decode(body).map_err(|reason| {
        ApiError::bad_request(
            "invalid_event",
            format!(
                "not an event of source {:?}: {}",
                fraud.source.name,
                cut(&reason.to_string())
            ),
        )
    })?;
    if event
        .values
        .get(fraud.key_slot)
        .is_none_or(braid_shared::Value::is_null)
    {
        return Err(ApiError::bad_request(
            "invalid_event",
            format!(
                "the event has no `{}`, the key fraud scoring is by (fraud.key)",
                fraud.key
            ),
        ));
    }
    Ok((fraud, event))
}

fn not_configured() -> ApiError {
    ApiError::not_found(
        "fraud_not_configured",
        "fraud scoring is not configured (no [fraud] section)",
    )
}

/// A message cut to a readable length on a character boundary.
fn cut(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}...", &text[..at]),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Newest first.
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<braid_store::alerts::Alert>,
}

/// Alerts raised by scoring the applied events of `fraud.source`, newest first, kept for
/// `fraud.retention`. `from`/`to` bound the event time; `key` selects one `fraud.key` value.
#[utoipa::path(get, path = "/v1/fraud/alerts", tag = "fraud",
    params(
        ("from" = Option<String>, Query, description = "event time from (RFC 3339, epoch ms, now-D)"),
        ("to" = Option<String>, Query, description = "event time before"),
        ("key" = Option<String>, Query, description = "one value of fraud.key"),
        ("limit" = Option<usize>, Query, description = "1 to serve.max_rows, default 100"),
    ),
    responses(
        (status = 200, body = AlertList),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no [fraud] section is configured"),
    ))]
pub async fn alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let inner = &state.0;
    if inner.config.fraud.is_none() {
        return Err(not_configured());
    }
    let params = Params::parse(raw.as_deref())?;
    let (filter, limit) = alert_filter(&params, inner.config.serve.max_rows)?;
    if accepts_stream(&headers) {
        let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
        let logged = inner.backends.alerts_logged.clone();
        let storage = Arc::clone(&inner.storage);
        let stream = crate::alerts::follow(storage, filter, last.map(str::to_owned), logged).await;
        let beat = KeepAlive::new().interval(std::time::Duration::from_secs(15));
        return Ok(Sse::new(stream).keep_alive(beat).into_response());
    }
    let (storage, known) = (Arc::clone(&inner.storage), Arc::clone(&inner.known_alerts));
    let alerts =
        tokio::task::spawn_blocking(move || alerts::list(&*storage, &known, &filter, limit))
            .await
            .map_err(|e| ApiError::internal(format!("reading fraud alerts: {e}")))??;
    Ok(Json(AlertList { alerts }).into_response())
}

/// The event-time range, key and limit a list or stream of alerts asks for.
fn alert_filter(params: &Params, max_rows: usize) -> Result<(Filter, usize), ApiError> {
    params.only(&["from", "to", "key", "limit"])?;
    let now = now_ms();
    let bound = |name: &str, unbounded: i64| match params.get(name) {
        None => Ok(unbounded),
        Some(text) => parse_time(name, Some(text), now),
    };
    let filter = Filter {
        from: bound("from", i64::MIN)?,
        to: bound("to", i64::MAX)?,
        key: params.get("key").map(str::to_owned),
    };
    Ok((filter, params.limit(100, max_rows)?))
}

/// Whether the client asks for the live stream (`Accept: text/event-stream`).
fn accepts_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}
