//! One read of a view: the batch cells of one snapshot and the speed layer's cells at exactly
//! that snapshot's coverage, so two snapshots or two coverages are never mixed. When the speed
//! layer has already moved to a newer snapshot, the newer one is loaded and the read retried.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_shared::aggregate::MetricState;
use braid_shared::coverage::SpeedCells;
use braid_shared::view::PointKey;
use braid_shared::{
    CellQuery, PartitionStatus, SpeedPositions, TopicPartition, ViewDef, ViewState,
};

use super::provenance::Parts;
use super::{AnswerError, Groups, Provenance, Sources};
use crate::snapshot::Snapshot;

/// Reads of one answer when a snapshot swap races it.
const ATTEMPTS: usize = 4;

/// The selected cells of one view, batch ⊕ speed, and what they were read from.
pub struct Read {
    pub state: ViewState,
    pub snapshot: Arc<Snapshot>,
    /// The speed layer's partitions as of the read; `None` without a speed layer.
    pub speed: Option<BTreeMap<TopicPartition, PartitionStatus>>,
    /// Partitions no speed instance answered for (speed peers in other processes).
    pub missing: Vec<TopicPartition>,
}

impl Read {
    pub(super) fn provenance_parts(&self, topic: &str) -> Parts {
        Parts::new(topic, &self.snapshot, self.speed.as_ref(), &self.missing)
    }
}

/// What one attempt over a snapshot gives: the result, or, when the speed layer has already
/// moved past that snapshot (it dropped events its coverage needs), why.
type Attempt<T> = Result<Result<T, String>, AnswerError>;

/// The one policy of every read's retry after a snapshot swap: an attempt over the snapshot in
/// use that finds the speed layer moved past it (it dropped events the coverage needs) loads
/// the newer snapshot and tries again, [`ATTEMPTS`] times at most.
struct Retry<'a> {
    sources: Sources<'a>,
    tried: usize,
}

impl<'a> Retry<'a> {
    fn new(sources: Sources<'a>) -> Self {
        Self { sources, tried: 1 }
    }

    /// After an attempt that met a dropped coverage (`dropped` says which): loads the newer
    /// snapshot, or gives up when the attempts are spent.
    async fn again(&mut self, dropped: String) -> Result<(), AnswerError> {
        self.next(dropped)?;
        self.sources.snapshot.refresh().await;
        Ok(())
    }

    /// [`Retry::again`] on a thread outside any async runtime.
    fn again_blocking(&mut self, dropped: String) -> Result<(), AnswerError> {
        self.next(dropped)?;
        self.sources.snapshot.refresh_blocking();
        Ok(())
    }

    fn next(&mut self, dropped: String) -> Result<(), AnswerError> {
        if self.tried >= ATTEMPTS {
            return Err(AnswerError::SnapshotChanging(dropped));
        }
        crate::metrics::merge_retry();
        self.tried += 1;
        Ok(())
    }
}

/// Reads the cells of `view` that `cells` selects, retrying after a snapshot swap.
pub async fn read(
    sources: Sources<'_>,
    view: &Arc<ViewDef>,
    cells: &CellQuery,
) -> Result<Read, AnswerError> {
    let mut retry = Retry::new(sources);
    loop {
        let snapshot = sources.snapshot.current();
        match read_once(snapshot, sources, view, cells).await {
            Err(AnswerError::SnapshotChanging(dropped)) => retry.again(dropped).await?,
            other => return other,
        }
    }
}

async fn read_once(
    snapshot: Arc<Snapshot>,
    sources: Sources<'_>,
    view: &Arc<ViewDef>,
    cells: &CellQuery,
) -> Result<Read, AnswerError> {
    let batch = snapshot
        .view(&view.name)
        .map_err(AnswerError::NotInSnapshot)?;
    let coverage = snapshot.coverage();
    // The speed layer's cells (built for this query) are the base; the batch cells are merged
    // into them, so cells are copied once.
    let (mut state, speed, missing) = match sources.speed {
        Some(reader) => {
            let SpeedCells {
                state,
                partitions,
                missing,
            } = match reader.read_async(&view.name, cells, &coverage) {
                Some(gathering) => gathering.await?,
                None => reader.read(&view.name, cells, &coverage)?,
            };
            (state, Some(partitions), missing)
        }
        None => (ViewState::new(Arc::clone(view)), None, Vec::new()),
    };
    if let Some(batch) = batch {
        state.merge_matching(batch, cells)?;
    }
    Ok(Read {
        state,
        snapshot,
        speed,
        missing,
    })
}

/// What [`fold_point`] folded, and where from.
pub struct PointFold<A> {
    pub folded: A,
    /// With `provenance` asked: where the folded cells come from, as an answer's provenance
    /// (its sketch bounds those of the view's metrics, not of folded rows).
    pub provenance: Option<Provenance>,
}

/// One group key of a view over the buckets `[from, to)` of `span`.
pub struct PointQuery<'a> {
    pub view: &'a Arc<ViewDef>,
    /// The view's topic (the provenance names its partitions).
    pub topic: &'a str,
    pub key: &'a PointKey,
    pub span: (i64, i64),
    /// Whether to say where the cells come from ([`PointFold::provenance`]), as of `now_ms`.
    pub provenance: bool,
    pub now_ms: i64,
}

/// Folds the cells `point` selects, batch and speed, into a value made by `start`, without
/// copying a cell: the exact merge of a point read for a reader that needs numbers, not cells
/// (fraud features). A snapshot swap during the read starts the fold again from `start()` over
/// the newer snapshot.
pub async fn fold_point<A>(
    sources: Sources<'_>,
    point: &PointQuery<'_>,
    start: impl Fn() -> A,
    fold: impl FnMut(&mut A, i64, &[MetricState]) -> braid_shared::Result<()>,
) -> Result<PointFold<A>, AnswerError> {
    Ok(fold_point_parts(sources, point, start, fold)
        .await?
        .finish(point))
}

/// [`fold_point`] before its provenance is finished, with the snapshot read.
pub(super) struct PointParts<A> {
    pub folded: A,
    pub parts: Option<Parts>,
    pub snapshot: Arc<Snapshot>,
}

impl<A> PointParts<A> {
    fn finish(self, point: &PointQuery<'_>) -> PointFold<A> {
        PointFold {
            folded: self.folded,
            provenance: self
                .parts
                .map(|parts| parts.finish(point.view, &Groups::new(), point.now_ms)),
        }
    }
}

pub(super) async fn fold_point_parts<A>(
    sources: Sources<'_>,
    point: &PointQuery<'_>,
    start: impl Fn() -> A,
    mut fold: impl FnMut(&mut A, i64, &[MetricState]) -> braid_shared::Result<()>,
) -> Result<PointParts<A>, AnswerError> {
    let mut attempt = 0;
    loop {
        let snapshot = sources.snapshot.current();
        // Speed instances in other processes are asked first, without blocking a thread.
        let query = CellQuery::point(point.key, point.span);
        let gathered = match sources
            .speed
            .and_then(|reader| reader.read_async(&point.view.name, &query, snapshot.coverage_ref()))
        {
            Some(gathering) => Some(gathering.await),
            None => None,
        };
        match fold_point_once(snapshot, sources, point, gathered, &start, &mut fold)? {
            Ok(parts) => return Ok(parts),
            Err(_) if attempt + 1 < ATTEMPTS => {
                crate::metrics::merge_retry();
                attempt += 1;
                sources.snapshot.refresh().await;
            }
            Err(dropped) => return Err(AnswerError::SnapshotChanging(dropped)),
        }
    }
}

/// [`fold_point`] on the calling thread, for a caller outside any async runtime whose speed
/// layer is in its own process (the fraud scorer on the speed layer's consumer thread): a
/// snapshot swap during the read loads the newer snapshot on this thread.
pub fn fold_point_blocking<A>(
    sources: Sources<'_>,
    point: &PointQuery<'_>,
    start: impl Fn() -> A,
    mut fold: impl FnMut(&mut A, i64, &[MetricState]) -> braid_shared::Result<()>,
) -> Result<PointFold<A>, AnswerError> {
    let mut retry = Retry::new(sources);
    loop {
        let snapshot = sources.snapshot.current();
        match fold_point_once(snapshot, sources, point, None, &start, &mut fold)? {
            Ok(parts) => return Ok(parts.finish(point)),
            Err(dropped) => retry.again_blocking(dropped)?,
        }
    }
}

/// One attempt of a point fold over `snapshot`, with the speed cells `gathered` from other
/// processes or, without them, read from the speed layer of this process. `Ok(Err(why))`: the
/// speed layer has already dropped events the snapshot's coverage needs (a newer snapshot was
/// published), so the caller loads it and tries again.
fn fold_point_once<A>(
    snapshot: Arc<Snapshot>,
    sources: Sources<'_>,
    point: &PointQuery<'_>,
    gathered: Option<braid_shared::Result<SpeedCells>>,
    start: &impl Fn() -> A,
    fold: &mut impl FnMut(&mut A, i64, &[MetricState]) -> braid_shared::Result<()>,
) -> Attempt<PointParts<A>> {
    let PointQuery {
        view,
        topic,
        key,
        span,
        provenance,
        now_ms: _,
    } = *point;
    let batch = snapshot
        .view(&view.name)
        .map_err(AnswerError::NotInSnapshot)?;
    let coverage = snapshot.coverage_ref();
    let mut folded = start();
    let mut visit = |bucket: i64, states: &[MetricState]| fold(&mut folded, bucket, states);
    let speed = match gathered {
        Some(cells) => {
            Some(cells.and_then(|cells| cells.visit_point(key, span, provenance, &mut visit)))
        }
        None => sources.speed.map(|reader| {
            reader.visit_point(&view.name, key, span, coverage, provenance, &mut visit)
        }),
    };
    let speed = match speed.transpose() {
        Err(braid_shared::Error::CoverageDropped(why)) => return Ok(Err(why)),
        other => other?,
    };
    if let Some(batch) = batch {
        batch.visit_point(key, span.0, span.1, &mut visit)?;
    }
    let parts = provenance.then(|| {
        let SpeedPositions {
            partitions,
            missing,
        } = speed.unwrap_or_default();
        let statuses = sources.speed.map(|_| &partitions);
        Parts::new(topic, &snapshot, statuses, &missing)
    });
    Ok(Ok(PointParts {
        folded,
        parts,
        snapshot,
    }))
}
