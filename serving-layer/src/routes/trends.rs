//! `GET /v1/trends/{view}`: the keys whose metric over the last window rises most above its
//! baseline rate (SPEC.md section 4.1).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use braid_shared::config::{format_duration, parse_duration};
use braid_shared::{CellQuery, MetricExpr};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody, abbreviate};
use crate::query::{Params, parse_time};
use crate::state::{AppState, now_ms};
use braid_merge::answer::{self, Provenance, Regroup};
use braid_shared::time::format_time;

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
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<TrendAnswer>, ApiError> {
    let inner = &state.0;
    let config = &inner.config;
    let (view, source) = super::view_and_source(config, &name)?;
    let params = Params::parse(raw.as_deref())?;
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
    let window = span(&params, "window", view.granularity_ms)?;
    let baseline = span(&params, "baseline", view.granularity_ms)?;
    let now = now_ms();
    let at = match params.get("at") {
        None => now,
        Some(text) => parse_time("at", Some(text), now)?,
    };
    let limit = params.limit(DEFAULT_LIMIT, config.serve.max_rows)?;
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
    let bad_range =
        || ApiError::parameter("at", "the window and baseline reach outside the time range");
    let from = at.checked_sub(window).ok_or_else(bad_range)?;
    let baseline_from = from.checked_sub(baseline).ok_or_else(bad_range)?;

    let sources = state.sources();
    let keep: Vec<usize> = (0..view.group_by.len()).collect();
    let grouped = answer::grouped(
        sources,
        view,
        &source.topic,
        &CellQuery {
            from_ms: baseline_from,
            to_ms: at,
            filters: Vec::new(),
        },
        // Buckets of the granularity, so the window and the baseline can be told apart.
        &Regroup {
            from_ms: baseline_from,
            step_ms: Some(view.granularity_ms),
            group_by: keep,
        },
        now,
    )
    .await?;
    // Per key: (metric over the window, metric over the baseline).
    let mut totals: std::collections::BTreeMap<&[braid_shared::Value], (f64, f64)> =
        std::collections::BTreeMap::new();
    for ((bucket, key), states) in &grouped.groups {
        let value = states[metric].finalize(expr).as_f64().unwrap_or(0.0);
        let entry = totals.entry(key.as_slice()).or_default();
        if *bucket >= from {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    let scale = window as f64 / baseline as f64;
    let mut trends: Vec<Trend> = totals
        .into_iter()
        .map(|(key, (value, base))| {
            let baseline_rate = base * scale;
            Trend {
                key: view
                    .group_by
                    .iter()
                    .zip(key)
                    .map(|(field, v)| (field.name.clone(), v.to_json()))
                    .collect(),
                value,
                baseline_rate,
                ratio: value / baseline_rate.max(1.0),
                z: (value - baseline_rate) / (baseline_rate + 1.0).sqrt(),
            }
        })
        .filter(|t| t.baseline_rate >= min_baseline)
        .collect();
    // Highest z first; ties keep the key order.
    trends.sort_by(|a, b| b.z.total_cmp(&a.z));
    trends.truncate(limit);
    Ok(Json(TrendAnswer {
        view: view.name.clone(),
        metric: metric_name.to_owned(),
        from: format_time(from),
        at: format_time(at),
        baseline_from: format_time(baseline_from),
        trends,
        provenance: grouped.provenance,
    }))
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
