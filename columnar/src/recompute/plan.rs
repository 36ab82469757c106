//! How each metric of a view is aggregated per group.

use std::sync::Arc;

use braid_shared::aggregate::Hll;
use braid_shared::{MetricExpr, SourceDef, Value, ViewDef};
use polars::prelude::*;

use crate::columns::ColumnType;

pub(crate) const BUCKET: &str = "_bucket";

/// The aggregation of one metric.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Agg {
    /// Group size.
    Count,
    /// Polars' sum of a typed numeric column.
    Sum(ColumnType),
    Min(ColumnType),
    Max(ColumnType),
    /// Polars' sum and non-null count.
    Avg(ColumnType),
    /// The group's values as a list, folded into the shared state.
    Fold(ColumnType),
}

/// The bucket a row is grouped into.
#[derive(Debug, Clone, Copy)]
enum Bucket {
    /// Its cell's: the view's granularity.
    Cell,
    /// An answer's re-bucketing width.
    Step(i64),
    /// One bucket for every row, starting here.
    Whole(i64),
}

pub(crate) struct ViewPlan {
    pub view: Arc<ViewDef>,
    /// Per group-by field: its column's type.
    pub key_types: Vec<ColumnType>,
    /// The group-by fields grouped by, by index into the view's (all of them for cells).
    pub kept: Vec<usize>,
    bucket: Bucket,
    /// Per metric.
    pub aggs: Vec<Agg>,
    fields: Vec<Option<String>>,
    /// Per metric folded from a list: the metric whose list column it reads (itself, or an
    /// earlier one listing the same values).
    lists: Vec<usize>,
}

impl ViewPlan {
    /// Grouped into the view's cells.
    pub fn new(view: &Arc<ViewDef>, source: &SourceDef) -> Self {
        Self::grouped(
            view,
            source,
            Bucket::Cell,
            (0..view.group_by.len()).collect(),
        )
    }

    /// Grouped straight into an answer's groups (`step_ms` wide buckets, or one from
    /// `from_ms`; the `kept` group-by fields), where that equals merging the cells: `None` when
    /// a metric of the view is split-sensitive (`top_k`). Float sums are then folded from each
    /// group's values as the speed layer folds them, not summed by Polars.
    pub fn answer(
        view: &Arc<ViewDef>,
        source: &SourceDef,
        step_ms: Option<i64>,
        from_ms: i64,
        kept: Vec<usize>,
    ) -> Option<Self> {
        if view
            .metrics
            .iter()
            .any(|m| matches!(m.expr, MetricExpr::TopK { .. }))
        {
            return None;
        }
        let bucket = step_ms.map_or(Bucket::Whole(from_ms), Bucket::Step);
        let mut plan = Self::grouped(view, source, bucket, kept);
        for agg in &mut plan.aggs {
            if let Agg::Sum(ColumnType::Float64) | Agg::Avg(ColumnType::Float64) = agg {
                *agg = Agg::Fold(ColumnType::Float64);
            }
        }
        plan.lists = plan.list_columns();
        Some(plan)
    }

    fn grouped(view: &Arc<ViewDef>, source: &SourceDef, bucket: Bucket, kept: Vec<usize>) -> Self {
        let type_of = |slot: usize| {
            source
                .fields
                .get(slot)
                .map_or(ColumnType::Literal, |f| ColumnType::of(f.kind))
        };
        let key_types = view.group_by.iter().map(|f| type_of(f.slot)).collect();
        let mut fields = Vec::new();
        let aggs: Vec<Agg> = view
            .metrics
            .iter()
            .map(|m| {
                fields.push(
                    m.slot
                        .and_then(|s| source.fields.get(s))
                        .map(|f| f.name.clone()),
                );
                let Some(slot) = m.slot else {
                    return Agg::Count;
                };
                let ty = type_of(slot);
                match (&m.expr, ty.is_native_number()) {
                    (MetricExpr::Count, _) => Agg::Count,
                    (MetricExpr::Sum { .. }, true) => Agg::Sum(ty),
                    (MetricExpr::Min { .. }, true) => Agg::Min(ty),
                    (MetricExpr::Max { .. }, true) => Agg::Max(ty),
                    (MetricExpr::Avg { .. }, true) => Agg::Avg(ty),
                    _ => Agg::Fold(ty),
                }
            })
            .collect();
        let mut plan = Self {
            view: Arc::clone(view),
            key_types,
            kept,
            bucket,
            aggs,
            fields,
            lists: Vec::new(),
        };
        plan.lists = plan.list_columns();
        plan
    }

    /// Per metric, the metric whose list column it reads. A distinct count needs each value
    /// once: its list holds the group's unique values (the sketch of the unique values is the
    /// sketch of all of them). Metrics that list the same values share one list column.
    fn list_columns(&self) -> Vec<usize> {
        let list_key = |i: usize| {
            let unique = matches!(self.view.metrics[i].expr, MetricExpr::ApproxDistinct { .. });
            (self.fields[i].clone(), unique)
        };
        let folded = |i: usize| matches!(self.aggs[i], Agg::Fold(_));
        (0..self.aggs.len())
            .map(|i| {
                (0..i)
                    .find(|&j| folded(j) && folded(i) && list_key(j) == list_key(i))
                    .unwrap_or(i)
            })
            .collect()
    }

    /// Group keys: the kept group-by fields, then the bucket.
    pub fn keys(&self) -> Vec<Expr> {
        let mut keys: Vec<Expr> = self
            .kept
            .iter()
            .map(|&i| col(self.view.group_by[i].name.as_str()))
            .collect();
        let bucket = match self.bucket {
            Bucket::Cell => super::bucket_expr(self.view.granularity_ms),
            Bucket::Step(step) => super::bucket_expr(step),
            Bucket::Whole(from_ms) => lit(from_ms),
        };
        keys.push(bucket.alias(BUCKET));
        keys
    }

    /// Output column names of metric `i`.
    pub fn column(i: usize) -> String {
        format!("_m{i}")
    }

    /// The list column a folded metric `i` reads.
    pub fn list_column(&self, i: usize) -> String {
        Self::column(self.lists[i])
    }

    pub fn count_column(i: usize) -> String {
        format!("_m{i}_n")
    }

    /// The float sum kept beside an integer sum: Polars' i64 sum wraps around on overflow.
    pub fn float_sum_column(i: usize) -> String {
        format!("_m{i}_f")
    }

    pub fn aggregations(&self) -> Vec<Expr> {
        let mut out = vec![len().cast(DataType::UInt64).alias("_rows")];
        for (i, (agg, field)) in self.aggs.iter().zip(&self.fields).enumerate() {
            let name = Self::column(i);
            let input = || col(field.as_deref().unwrap_or_default());
            match agg {
                Agg::Count => out.push(len().cast(DataType::UInt64).alias(name)),
                Agg::Sum(ty) => {
                    out.push(input().sum().alias(name));
                    if *ty == ColumnType::Int64 {
                        out.push(float_sum(input(), i));
                    }
                }
                Agg::Min(_) => out.push(input().min().alias(name)),
                Agg::Max(_) => out.push(input().max().alias(name)),
                Agg::Avg(ty) => {
                    out.push(input().sum().alias(name));
                    if *ty == ColumnType::Int64 {
                        out.push(float_sum(input(), i));
                    }
                    out.push(
                        input()
                            .count()
                            .cast(DataType::UInt64)
                            .alias(Self::count_column(i)),
                    );
                }
                Agg::Fold(_) if self.lists[i] != i => {}
                Agg::Fold(ty) => match self.view.metrics[i].expr {
                    MetricExpr::ApproxDistinct { .. } if hashes_distinct(*ty) => {
                        out.push(distinct_hashes(input(), *ty).unique().alias(name))
                    }
                    MetricExpr::ApproxDistinct { .. } => out.push(input().unique().alias(name)),
                    _ => out.push(input().alias(name)),
                },
            }
        }
        out
    }
}

/// Whether an `approx_distinct` of a column of this type is listed as the sketch's hashes of
/// its values (a list of numbers: cheaper to build, deduplicate and fold than the values) rather
/// than as the values.
pub(crate) fn hashes_distinct(ty: ColumnType) -> bool {
    matches!(
        ty,
        ColumnType::Utf8 | ColumnType::Int64 | ColumnType::Float64
    )
}

/// Each value's sketch hash ([`Hll::hash`] of its key form, as the speed layer hashes it);
/// nulls stay null (a distinct count skips them).
fn distinct_hashes(input: Expr, ty: ColumnType) -> Expr {
    input.map(
        move |column| hash_column(&column, ty),
        |_, field| Ok(Field::new(field.name().clone(), DataType::UInt64)),
    )
}

fn hash_column(column: &Column, ty: ColumnType) -> PolarsResult<Column> {
    let mut key = String::new();
    let mut of_value = |value: Value| {
        key.clear();
        value.write_key(&mut key);
        Hll::hash(key.as_bytes())
    };
    let hashes: UInt64Chunked = match ty {
        ColumnType::Utf8 => column
            .str()?
            .iter()
            .map(|s| s.map(|s| Hll::hash(s.as_bytes())))
            .collect(),
        ColumnType::Int64 => column
            .i64()?
            .iter()
            .map(|x| x.map(|x| of_value(Value::Int(x))))
            .collect(),
        ColumnType::Float64 => column
            .f64()?
            .iter()
            .map(|x| x.map(|x| of_value(Value::Float(x))))
            .collect(),
        ColumnType::Boolean | ColumnType::Literal => {
            polars_bail!(InvalidOperation: "no sketch hashes for {ty:?} columns")
        }
    };
    Ok(hashes.with_name(column.name().clone()).into_column())
}

fn float_sum(input: Expr, i: usize) -> Expr {
    input
        .cast(DataType::Float64)
        .sum()
        .alias(ViewPlan::float_sum_column(i))
}

#[cfg(test)]
mod tests {
    use braid_shared::aggregate::MetricState;

    use super::*;

    /// A distinct count folded from the hashes Polars lists equals the speed layer's, which
    /// inserts each value's key form: strings, integers and floats (negative, fractional,
    /// integral, huge), nulls skipped.
    #[test]
    fn sketch_hashes_of_every_hashed_type_equal_the_speed_layers_inserts() {
        let expr = MetricExpr::ApproxDistinct { field: "x".into() };
        let long = "ü\u{1}".repeat(5_000);
        let strings = [Some("a"), None, Some(""), Some(long.as_str()), Some("a")];
        let ints = [Some(0), Some(-7), None, Some(i64::MAX), Some(i64::MIN)];
        let floats = [Some(1.5), Some(-0.25), Some(3.0), None, Some(1e300)];
        let columns = [
            (
                ColumnType::Utf8,
                Column::new("x".into(), strings),
                strings.map(|s| s.map_or(Value::Null, |s| Value::Str(s.into()))),
            ),
            (
                ColumnType::Int64,
                Column::new("x".into(), ints),
                ints.map(|x| x.map_or(Value::Null, Value::Int)),
            ),
            (
                ColumnType::Float64,
                Column::new("x".into(), floats),
                floats.map(|x| x.map_or(Value::Null, Value::Float)),
            ),
        ];
        for (ty, column, values) in columns {
            assert!(hashes_distinct(ty));
            let hashes = hash_column(&column, ty).unwrap();
            assert_eq!(hashes.null_count(), 1, "{ty:?}");
            let mut folded = MetricState::empty(&expr);
            let MetricState::Distinct(hll) = &mut folded else {
                unreachable!()
            };
            for hash in hashes.u64().unwrap().iter().flatten() {
                hll.insert_hash(hash);
            }
            let mut speed = MetricState::empty(&expr);
            let mut scratch = String::new();
            for value in &values {
                speed.update(value, &mut scratch);
            }
            assert_eq!(folded, speed, "{ty:?}");
            assert!(folded.finalize(&expr).as_u64().unwrap() >= 3, "{ty:?}");
        }
        assert!(!hashes_distinct(ColumnType::Literal));
        assert!(hash_column(&Column::new("x".into(), ["1"]), ColumnType::Literal).is_err());
    }
}
