//! How each metric of a view is aggregated per group.

use std::sync::Arc;

use braid_shared::{MetricExpr, SourceDef, ViewDef};
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
                Agg::Fold(_) => match self.view.metrics[i].expr {
                    MetricExpr::ApproxDistinct { .. } => out.push(input().unique().alias(name)),
                    _ => out.push(input().alias(name)),
                },
            }
        }
        out
    }
}

fn float_sum(input: Expr, i: usize) -> Expr {
    input
        .cast(DataType::Float64)
        .sum()
        .alias(ViewPlan::float_sum_column(i))
}
