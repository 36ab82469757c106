//! Snapshot cell files (written by a run from the recompute's cell frame, see
//! `recompute::cells`): one Parquet row per cell, with the bucket, the group-by fields (typed as
//! in the archive) and one binary column per metric holding the state's versioned encoding, so
//! any reader merges them with the speed layer's states exactly.

use std::sync::Arc;

use braid_shared::aggregate::MetricState;
use braid_shared::view::{CellKey, GroupKey};
use braid_shared::{SourceDef, Value, ViewDef, ViewState};
use polars::prelude::*;

use crate::columns::{ColumnType, ValueReader};
use crate::error::{Error, Result};
use braid_store::Storage;
use braid_store::manifest::SnapshotManifest;

pub const BUCKET_COLUMN: &str = "_bucket";

/// The column holding a metric's encoded states.
pub fn state_column(metric: &str) -> String {
    format!("_state.{metric}")
}

fn key_types(view: &ViewDef, source: &SourceDef) -> Vec<ColumnType> {
    view.group_by
        .iter()
        .map(|f| {
            source
                .fields
                .get(f.slot)
                .map_or(ColumnType::Literal, |s| ColumnType::of(s.kind))
        })
        .collect()
}

/// Reads a cell file (one layer), checking every state against the view.
pub fn read_cells(
    storage: &dyn Storage,
    key: &str,
    view: &Arc<ViewDef>,
    source: &SourceDef,
) -> Result<ViewState> {
    let damaged = |reason: String| Error::SnapshotFile {
        key: key.to_owned(),
        reason,
    };
    let Some(object) = storage.get(key)? else {
        return Err(damaged("is missing".to_owned()));
    };
    let df = ParquetReader::new(std::io::Cursor::new(object.bytes))
        .finish()
        .map_err(|e| damaged(e.to_string()))?;
    let column = |name: &str| df.column(name).map_err(|e| damaged(e.to_string()));
    let buckets = column(BUCKET_COLUMN)?
        .i64()
        .map_err(|e| damaged(e.to_string()))?;
    let mut keys = Vec::new();
    for (field, ty) in view.group_by.iter().zip(key_types(view, source)) {
        let values = ValueReader::new(column(&field.name)?, ty)
            .map_err(|e| damaged(e.to_string()))?
            .values()
            .map_err(&damaged)?;
        keys.push(values);
    }
    let mut states = Vec::new();
    for metric in &view.metrics {
        let name = state_column(&metric.name);
        states.push(
            column(&name)?
                .binary()
                .map_err(|e| damaged(e.to_string()))?
                .clone(),
        );
    }
    let mut state = ViewState::new(Arc::clone(view));
    for row in 0..df.height() {
        let bucket_ms = buckets
            .get(row)
            .ok_or_else(|| damaged(format!("row {row} has no bucket")))?;
        let group: Box<[Value]> = keys
            .iter_mut()
            .map(|k| std::mem::replace(&mut k[row], Value::Null))
            .collect();
        let mut cell = Vec::with_capacity(states.len());
        for (metric, column) in view.metrics.iter().zip(&states) {
            let bytes = column
                .get(row)
                .ok_or_else(|| damaged(format!("row {row} has no state for {}", metric.name)))?;
            let decoded = MetricState::decode(bytes)
                .map_err(|e| damaged(format!("row {row}, metric {}: {e}", metric.name)))?;
            cell.push(decoded);
        }
        state
            .absorb_cell(
                CellKey {
                    bucket_ms,
                    group: GroupKey(group),
                },
                cell.into_boxed_slice(),
            )
            .map_err(|e| damaged(e.to_string()))?;
    }
    Ok(state)
}

/// Reads a view of a published snapshot: the merge of its layers.
pub fn read_view(
    storage: &dyn Storage,
    manifest: &SnapshotManifest,
    view: &Arc<ViewDef>,
    source: &SourceDef,
) -> Result<Option<ViewState>> {
    let Some(snapshot) = manifest.views.get(&view.name) else {
        return Ok(None);
    };
    if snapshot.fingerprint != braid_store::manifest::fingerprint_hex(view.fingerprint()) {
        return Ok(None);
    }
    let mut state = ViewState::new(Arc::clone(view));
    for layer in &snapshot.layers {
        let part = read_cells(storage, &layer.path, view, source)?;
        state.merge(&part)?;
    }
    Ok(Some(state))
}
