//! Fraud features and scores: each feature is a merged point read (batch ⊕ speed, through the
//! answer module) of one view for the event's key over the feature's window, so a 30-day
//! profile visits only the key's own cells, never a scan of other keys, and copies none.

use std::sync::Arc;

use braid_shared::aggregate::MetricState;
use braid_shared::fraud::{FraudDef, Score};
use braid_shared::view::{GroupKey, PointKey};
use braid_shared::{Event, ViewDef};

use crate::answer::{self, AnswerError, PointFold, PointQuery, Provenance, Sources};

/// Feature values of one event, and where they were read from.
pub struct Features {
    /// By feature index; `None`: the metric has no value over the window (an empty average).
    pub values: Vec<Option<f64>>,
    /// `None` when not asked for, or when no feature is configured (rules over the event's own
    /// fields only).
    pub provenance: Option<Provenance>,
}

/// The reads of one event's features: one point read per view, over the longest window of
/// its features, each cell folded straight into the windows holding its bucket.
struct FeatureReads<'a> {
    fraud: &'a FraudDef,
    event: &'a Event,
    key: PointKey,
    views: Vec<ViewReads<'a>>,
}

/// The features of one view, with their windows, and the span they read.
struct ViewReads<'a> {
    view: &'a Arc<ViewDef>,
    features: Vec<(usize, (i64, i64))>,
    span: (i64, i64),
}

impl<'a> FeatureReads<'a> {
    fn new(fraud: &'a FraudDef, event: &'a Event) -> Self {
        let key = event
            .values
            .get(fraud.key_slot)
            .cloned()
            .unwrap_or(braid_shared::Value::Null);
        let mut views: Vec<ViewReads<'a>> = Vec::new();
        for (i, feature) in fraud.features.iter().enumerate() {
            let window = feature.window(event.time_ms);
            match views.iter_mut().find(|v| v.view.name == feature.view.name) {
                Some(reads) => {
                    reads.features.push((i, window));
                    reads.span = (reads.span.0.min(window.0), reads.span.1.max(window.1));
                }
                None => views.push(ViewReads {
                    view: &feature.view,
                    features: vec![(i, window)],
                    span: window,
                }),
            }
        }
        Self {
            fraud,
            event,
            key: PointKey::new(GroupKey(Box::new([key]))),
            views,
        }
    }

    /// The point read of the `v`-th view; `provenance` is asked of the first only.
    fn point(&self, v: usize, provenance: bool, now_ms: i64) -> PointQuery<'_> {
        let reads = &self.views[v];
        PointQuery {
            view: reads.view,
            topic: &self.fraud.source.topic,
            key: &self.key,
            span: reads.span,
            provenance: provenance && v == 0,
            now_ms,
        }
    }

    fn metric(&self, feature: usize) -> &braid_shared::view::MetricDef {
        let feature = &self.fraud.features[feature];
        &feature.view.metrics[feature.metric]
    }

    /// Empty totals of the `v`-th view's features.
    fn start(&self, v: usize) -> Vec<MetricState> {
        self.views[v]
            .features
            .iter()
            .map(|&(i, _)| MetricState::empty(&self.metric(i).expr))
            .collect()
    }

    /// Folds one cell of the `v`-th view into the totals of the windows holding its bucket.
    fn fold(
        &self,
        v: usize,
        totals: &mut [MetricState],
        bucket: i64,
        states: &[MetricState],
    ) -> braid_shared::Result<()> {
        for ((i, (from, to)), total) in self.views[v].features.iter().zip(totals) {
            if (*from..*to).contains(&bucket) {
                total.merge(&states[self.fraud.features[*i].metric])?;
            }
        }
        Ok(())
    }

    /// The feature values once each view's totals are read: the run's earlier events of the
    /// key, then the event itself, are added as the views will hold them once applied.
    fn finish(self, read: Vec<PointFold<Vec<MetricState>>>, prior: &[&Event]) -> Features {
        let mut values = vec![None; self.fraud.features.len()];
        let mut scratch = String::new();
        let mut provenance = None;
        for (reads, read) in self.views.iter().zip(read) {
            let mut totals = read.folded;
            for own in prior.iter().copied().chain([self.event]) {
                let bucket = reads.view.bucket_of(own.time_ms);
                for ((i, (from, to)), total) in reads.features.iter().zip(totals.iter_mut()) {
                    if (*from..*to).contains(&bucket) {
                        let value = self
                            .metric(*i)
                            .slot
                            .and_then(|slot| own.values.get(slot))
                            .unwrap_or(&braid_shared::Value::Null);
                        total.update(value, &mut scratch);
                    }
                }
            }
            for ((i, _), total) in reads.features.iter().zip(&totals) {
                values[*i] = total.finalize(&self.metric(*i).expr).as_f64();
            }
            provenance = provenance.or(read.provenance);
        }
        Features { values, provenance }
    }
}

/// Reads every feature of `fraud` for `event`, counting `prior` (events of its key not yet in
/// the views, in order) and then the event as the next of its key. `event` must carry the key
/// (checked by callers).
pub async fn features(
    sources: Sources<'_>,
    fraud: &FraudDef,
    event: &Event,
    prior: &[&Event],
    (provenance, now_ms): (bool, i64),
) -> Result<Features, AnswerError> {
    let reads = FeatureReads::new(fraud, event);
    let mut read = Vec::with_capacity(reads.views.len());
    for v in 0..reads.views.len() {
        let point = reads.point(v, provenance, now_ms);
        let fold = |totals: &mut Vec<MetricState>, bucket, states: &[MetricState]| {
            reads.fold(v, totals, bucket, states)
        };
        read.push(answer::fold_point(sources, &point, || reads.start(v), fold).await?);
    }
    Ok(reads.finish(read, prior))
}

/// [`features`] on the calling thread, outside any async runtime, with the speed layer of this
/// process: the fraud scorer on the speed layer's consumer thread.
pub fn features_blocking(
    sources: Sources<'_>,
    fraud: &FraudDef,
    event: &Event,
    prior: &[&Event],
    now_ms: i64,
) -> Result<Features, AnswerError> {
    let reads = FeatureReads::new(fraud, event);
    let mut read = Vec::with_capacity(reads.views.len());
    for v in 0..reads.views.len() {
        let point = reads.point(v, false, now_ms);
        let fold = |totals: &mut Vec<MetricState>, bucket, states: &[MetricState]| {
            reads.fold(v, totals, bucket, states)
        };
        read.push(answer::fold_point_blocking(
            sources,
            &point,
            || reads.start(v),
            fold,
        )?);
    }
    Ok(reads.finish(read, prior))
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
