//! `POST /v1/fraud/score`: one event scored against the merged views as they are now, as if it
//! were the next event of its key; nothing is ingested. `GET /v1/fraud/alerts`: the alerts
//! raised while events are applied.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use braid_shared::fraud::Fired;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, now_ms};
use braid_merge::answer::Provenance;
use braid_merge::fraud;

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
    let inner = &state.0;
    let (Some(fraud), Some(decoder)) = (&inner.config.fraud, &inner.fraud_decoder) else {
        return Err(ApiError::not_found(
            "fraud_not_configured",
            "fraud scoring is not configured (no [fraud] section)",
        ));
    };
    let event = decoder.decode(&body).map_err(|reason| {
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
    let sources = state.sources();
    let started = std::time::Instant::now();
    let (score, features) = fraud::score(sources, fraud, &event, &[], (true, now_ms())).await?;
    crate::metrics::scored_on_demand(started.elapsed(), score.alert);
    Ok(Json(ScoreAnswer {
        score: score.score,
        alert: score.alert,
        rules: score.rules,
        features: fraud
            .features
            .iter()
            .zip(features.values)
            .map(|(f, v)| (f.name.clone(), v))
            .collect(),
        provenance: features.provenance,
    }))
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
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<axum::response::Response, ApiError> {
    let inner = &state.0;
    if inner.config.fraud.is_none() {
        return Err(ApiError::not_found(
            "fraud_not_configured",
            "fraud scoring is not configured (no [fraud] section)",
        ));
    }
    let params = crate::query::Params::parse(raw.as_deref())?;
    params.only(&["from", "to", "key", "limit"])?;
    let now = now_ms();
    let from = match params.get("from") {
        None => i64::MIN,
        Some(text) => crate::query::parse_time("from", Some(text), now)?,
    };
    let to = match params.get("to") {
        None => i64::MAX,
        Some(text) => crate::query::parse_time("to", Some(text), now)?,
    };
    let limit = params.limit(100, inner.config.serve.max_rows)?;
    let key = params.get("key").map(str::to_owned);
    let filter = crate::alerts::Filter { from, to, key };
    let wants_stream = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        let last = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let stream = crate::alerts::follow(
            std::sync::Arc::clone(&inner.storage),
            filter,
            last,
            inner.backends.alerts_logged.clone(),
        )
        .await;
        return Ok(axum::response::IntoResponse::into_response(
            axum::response::sse::Sse::new(stream).keep_alive(
                axum::response::sse::KeepAlive::new().interval(std::time::Duration::from_secs(15)),
            ),
        ));
    }
    let storage = std::sync::Arc::clone(&inner.storage);
    let (mut alerts, unreadable) =
        tokio::task::spawn_blocking(move || braid_store::alerts::read_all(storage.as_ref()))
            .await
            .map_err(|e| ApiError::internal(format!("reading fraud alerts: {e}")))??;
    if unreadable > 0 {
        tracing::warn!(unreadable, "fraud alerts that cannot be read were skipped");
    }
    alerts.retain(|a| filter.keeps(a));
    alerts.sort_by(|a, b| {
        (b.raised_at_ms, &b.partition, b.offset).cmp(&(a.raised_at_ms, &a.partition, a.offset))
    });
    alerts.truncate(limit);
    Ok(axum::response::IntoResponse::into_response(Json(
        AlertList { alerts },
    )))
}
