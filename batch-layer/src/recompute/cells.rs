//! The grouped frame, one row per (group key, bucket), becomes the view's cells.

use std::sync::Arc;

use braid_shared::aggregate::{AvgState, Extreme, MetricState, SumState};
use braid_shared::view::{CellKey, GroupKey};
use braid_shared::{Value, ViewDef, ViewState};
use polars::prelude::*;

use super::plan::{Agg, BUCKET, ViewPlan};
use crate::columns::{ColumnType, ValueReader};
use crate::error::{Error, Result};

/// Builds the view state; also returns the number of rows grouped.
pub(crate) fn build(
    view: &Arc<ViewDef>,
    plan: &ViewPlan,
    grouped: &DataFrame,
) -> Result<(ViewState, u64)> {
    let height = grouped.height();
    let mut keys: Vec<Vec<Value>> = Vec::with_capacity(plan.key_types.len());
    for (field, &ty) in view.group_by.iter().zip(&plan.key_types) {
        let column = grouped.column(&field.name)?;
        let values = ValueReader::new(column, ty)?
            .values()
            .map_err(|e| Error::Internal(format!("group-by field {}: {e}", field.name)))?;
        keys.push(values);
    }
    let buckets = grouped.column(BUCKET)?.i64()?;
    let rows: u64 = grouped.column("_rows")?.u64()?.sum().unwrap_or(0);
    let mut metrics: Vec<Vec<MetricState>> = Vec::with_capacity(plan.aggs.len());
    for (i, (agg, metric)) in plan.aggs.iter().zip(&view.metrics).enumerate() {
        let column = grouped.column(&ViewPlan::column(i))?;
        let states = match *agg {
            Agg::Count => column
                .u64()?
                .iter()
                .map(|n| MetricState::Count(n.unwrap_or(0)))
                .collect(),
            Agg::Sum(ty) => numbers(column, ty)?
                .into_iter()
                .map(|v| MetricState::Sum(sum_of(&v)))
                .collect(),
            Agg::Min(ty) => numbers(column, ty)?
                .into_iter()
                .map(|v| MetricState::Min(Extreme((!v.is_null()).then_some(v))))
                .collect(),
            Agg::Max(ty) => numbers(column, ty)?
                .into_iter()
                .map(|v| MetricState::Max(Extreme((!v.is_null()).then_some(v))))
                .collect(),
            Agg::Avg(ty) => {
                let counts = grouped.column(&ViewPlan::count_column(i))?.u64()?;
                numbers(column, ty)?
                    .into_iter()
                    .zip(counts.iter())
                    .map(|(sum, count)| {
                        MetricState::Avg(Box::new(AvgState {
                            sum: sum_of(&sum),
                            count: count.unwrap_or(0),
                        }))
                    })
                    .collect()
            }
            Agg::Fold(ty) => fold(column, ty, &metric.expr, &metric.name)?,
        };
        metrics.push(states);
    }
    let mut state = ViewState::new(Arc::clone(view));
    let mut columns: Vec<std::vec::IntoIter<MetricState>> =
        metrics.into_iter().map(Vec::into_iter).collect();
    for row in 0..height {
        let group: Box<[Value]> = keys
            .iter_mut()
            .map(|k| std::mem::replace(&mut k[row], Value::Null))
            .collect();
        let states: Box<[MetricState]> = columns
            .iter_mut()
            .map(|c| c.next())
            .collect::<Option<_>>()
            .ok_or_else(|| Error::Internal("short metric column".to_owned()))?;
        let key = CellKey {
            bucket_ms: buckets
                .get(row)
                .ok_or_else(|| Error::Internal("null bucket".to_owned()))?,
            group: GroupKey(group),
        };
        state.absorb_cell(key, states)?;
    }
    Ok((state, rows))
}

fn numbers(column: &Column, ty: ColumnType) -> Result<Vec<Value>> {
    ValueReader::new(column, ty)?
        .values()
        .map_err(Error::Internal)
}

fn sum_of(value: &Value) -> SumState {
    let mut sum = SumState::default();
    sum.add(value);
    sum
}

/// Folds each group's list of values into a fresh state of the metric.
fn fold(
    column: &Column,
    ty: ColumnType,
    expr: &braid_shared::MetricExpr,
    name: &str,
) -> Result<Vec<MetricState>> {
    let lists = column.list()?;
    let mut out = Vec::with_capacity(lists.len());
    let mut scratch = String::new();
    for group in lists.amortized_iter() {
        let mut state = MetricState::empty(expr);
        if let Some(values) = group {
            let series = values.as_ref();
            match ty {
                ColumnType::Utf8 => {
                    for s in series.str()?.iter() {
                        match s {
                            Some(s) => state.update_str(s),
                            None => state.update(&Value::Null, &mut scratch),
                        }
                    }
                }
                _ => {
                    let column = Column::from(series.clone());
                    let values = ValueReader::new(&column, ty)?
                        .values()
                        .map_err(|e| Error::Internal(format!("metric {name}: {e}")))?;
                    for value in &values {
                        state.update(value, &mut scratch);
                    }
                }
            }
        }
        out.push(state);
    }
    Ok(out)
}
