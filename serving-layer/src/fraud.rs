//! Fraud features and scores: each feature is a merged point read (batch ⊕ speed, through the
//! answer module) of one view for the event's key over the feature's window, so a 30-day
//! profile costs one lookup per bucket of the key, never a scan of other keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_shared::aggregate::MetricState;
use braid_shared::fraud::{FraudDef, Score};
use braid_shared::{CellQuery, Event, ViewState};

use crate::answer::{self, AnswerError, Provenance, Regroup, Sources};

/// Feature values of one event, and where they were read from.
pub struct Features {
    /// By feature index; `None`: the metric has no value over the window (an empty average).
    pub values: Vec<Option<f64>>,
    /// `None` when no feature is configured (rules over the event's own fields only).
    pub provenance: Option<Provenance>,
}

/// Reads every feature of `fraud` for `event`, counting `prior` (events of its key not yet in
/// the views, in order) and then the event as the next of its key. `event` must carry the key
/// (checked by callers).
pub async fn features(
    sources: Sources<'_>,
    fraud: &FraudDef,
    event: &Event,
    prior: &[&Event],
    now_ms: i64,
) -> Result<Features, AnswerError> {
    let key = event
        .values
        .get(fraud.key_slot)
        .cloned()
        .unwrap_or(braid_shared::Value::Null);
    let mut values = vec![None; fraud.features.len()];
    let mut provenance = None;
    // One read per view, over the longest window of its features.
    let mut by_view: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, feature) in fraud.features.iter().enumerate() {
        by_view.entry(&feature.view.name).or_default().push(i);
    }
    for indices in by_view.values() {
        let view = &fraud.features[indices[0]].view;
        let (from_ms, to_ms) = indices
            .iter()
            .map(|&i| fraud.features[i].window(event.time_ms))
            .fold((i64::MAX, i64::MIN), |(f, t), (a, b)| (f.min(a), t.max(b)));
        let cells = CellQuery {
            from_ms,
            to_ms,
            filters: vec![(0, key.clone())],
        };
        let regroup = Regroup {
            from_ms,
            step_ms: Some(view.granularity_ms),
            group_by: vec![0],
        };
        let mut grouped =
            answer::grouped(sources, view, &fraud.source.topic, &cells, &regroup, now_ms).await?;
        {
            let mut own = ViewState::new(Arc::clone(view));
            for earlier in prior {
                own.apply(std::slice::from_ref(*earlier));
            }
            own.apply(std::slice::from_ref(event));
            for (cell, states) in own.into_cells() {
                let slot = grouped
                    .groups
                    .entry((cell.bucket_ms, cell.group.0.to_vec()))
                    .or_insert_with(|| {
                        view.metrics
                            .iter()
                            .map(|m| MetricState::empty(&m.expr))
                            .collect()
                    });
                for (into, from) in slot.iter_mut().zip(states.iter()) {
                    into.merge(from)?;
                }
            }
        }
        for &i in indices {
            let feature = &fraud.features[i];
            let (from, to) = feature.window(event.time_ms);
            let expr = &view.metrics[feature.metric].expr;
            let mut total = MetricState::empty(expr);
            for ((bucket, _), states) in grouped.groups.range((from, Vec::new())..) {
                if *bucket >= to {
                    break;
                }
                total.merge(&states[feature.metric])?;
            }
            values[i] = total.finalize(expr).as_f64();
        }
        provenance.get_or_insert(grouped.provenance);
    }
    Ok(Features { values, provenance })
}

/// Scores `event` against the merged views.
pub async fn score(
    sources: Sources<'_>,
    fraud: &FraudDef,
    event: &Event,
    prior: &[&Event],
    now_ms: i64,
) -> Result<(Score, Features), AnswerError> {
    let features = features(sources, fraud, event, prior, now_ms).await?;
    let score = fraud.score(event, &features.values);
    Ok((score, features))
}
