//! The cells of one view: (event-time bucket, group key) -> one state per metric.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::ViewDef;
use crate::aggregate::MetricState;
use crate::error::{Error, Result};
use crate::event::{Event, Value};

/// The group-by values of a cell, in the view's `group_by` order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct GroupKey(pub Box<[Value]>);

/// Identifies a cell: bucket start (epoch ms) and group key. Ordered by bucket, then key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CellKey {
    pub bucket_ms: i64,
    pub group: GroupKey,
}

/// One finalized cell, ready to answer with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub bucket_ms: i64,
    pub group: Vec<(String, Value)>,
    pub metrics: Vec<(String, serde_json::Value)>,
}

/// The state of one view: mergeable cells. Built by `apply` in both layers and compared in
/// tests against `recompute`.
#[derive(Debug, Clone)]
pub struct ViewState {
    view: Arc<ViewDef>,
    cells: FxHashMap<CellKey, Box<[MetricState]>>,
}

impl PartialEq for ViewState {
    fn eq(&self, other: &Self) -> bool {
        self.view.fingerprint() == other.view.fingerprint() && self.cells == other.cells
    }
}

impl ViewState {
    pub fn new(view: Arc<ViewDef>) -> Self {
        Self {
            view,
            cells: FxHashMap::default(),
        }
    }

    /// The reference computation: a plain fold of `events`, one at a time, into ordered cells.
    /// Deliberately independent of [`ViewState::apply`]; every layer's tests compare with it.
    pub fn recompute(view: Arc<ViewDef>, events: &[Event]) -> Self {
        let mut cells: BTreeMap<CellKey, Vec<MetricState>> = BTreeMap::new();
        let mut scratch = String::new();
        for event in events {
            let group = view
                .group_by
                .iter()
                .map(|f| event.values.get(f.slot).cloned().unwrap_or(Value::Null))
                .collect();
            let key = CellKey {
                bucket_ms: view.bucket_of(event.time_ms),
                group: GroupKey(group),
            };
            let states = cells.entry(key).or_insert_with(|| {
                view.metrics
                    .iter()
                    .map(|m| MetricState::empty(&m.expr))
                    .collect()
            });
            for (state, metric) in states.iter_mut().zip(&view.metrics) {
                let value = metric
                    .slot
                    .and_then(|s| event.values.get(s))
                    .unwrap_or(&Value::Null);
                state.update(value, &mut scratch);
            }
        }
        Self {
            view,
            cells: cells
                .into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect(),
        }
    }

    pub fn view(&self) -> &Arc<ViewDef> {
        &self.view
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    pub fn cells(&self) -> impl Iterator<Item = (&CellKey, &[MetricState])> {
        self.cells.iter().map(|(k, v)| (k, &**v))
    }

    pub fn cell(&self, key: &CellKey) -> Option<&[MetricState]> {
        self.cells.get(key).map(|v| &**v)
    }

    /// The cell an event belongs to.
    pub fn key_of(&self, event: &Event) -> CellKey {
        let group = self
            .view
            .group_by
            .iter()
            .map(|f| event.values.get(f.slot).cloned().unwrap_or(Value::Null))
            .collect();
        CellKey {
            bucket_ms: self.view.bucket_of(event.time_ms),
            group: GroupKey(group),
        }
    }

    /// Applies a batch of decoded events of the view's source.
    pub fn apply(&mut self, events: &[Event]) {
        let mut scratch = String::new();
        for event in events {
            let key = self.key_of(event);
            let view = &self.view;
            let states = self.cells.entry(key).or_insert_with(|| {
                view.metrics
                    .iter()
                    .map(|m| MetricState::empty(&m.expr))
                    .collect()
            });
            for (state, metric) in states.iter_mut().zip(&view.metrics) {
                let value = match metric.slot {
                    Some(slot) => event.values.get(slot).unwrap_or(&Value::Null),
                    None => &Value::Null,
                };
                state.update(value, &mut scratch);
            }
        }
    }

    /// Merges one cell's states into this view's cell.
    pub fn merge_cell(&mut self, key: CellKey, states: &[MetricState]) -> Result<()> {
        if states.len() != self.view.metrics.len() || key.group.0.len() != self.view.group_by.len()
        {
            return Err(Error::Mismatch {
                what: "view cells",
                reason: format!(
                    "cell of {} keys and {} metrics does not fit view {}",
                    key.group.0.len(),
                    states.len(),
                    self.view.name
                ),
            });
        }
        match self.cells.get_mut(&key) {
            Some(mine) => {
                for (m, theirs) in mine.iter_mut().zip(states) {
                    m.merge(theirs)?;
                }
            }
            None => {
                // Validate the kinds against the view before adopting the states.
                let mut fresh: Box<[MetricState]> = self
                    .view
                    .metrics
                    .iter()
                    .map(|m| MetricState::empty(&m.expr))
                    .collect();
                for (m, theirs) in fresh.iter_mut().zip(states) {
                    m.merge(theirs)?;
                }
                self.cells.insert(key, fresh);
            }
        }
        Ok(())
    }

    /// Folds another state of the same view definition into this one.
    pub fn merge(&mut self, other: &ViewState) -> Result<()> {
        if self.view.fingerprint() != other.view.fingerprint() {
            return Err(Error::Mismatch {
                what: "view states",
                reason: format!(
                    "view {} and view {} have different definitions",
                    self.view.name, other.view.name
                ),
            });
        }
        for (key, states) in &other.cells {
            self.merge_cell(key.clone(), states)?;
        }
        Ok(())
    }

    /// Every cell finalized, ordered by bucket then group key.
    pub fn rows(&self) -> Vec<Row> {
        let mut keys: Vec<&CellKey> = self.cells.keys().collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|key| {
                let states = &self.cells[key];
                Row {
                    bucket_ms: key.bucket_ms,
                    group: self
                        .view
                        .group_by
                        .iter()
                        .zip(key.group.0.iter())
                        .map(|(f, v)| (f.name.clone(), v.clone()))
                        .collect(),
                    metrics: self
                        .view
                        .metrics
                        .iter()
                        .zip(states.iter())
                        .map(|(m, s)| (m.name.clone(), s.finalize(&m.expr)))
                        .collect(),
                }
            })
            .collect()
    }

    /// Compares with another state cell by cell (see [`MetricState::approx_eq`]), describing
    /// the first difference.
    pub fn approx_eq(&self, other: &ViewState, relative: f64) -> std::result::Result<(), String> {
        if self.cells.len() != other.cells.len() {
            let missing = self.cells.keys().find(|k| !other.cells.contains_key(*k));
            let extra = other.cells.keys().find(|k| !self.cells.contains_key(*k));
            return Err(format!(
                "{} cells != {} cells (first only here: {missing:?}; first only there: {extra:?})",
                self.cells.len(),
                other.cells.len()
            ));
        }
        for (key, mine) in &self.cells {
            let theirs = other
                .cells
                .get(key)
                .ok_or_else(|| format!("cell {key:?} is missing"))?;
            for ((a, b), metric) in mine.iter().zip(theirs.iter()).zip(&self.view.metrics) {
                a.approx_eq(b, relative)
                    .map_err(|e| format!("cell {key:?} metric {}: {e}", metric.name))?;
            }
        }
        Ok(())
    }
}
