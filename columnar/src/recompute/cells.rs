//! The grouped frame, one row per (group key, bucket), gives each cell's states. The batch layer
//! writes them as a snapshot layer's cell frame: the bucket, the group-by columns as they are,
//! and per metric the encoded state of each cell. States live only while they are encoded, so no
//! view state is built in memory.

use braid_shared::aggregate::{AvgState, Extreme, MetricState, SumState};
use braid_shared::{MetricExpr, Value, ViewDef};
use polars::prelude::*;

use super::plan::{Agg, BUCKET, ViewPlan, hashes_distinct};
use crate::columns::{ColumnType, PARTITION, ValueReader};
use crate::error::{Error, Result};
use crate::snapshot::{BUCKET_COLUMN, state_column};

/// Builds the cell frame; also returns the number of archive rows grouped. A frame grouped per
/// partition too (with the partition column) gives per-partition cells, folded into the view's
/// cells (in partition order, see [`super::fold_partitions`]) when `fold` is set, or kept per
/// partition (the partition column beside the bucket) for a sharded run's merge otherwise.
pub(crate) fn frame(
    view: &ViewDef,
    plan: &ViewPlan,
    grouped: &DataFrame,
    fold: bool,
) -> Result<(DataFrame, u64)> {
    let rows: u64 = grouped.column("_rows")?.u64()?.sum().unwrap_or(0);
    let per_partition = grouped.column(PARTITION).is_ok();
    let mut columns = vec![
        grouped
            .column(BUCKET)?
            .clone()
            .with_name(BUCKET_COLUMN.into()),
    ];
    if per_partition {
        columns.push(grouped.column(PARTITION)?.clone());
    }
    // Cast: a field absent from every file scanned comes out as a column of nulls.
    for (field, ty) in view.group_by.iter().zip(&plan.key_types) {
        columns.push(grouped.column(&field.name)?.cast(&ty.dtype())?);
    }
    let mut keys = DataFrame::new(grouped.height(), columns)?;
    let runs = match per_partition && fold {
        true => {
            let runs = Runs::of(&keys, view)?;
            keys = keys.drop(PARTITION)?;
            runs
        }
        false => None,
    };
    // With cells in several partitions, the grouped rows of numbers are taken in the cells'
    // order (the single rows, then each folded cell's rows together), so a metric of them folds
    // a cell's states as they pass. Lists (costly to reorder) are read in their order, each
    // folded cell's states held until its last partition's row.
    let mut ordered = None;
    if let Some(runs) = &runs {
        keys = keys.take(&IdxCa::from_vec("".into(), runs.out_rows.clone()))?;
        // The metrics' columns only: the keys were taken above.
        let is_key = |name: &str| {
            name == BUCKET || name == PARTITION || view.group_by.iter().any(|f| f.name == name)
        };
        let numbers = grouped
            .columns()
            .iter()
            .filter(|c| !matches!(c.dtype(), DataType::List(_)) && !is_key(c.name()))
            .map(|c| c.name().clone());
        ordered = Some(
            grouped
                .select(numbers)?
                .take(&IdxCa::from_vec("".into(), runs.order()))?,
        );
    }
    let height = keys.height();
    // Metrics are encoded in parallel, each column by one thread.
    let encoders = in_parallel(view.metrics.len(), |metric| {
        let (input, in_order) = match (&ordered, plan.aggs[metric]) {
            (Some(ordered), agg) if !matches!(agg, Agg::Fold(_)) => (ordered, true),
            _ => (grouped, false),
        };
        let mut folder = Folder {
            runs: runs.as_ref(),
            in_order,
            encoder: Encoder::new(height),
            merged: None,
            cell: 0,
            stash: Vec::new(),
            failed: None,
        };
        let started = std::time::Instant::now();
        metric_states(view, plan, input, metric, |row, state| {
            folder.push(row, state)
        })?;
        let encoder = folder.finish();
        tracing::debug!(view = %view.name, metric = %view.metrics[metric].name, ms = started.elapsed().as_millis(), "metric encoded");
        encoder
    })?;
    let mut columns = keys.into_columns();
    for (metric, encoder) in view.metrics.iter().zip(encoders) {
        columns.push(encoder.finish(&state_column(&metric.name)));
    }
    Ok((DataFrame::new(height, columns)?, rows))
}

/// How per-partition cells fold into a view's cells: most cells are in one partition (their row
/// is kept as it is); the rest merge their rows in partition order.
struct Runs {
    /// Per row, its slot among the rows of cells in several partitions (a cell's rows in
    /// consecutive slots, in partition order), or [`Runs::SINGLE`].
    slot: Vec<u32>,
    /// The row of each slot.
    slot_rows: Vec<IdxSize>,
    /// The end (exclusive) of each folded cell's slots.
    ends: Vec<usize>,
    /// The row giving each output cell's key: the single rows in order, then each folded cell's
    /// first row.
    out_rows: Vec<IdxSize>,
}

impl Runs {
    const SINGLE: u32 = u32::MAX;

    /// `None` when no cell is in two partitions. `keys` holds the bucket, the partition and the
    /// group-by columns (named as in a cell frame), one row per partition, key and bucket.
    fn of(keys: &DataFrame, view: &ViewDef) -> Result<Option<Self>> {
        let mut by: Vec<Expr> = view.group_by.iter().map(|f| col(f.name.as_str())).collect();
        by.push(col(BUCKET_COLUMN));
        // (cell, row) pairs, a cell's pairs together.
        let pairs = keys
            .clone()
            .lazy()
            .select(by.clone())
            .with_row_index(ROW, None)
            .group_by(by)
            .agg([col(ROW)])
            .with_row_index(CELL, None)
            .explode(
                by_name([ROW], true, false),
                ExplodeOptions {
                    empty_as_null: false,
                    keep_nulls: false,
                },
            )
            .select([col(CELL), col(ROW)])
            .collect()?;
        let cells: Vec<IdxSize> = pairs.column(CELL)?.idx()?.iter().flatten().collect();
        let rows: Vec<IdxSize> = pairs.column(ROW)?.idx()?.iter().flatten().collect();
        if cells.len() != keys.height() || rows.len() != keys.height() {
            return Err(Error::Internal(format!(
                "folding partitions: {} cell rows paired, {} expected",
                rows.len(),
                keys.height()
            )));
        }
        let mut runs = Self {
            slot: vec![Self::SINGLE; rows.len()],
            slot_rows: Vec::new(),
            ends: Vec::new(),
            out_rows: Vec::new(),
        };
        let partitions = keys.column(PARTITION)?.i32()?;
        let partition = |row: &IdxSize| partitions.get(*row as usize);
        let mut start = 0;
        for i in 1..=cells.len() {
            if i < cells.len() && cells[i] == cells[start] {
                continue;
            }
            if i - start > 1 {
                let mut cell_rows = rows[start..i].to_vec();
                cell_rows.sort_by_key(partition);
                for row in cell_rows {
                    runs.slot[row as usize] = runs.slot_rows.len() as u32;
                    runs.slot_rows.push(row);
                }
                runs.ends.push(runs.slot_rows.len());
            }
            start = i;
        }
        if runs.ends.is_empty() {
            return Ok(None);
        }
        runs.out_rows = (0..rows.len() as IdxSize)
            .filter(|&row| runs.slot[row as usize] == Self::SINGLE)
            .collect();
        let mut first = 0;
        for &end in &runs.ends {
            runs.out_rows.push(runs.slot_rows[first]);
            first = end;
        }
        Ok(Some(runs))
    }

    /// Rows of single cells (each row a cell of its own).
    fn singles(&self) -> usize {
        self.out_rows.len() - self.ends.len()
    }

    /// Every row in the cells' order: the single rows in order, then each folded cell's rows
    /// (its slots).
    fn order(&self) -> Vec<IdxSize> {
        let mut order = Vec::with_capacity(self.slot.len());
        order.extend_from_slice(&self.out_rows[..self.singles()]);
        order.extend_from_slice(&self.slot_rows);
        order
    }

    /// Each folded cell's slots.
    fn folded(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(a, b)| a..b)
    }
}

/// `work(i)` for every `i` below `n`, as many at a time as there are cores (on scoped
/// threads); the results in order, or the first error.
pub(crate) fn in_parallel<T: Send>(
    n: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n);
    if threads <= 1 {
        return (0..n).map(work).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<T>>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let result = work(i);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(Error::Internal("a parallel task panicked".into())))
        })
        .collect()
}

/// Encodes one metric's states arriving row by row into a cell frame's state column: a single
/// row's state at once, and the states of a cell in several partitions merged in partition
/// order. Rows in the cells' order ([`Runs::order`]) are merged as they arrive, each cell
/// encoded with its last row; rows in the grouped frame's order are held until all the
/// metric's rows are there.
struct Folder<'a> {
    runs: Option<&'a Runs>,
    /// Whether rows arrive in the cells' order.
    in_order: bool,
    encoder: Encoder,
    /// In order: the folded cell being merged, and its index among the folded cells.
    merged: Option<MetricState>,
    cell: usize,
    /// Out of order: the folded cells' states, by slot.
    stash: Vec<Option<MetricState>>,
    failed: Option<Error>,
}

impl Folder<'_> {
    fn push(&mut self, row: usize, state: MetricState) {
        match self.runs {
            None => self.encoder.push(&state),
            Some(runs) if self.in_order => self.push_in_order(runs, row, state),
            Some(runs) => match runs.slot[row] {
                Runs::SINGLE => self.encoder.push(&state),
                slot => {
                    if self.stash.is_empty() {
                        self.stash.resize_with(runs.slot_rows.len(), || None);
                    }
                    self.stash[slot as usize] = Some(state);
                }
            },
        }
    }

    fn push_in_order(&mut self, runs: &Runs, row: usize, state: MetricState) {
        let Some(slot) = row.checked_sub(runs.singles()) else {
            self.encoder.push(&state);
            return;
        };
        match &mut self.merged {
            None => self.merged = Some(state),
            Some(merged) => {
                if let Err(error) = merged.merge(&state) {
                    self.failed.get_or_insert(error.into());
                }
            }
        }
        if runs.ends.get(self.cell) == Some(&(slot + 1)) {
            if let Some(merged) = self.merged.take() {
                self.encoder.push(&merged);
            }
            self.cell += 1;
        }
    }

    /// Merges the stashed states, each folded cell's in partition order, after the single
    /// rows' states.
    fn finish(mut self) -> Result<Encoder> {
        if let Some(runs) = self.runs.filter(|_| !self.stash.is_empty()) {
            for slots in runs.folded() {
                let mut states = self.stash[slots].iter_mut().filter_map(Option::take);
                if let Some(mut merged) = states.next() {
                    for state in states {
                        if let Err(error) = merged.merge(&state) {
                            self.failed.get_or_insert(error.into());
                        }
                    }
                    self.encoder.push(&merged);
                }
            }
        }
        match self.failed {
            Some(error) => Err(error),
            None if self.merged.is_some() => Err(Error::Internal(
                "folding partitions: a cell's rows ended early".to_owned(),
            )),
            None => Ok(self.encoder),
        }
    }
}

/// Merges the cells of one key and bucket (rows of several partitions) in partition order; see
/// [`super::fold_partitions`].
pub(crate) fn fold_partitions(view: &ViewDef, cells: DataFrame) -> Result<DataFrame> {
    if cells.column(PARTITION).is_err() {
        return Ok(cells);
    }
    let runs = Runs::of(&cells, view)?;
    let cells = cells.drop(PARTITION)?;
    let Some(runs) = runs else {
        return Ok(cells);
    };
    let mut out = cells.take(&IdxCa::from_vec("".into(), runs.out_rows.clone()))?;
    let height = out.height();
    let columns = in_parallel(view.metrics.len(), |i| {
        let name = state_column(&view.metrics[i].name);
        let states = cells.column(&name)?.binary()?;
        let state = |row: IdxSize| {
            states
                .get(row as usize)
                .ok_or_else(|| Error::Internal(format!("cell row {row} has no {name}")))
        };
        let mut encoder = Encoder::new(height);
        for (row, &slot) in runs.slot.iter().enumerate() {
            if slot == Runs::SINGLE {
                encoder.push_encoded(state(row as IdxSize)?);
            }
        }
        for slots in runs.folded() {
            let mut merged = MetricState::decode(state(runs.slot_rows[slots.start])?)?;
            for &row in &runs.slot_rows[slots.start + 1..slots.end] {
                merged.merge(&MetricState::decode(state(row)?)?)?;
            }
            encoder.push(&merged);
        }
        Ok(encoder.finish(&name))
    })?;
    for column in columns {
        out.with_column(column)?;
    }
    Ok(out)
}

const ROW: &str = "_row";
const CELL: &str = "_cell";

/// Hands every cell's state of every metric to `each(metric, cell, state)`, metric by metric,
/// cells in the grouped frame's order.
pub(crate) fn each_state(
    view: &ViewDef,
    plan: &ViewPlan,
    grouped: &DataFrame,
    mut each: impl FnMut(usize, usize, MetricState),
) -> Result<()> {
    for i in 0..view.metrics.len() {
        metric_states(view, plan, grouped, i, |row, state| each(i, row, state))?;
    }
    Ok(())
}

/// Hands every cell's state of metric `i` to `each(cell, state)`, cells in the grouped frame's
/// order.
fn metric_states(
    view: &ViewDef,
    plan: &ViewPlan,
    grouped: &DataFrame,
    i: usize,
    mut each: impl FnMut(usize, MetricState),
) -> Result<()> {
    if grouped.height() == 0 {
        return Ok(());
    }
    let (agg, metric) = (&plan.aggs[i], &view.metrics[i]);
    let column = match agg {
        Agg::Fold(_) => grouped.column(&plan.list_column(i))?,
        _ => grouped.column(&ViewPlan::column(i))?,
    };
    let mut row = 0;
    let mut push = |state: MetricState| {
        each(row, state);
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

    fn push_encoded(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
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
            match (&mut state, ty) {
                (MetricState::Distinct(hll), ty) if hashes_distinct(ty) => {
                    for hash in series.u64()?.iter().flatten() {
                        hll.insert_hash(hash);
                    }
                }
                (_, ColumnType::Utf8) => {
                    for s in series.str()?.iter() {
                        match s {
                            Some(s) => state.update_str(s),
                            None => state.update(&Value::Null, &mut scratch),
                        }
                    }
                }
                (_, ColumnType::Float64) => {
                    for x in series.f64()?.iter() {
                        state.update(&x.map_or(Value::Null, Value::Float), &mut scratch);
                    }
                }
                (_, ColumnType::Int64) => {
                    for x in series.i64()?.iter() {
                        state.update(&x.map_or(Value::Null, Value::Int), &mut scratch);
                    }
                }
                (_, ColumnType::Boolean | ColumnType::Literal) => {
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
