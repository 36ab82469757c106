//! One read of a view: the batch cells of one snapshot and the speed layer's cells at exactly
//! that snapshot's coverage, so two snapshots or two coverages are never mixed. When the speed
//! layer has already moved to a newer snapshot, the newer one is loaded and the read retried.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_shared::coverage::SpeedCells;
use braid_shared::{CellQuery, PartitionStatus, TopicPartition, ViewDef, ViewState};

use super::provenance::Parts;
use super::{AnswerError, Sources};
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

/// Reads the cells of `view` that `cells` selects, retrying after a snapshot swap.
pub async fn read(
    sources: Sources<'_>,
    view: &Arc<ViewDef>,
    cells: &CellQuery,
) -> Result<Read, AnswerError> {
    let mut attempt = 0;
    loop {
        let snapshot = sources.snapshot.current();
        match read_once(snapshot, sources, view, cells) {
            Err(AnswerError::SnapshotChanging(_)) if attempt + 1 < ATTEMPTS => {
                // The speed layer moved to a newer snapshot than the one in hand: load it.
                crate::metrics::merge_retry();
                attempt += 1;
                sources.snapshot.refresh().await;
            }
            other => return other,
        }
    }
}

fn read_once(
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
            } = reader.read(&view.name, cells, &coverage)?;
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
