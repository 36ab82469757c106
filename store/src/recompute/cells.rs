//! The grouped frame, one row per (group key, bucket), gives each cell's states. The batch layer
//! writes them as a snapshot layer's cell frame: the bucket, the group-by columns as they are,
//! and per metric the encoded state of each cell. States live only while they are encoded, so no
//! view state is built in memory.

use braid_shared::aggregate::{AvgState, Extreme, MetricState, SumState};
use braid_shared::{MetricExpr, Value, ViewDef};
use polars::prelude::*;

use super::plan::{Agg, BUCKET, ViewPlan};
use crate::columns::{ColumnType, ValueReader};
use crate::error::{Error, Result};
use crate::snapshot::{BUCKET_COLUMN, state_column};

/// Builds the cell frame; also returns the number of archive rows grouped.
pub(crate) fn frame(
    view: &ViewDef,
    plan: &ViewPlan,
    grouped: &DataFrame,
) -> Result<(DataFrame, u64)> {
    let height = grouped.height();
    let rows: u64 = grouped.column("_rows")?.u64()?.sum().unwrap_or(0);
    let mut columns = vec![
        grouped
            .column(BUCKET)?
            .clone()
            .with_name(BUCKET_COLUMN.into()),
    ];
    // Cast: a field absent from every file scanned comes out as a column of nulls.
    for (field, ty) in view.group_by.iter().zip(&plan.key_types) {
        columns.push(grouped.column(&field.name)?.cast(&ty.dtype())?);
    }
    let mut encoders: Vec<Encoder> = view.metrics.iter().map(|_| Encoder::new(height)).collect();
    each_state(view, plan, grouped, |i, _, state| encoders[i].push(&state))?;
    for (metric, encoder) in view.metrics.iter().zip(encoders) {
        columns.push(encoder.finish(&state_column(&metric.name)));
    }
    Ok((DataFrame::new(height, columns)?, rows))
}

/// Hands every cell's state of every metric to `each(metric, cell, state)`, metric by metric,
/// cells in the grouped frame's order.
pub(crate) fn each_state(
    view: &ViewDef,
    plan: &ViewPlan,
    grouped: &DataFrame,
    mut each: impl FnMut(usize, usize, MetricState),
) -> Result<()> {
    if grouped.height() == 0 {
        return Ok(());
    }
    for (i, (agg, metric)) in plan.aggs.iter().zip(&view.metrics).enumerate() {
        let column = match agg {
            Agg::Fold(_) => grouped.column(&plan.list_column(i))?,
            _ => grouped.column(&ViewPlan::column(i))?,
        };
        let mut row = 0;
        let mut push = |state: MetricState| {
            each(i, row, state);
            row += 1;
        };
        match *agg {
            Agg::Count => {
                for n in column.u64()?.iter() {
                    push(MetricState::Count(n.unwrap_or(0)));
                }
            }
            Agg::Sum(ty) => {
                for v in checked_sums(grouped, i, column, ty)? {
                    push(MetricState::Sum(sum_of(&v)));
                }
            }
            Agg::Min(ty) | Agg::Max(ty) => {
                let is_min = matches!(agg, Agg::Min(_));
                for v in numbers(column, ty)? {
                    let extreme = Extreme((!v.is_null()).then_some(v));
                    push(if is_min {
                        MetricState::Min(extreme)
                    } else {
                        MetricState::Max(extreme)
                    });
                }
            }
            Agg::Avg(ty) => {
                let counts = grouped.column(&ViewPlan::count_column(i))?.u64()?;
                for (sum, count) in checked_sums(grouped, i, column, ty)?
                    .iter()
                    .zip(counts.iter())
                {
                    push(MetricState::Avg(Box::new(AvgState {
                        sum: sum_of(sum),
                        count: count.unwrap_or(0),
                    })));
                }
            }
            Agg::Fold(ty) => fold(column, ty, &metric.expr, &metric.name, &mut push)?,
        }
    }
    Ok(())
}

/// Encoded states back to back in one buffer, cut by offsets.
struct Encoder {
    buffer: Vec<u8>,
    ends: Vec<usize>,
}

impl Encoder {
    fn new(rows: usize) -> Self {
        Self {
            buffer: Vec::with_capacity(rows * 8),
            ends: Vec::with_capacity(rows),
        }
    }

    fn push(&mut self, state: &MetricState) {
        state.encode_into(&mut self.buffer);
        self.ends.push(self.buffer.len());
    }

    fn finish(self, name: &str) -> Column {
        let mut start = 0;
        let slices: Vec<&[u8]> = self
            .ends
            .iter()
            .map(|&end| {
                let slice = &self.buffer[start..end];
                start = end;
                slice
            })
            .collect();
        Column::new(name.into(), slices)
    }
}

fn numbers(column: &Column, ty: ColumnType) -> Result<Vec<Value>> {
    ValueReader::new(column, ty)?
        .values()
        .map_err(Error::Internal)
}

/// Integer sums must fit in i64. Polars' i64 sum wraps around (it is right modulo 2^64, so
/// right whenever the true sum fits); where the float sum beside it says the true sum may not
/// fit, the float sum is used, as the speed layer spills into its float part there.
const I64_SAFE: f64 = 9.0e18;

fn checked_sums(
    grouped: &DataFrame,
    i: usize,
    column: &Column,
    ty: ColumnType,
) -> Result<Vec<Value>> {
    let sums = numbers(column, ty)?;
    if ty != ColumnType::Int64 {
        return Ok(sums);
    }
    let floats = grouped.column(&ViewPlan::float_sum_column(i))?.f64()?;
    Ok(sums
        .into_iter()
        .zip(floats.iter())
        .map(|(sum, float)| match float {
            Some(f) if f.abs() >= I64_SAFE => Value::Float(f),
            _ => sum,
        })
        .collect())
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
    expr: &MetricExpr,
    name: &str,
    push: &mut impl FnMut(MetricState),
) -> Result<()> {
    let lists = column.list()?;
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
                ColumnType::Float64 => {
                    for x in series.f64()?.iter() {
                        state.update(&x.map_or(Value::Null, Value::Float), &mut scratch);
                    }
                }
                ColumnType::Int64 => {
                    for x in series.i64()?.iter() {
                        state.update(&x.map_or(Value::Null, Value::Int), &mut scratch);
                    }
                }
                ColumnType::Boolean | ColumnType::Literal => {
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
        push(state);
    }
    Ok(())
}
