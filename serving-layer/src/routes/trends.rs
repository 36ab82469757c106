//! `GET /v1/trends/{view}`: the keys whose metric over the last window rises most above its
//! baseline rate (`braid_merge::trends` finds them).

use axum::Json;
use axum::extract::State;
use braid_merge::answer::Provenance;
use braid_merge::trends::{self, TrendQuery};
use braid_shared::config::{format_duration, parse_duration};
use braid_shared::text::format_time;
use braid_shared::{MetricExpr, ViewDef};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use braid_shared::text::abbreviate;

use crate::error::{ApiError, ErrorBody};
use crate::extract::ViewRequest;
use crate::query::{Params, parse_time};
use crate::state::{AppState, now_ms};

/// Keys answered when `limit` is not given.
const DEFAULT_LIMIT: usize = 10;

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TrendParams {
    /// A `count` or `sum` metric of the view.
    metric: String,
    /// The recent window, a multiple of the view's granularity (`10m`, `1h`).
    window: String,
    /// The baseline before the window, a multiple of the view's granularity (`24h`).
    baseline: String,
    /// End of the window (default now): RFC 3339, epoch ms, or `now[-duration]`.
    at: Option<String>,
    /// Keys answered, 1 to `serve.max_rows` (default 10).
    limit: Option<usize>,
    /// Keys whose baseline rate is below this are left out (default 0).
    min_baseline: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrendAnswer {
    pub view: String,
    pub metric: String,
    /// The window `[from, at)` and the baseline `[baseline_from, from)`.
    pub from: String,
    pub at: String,
    pub baseline_from: String,
    pub trends: Vec<Trend>,
    pub provenance: Provenance,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Trend {
    /// The group fields of the key.
    #[schema(value_type = Object)]
    pub key: serde_json::Map<String, serde_json::Value>,
    /// The metric over the window.
    pub value: f64,
    /// The metric over the baseline, scaled to one window (`× window / baseline`).
    pub baseline_rate: f64,
    /// `value / max(baseline_rate, 1)`.
    pub ratio: f64,
    /// `(value - baseline_rate) / sqrt(baseline_rate + 1)`; the order, descending.
    pub z: f64,
}

/// The keys of a view trending up.
#[utoipa::path(get, path = "/v1/trends/{view}", tag = "views",
    params(("view" = String, Path, description = "the view's name"), TrendParams),
    responses(
        (status = 200, body = TrendAnswer),
        (status = 400, body = ErrorBody, description = "a bad parameter, or a metric that is not a count or sum"),
        (status = 404, body = ErrorBody, description = "no such view"),
        (status = 503, body = ErrorBody, description = "the view is not in the published snapshot yet"),
    ))]
pub async fn trends(
    State(state): State<AppState>,
    request: ViewRequest,
) -> Result<Json<TrendAnswer>, ApiError> {
    let ViewRequest {
        view,
        source,
        params,
    } = request;
    let now = now_ms();
    let query = parse(&view, &params, now, state.0.config.serve.max_rows)?;
    let found = trends::trends(state.sources(), &view, &source.topic, &query, now).await?;
    let key = |values: Vec<braid_shared::Value>| {
        let fields = view.group_by.iter().map(|f| f.name.clone());
        fields
            .zip(values.iter().map(braid_shared::Value::to_json))
            .collect()
    };
    Ok(Json(TrendAnswer {
        view: view.name.clone(),
        metric: view.metrics[query.metric].name.clone(),
        from: format_time(query.from_ms()),
        at: format_time(query.at_ms),
        baseline_from: format_time(query.baseline_from_ms()),
        trends: found
            .trends
            .into_iter()
            .map(|t| Trend {
                key: key(t.key),
                value: t.value,
                baseline_rate: t.baseline_rate,
                ratio: t.ratio,
                z: t.z,
            })
            .collect(),
        provenance: found.provenance,
    }))
}

/// The request's metric (a count or sum of the view), spans, end, limit and minimum baseline.
fn parse(
    view: &ViewDef,
    params: &Params,
    now: i64,
    max_rows: usize,
) -> Result<TrendQuery, ApiError> {
    params.only(&[
        "metric",
        "window",
        "baseline",
        "at",
        "limit",
        "min_baseline",
    ])?;
    let metric_name = params.get("metric").ok_or_else(|| {
        ApiError::parameter("metric", "is required (a count or sum metric of the view)")
    })?;
    let metric = view
        .metrics
        .iter()
        .position(|m| m.name == metric_name)
        .ok_or_else(|| {
            let known: Vec<&str> = view.metrics.iter().map(|m| m.name.as_str()).collect();
            ApiError::parameter(
                "metric",
                format!(
                    "{:?} is not a metric of view {:?} (metrics: {})",
                    abbreviate(metric_name),
                    view.name,
                    known.join(", ")
                ),
            )
        })?;
    let expr = &view.metrics[metric].expr;
    if !matches!(expr, MetricExpr::Count | MetricExpr::Sum { .. }) {
        return Err(ApiError::parameter(
            "metric",
            format!("{metric_name:?} is {expr}; trends are for count and sum metrics only"),
        ));
    }
    let window_ms = span(params, "window", view.granularity_ms)?;
    let baseline_ms = span(params, "baseline", view.granularity_ms)?;
    let at_ms = match params.get("at") {
        None => now,
        Some(text) => parse_time("at", Some(text), now)?,
    };
    let min_baseline = match params.get("min_baseline") {
        None => 0.0,
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| {
                ApiError::parameter(
                    "min_baseline",
                    format!("{:?} is not a number of at least 0", abbreviate(text)),
                )
            })?,
    };
    if at_ms
        .checked_sub(window_ms)
        .and_then(|from| from.checked_sub(baseline_ms))
        .is_none()
    {
        return Err(ApiError::parameter(
            "at",
            "the window and baseline reach outside the time range",
        ));
    }
    Ok(TrendQuery {
        metric,
        window_ms,
        baseline_ms,
        at_ms,
        limit: params.limit(DEFAULT_LIMIT, max_rows)?,
        min_baseline,
    })
}

/// A duration parameter that is a whole number of the view's buckets.
fn span(params: &Params, name: &str, granularity_ms: i64) -> Result<i64, ApiError> {
    let text = params
        .get(name)
        .ok_or_else(|| ApiError::parameter(name, "is required (a duration such as 10m or 24h)"))?;
    let ms = parse_duration(text)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            ApiError::parameter(
                name,
                format!(
                    "{:?} is not a duration such as 10m or 24h",
                    abbreviate(text)
                ),
            )
        })?;
    if ms % granularity_ms != 0 {
        return Err(ApiError::parameter(
            name,
            format!(
                "{text} is not a multiple of the view's granularity {}",
                format_duration(std::time::Duration::from_millis(
                    granularity_ms.unsigned_abs()
                ))
            ),
        ));
    }
    Ok(ms)
}
