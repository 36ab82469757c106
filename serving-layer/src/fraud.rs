//! Fraud features and scores: each feature is a merged point read (batch ⊕ speed, through the
//! answer module) of one view for the event's key over the feature's window, so a 30-day
//! profile visits only the key's own cells, never a scan of other keys, and copies none.

use braid_shared::Event;
use braid_shared::aggregate::MetricState;
use braid_shared::fraud::{FraudDef, Score};
use braid_shared::view::{GroupKey, PointKey};

use crate::answer::{self, AnswerError, Provenance, Sources};

/// Feature values of one event, and where they were read from.
pub struct Features {
    /// By feature index; `None`: the metric has no value over the window (an empty average).
    pub values: Vec<Option<f64>>,
    /// `None` when not asked for, or when no feature is configured (rules over the event's own
    /// fields only).
    pub provenance: Option<Provenance>,
}

/// Reads every feature of `fraud` for `event`, counting `prior` (events of its key not yet in
/// the views, in order) and then the event as the next of its key. `event` must carry the key
/// (checked by callers). Each view is read once, over the longest window of its features, and
/// each cell read is folded straight into the windows holding its bucket.
pub async fn features(
    sources: Sources<'_>,
    fraud: &FraudDef,
    event: &Event,
    prior: &[&Event],
    (provenance, now_ms): (bool, i64),
) -> Result<Features, AnswerError> {
    let key = event
        .values
        .get(fraud.key_slot)
        .cloned()
        .unwrap_or(braid_shared::Value::Null);
    let key = PointKey::new(GroupKey(Box::new([key])));
    let mut values = vec![None; fraud.features.len()];
    let mut read_from = None;
    let mut done = vec![false; fraud.features.len()];
    let mut scratch = String::new();
    for first in 0..fraud.features.len() {
        if done[first] {
            continue;
        }
        // The features of this view, with their windows.
        let view = &fraud.features[first].view;
        let of_view: Vec<(usize, (i64, i64))> = (first..fraud.features.len())
            .filter(|&i| fraud.features[i].view.name == view.name)
            .map(|i| (i, fraud.features[i].window(event.time_ms)))
            .collect();
        let span = of_view
            .iter()
            .fold((i64::MAX, i64::MIN), |(f, t), (_, (a, b))| {
                (f.min(*a), t.max(*b))
            });
        let metric_of = |i: usize| &view.metrics[fraud.features[i].metric];
        let point = answer::PointQuery {
            view,
            topic: &fraud.source.topic,
            key: &key,
            span,
            provenance: provenance && read_from.is_none(),
            now_ms,
        };
        let read = answer::fold_point(
            sources,
            &point,
            || {
                of_view
                    .iter()
                    .map(|&(i, _)| MetricState::empty(&metric_of(i).expr))
                    .collect::<Vec<_>>()
            },
            |totals, bucket, states| {
                for ((i, (from, to)), total) in of_view.iter().zip(totals.iter_mut()) {
                    if (*from..*to).contains(&bucket) {
                        total.merge(&states[fraud.features[*i].metric])?;
                    }
                }
                Ok(())
            },
        )
        .await?;
        let mut totals = read.folded;
        // The run's earlier events of the key, then the event itself, as the views will hold
        // them once applied.
        for own in prior.iter().copied().chain([event]) {
            let bucket = view.bucket_of(own.time_ms);
            for ((i, (from, to)), total) in of_view.iter().zip(totals.iter_mut()) {
                if (*from..*to).contains(&bucket) {
                    let value = metric_of(*i)
                        .slot
                        .and_then(|slot| own.values.get(slot))
                        .unwrap_or(&braid_shared::Value::Null);
                    total.update(value, &mut scratch);
                }
            }
        }
        for ((i, _), total) in of_view.iter().zip(&totals) {
            values[*i] = total.finalize(&metric_of(*i).expr).as_f64();
            done[*i] = true;
        }
        if read_from.is_none() {
            read_from = read.provenance;
        }
    }
    Ok(Features {
        values,
        provenance: read_from,
    })
}

/// Scores `event` against the merged views.
pub async fn score(
    sources: Sources<'_>,
    fraud: &FraudDef,
    event: &Event,
    prior: &[&Event],
    provenance: (bool, i64),
) -> Result<(Score, Features), AnswerError> {
    let features = features(sources, fraud, event, prior, provenance).await?;
    let score = fraud.score(event, &features.values);
    Ok((score, features))
}
