//! Recompute: views' cells from the archive, with Polars. One lazy scan of the listed files
//! (filtered by offset where a file straddles the wanted offsets), shared by the views of a
//! source that read the same offsets, grouped by each view's keys and event-time bucket. Exact
//! metrics on typed numeric columns are Polars aggregations; sketches (and metrics on untyped
//! fields) take each group's values as a list column, folded into the shared states column by
//! column, so every state equals the speed layer's.
//!
//! The batch layer writes the cells as snapshot layers ([`compute_all`]); the serving layer's
//! as-of answers fold them straight into an answer's groups ([`group_cells`], restricted to the
//! query's buckets and filters).
//!
//! - `plan`: the aggregation of each metric.
//! - `cells`: each cell's states from the grouped frame, and the cell frame a snapshot stores.

mod cells;
mod plan;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use braid_shared::aggregate::MetricState;
use braid_shared::{CellQuery, Coverage, SourceDef, Value, ViewDef};
use polars::prelude::*;

use crate::columns::{EVENT_TIME, OFFSET, PARTITION, ValueReader};
use crate::error::{Error, Result};
use braid_store::manifest::{FileKind, PartitionManifest};

use plan::{BUCKET, ViewPlan};

/// One archive file to read, and the offsets of its partition wanted from it.
#[derive(Debug, Clone)]
pub struct ScanFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub rows: u64,
    pub from: i64,
    pub to: i64,
    /// Every row of the file is wanted (no offset filter needed).
    pub whole: bool,
    /// The event times the file holds, `[min, max]`, where the manifest says.
    pub time_range_ms: Option<(i64, i64)>,
}

/// The events files of `source` holding offsets `[from, to)` of each partition (with `times`,
/// only those that may hold events in `[first_ms, end_ms)`), as local files: a remote storage
/// downloads them into its cache.
pub fn files_between(
    storage: &dyn braid_store::Storage,
    source: &SourceDef,
    manifests: &[PartitionManifest],
    (from, to): (&Coverage, &Coverage),
    times: Option<(i64, i64)>,
) -> Result<Vec<ScanFile>> {
    let mut files = Vec::new();
    for manifest in manifests.iter().filter(|m| m.topic == source.topic) {
        let tp = manifest.topic_partition();
        let (lo, hi) = (from.of(&tp), to.of(&tp));
        if hi <= lo {
            continue;
        }
        for entry in &manifest.entries {
            if entry.to <= lo || entry.from >= hi {
                continue;
            }
            let whole = entry.from >= lo && entry.to <= hi;
            for file in &entry.files {
                let in_time = |(first_ms, end_ms): (i64, i64)| {
                    file.time_range_ms
                        .is_none_or(|(min, max)| min < end_ms && max >= first_ms)
                };
                if file.source != source.name
                    || file.kind != FileKind::Events
                    || !times.is_none_or(in_time)
                {
                    continue;
                }
                files.push(ScanFile {
                    path: file.local(storage)?,
                    bytes: file.bytes,
                    rows: file.rows,
                    from: lo,
                    to: hi,
                    whole,
                    time_range_ms: file.time_range_ms,
                });
            }
        }
    }
    Ok(files)
}

/// A view's cells over some archive files, as the frame a snapshot layer stores (see
/// [`crate::snapshot`]), and how many archive rows they came from.
pub struct Computed {
    pub cells: DataFrame,
    pub rows: u64,
}

/// Computes several views of one source from the same files in one Polars query, so the files
/// are scanned once. Per view, `None` when there is nothing to read.
///
/// Cells are computed per partition first ([`compute_partitions`]), then the cells of one key
/// and bucket in several partitions are merged in partition order ([`fold_partitions`]). A
/// sharded run computes the first step on each shard's partitions and the second when it
/// merges, so it gives these cells exactly: the order matters for `top_k`, whose merge is not
/// associative beyond its capacity, and for the last bits of float sums.
pub fn compute_all(
    views: &[Arc<ViewDef>],
    source: &SourceDef,
    files: &[ScanFile],
) -> Result<Vec<Option<Computed>>> {
    collected(views, source, files, true)
}

/// The first step of [`compute_all`]: each view's cells per partition, as a cell frame with
/// the partition column beside the bucket (one row per partition, key and bucket).
pub fn compute_partitions(
    views: &[Arc<ViewDef>],
    source: &SourceDef,
    files: &[ScanFile],
) -> Result<Vec<Option<Computed>>> {
    collected(views, source, files, false)
}

/// [`compute_each`]'s cells, per view (`None` when there is nothing to read).
fn collected(
    views: &[Arc<ViewDef>],
    source: &SourceDef,
    files: &[ScanFile],
    fold: bool,
) -> Result<Vec<Option<Computed>>> {
    let mut out: Vec<Option<Computed>> = views.iter().map(|_| None).collect();
    compute_each(views, source, files, fold, |i, computed| {
        out[i] = Some(computed);
        Ok::<_, Error>(())
    })?;
    Ok(out)
}

/// [`compute_all`] (`fold`) or [`compute_partitions`], handing each view's cells to
/// `each(index of the view, cells)` on the calling thread as soon as they are encoded, so the
/// caller writes one view's cells while others are still being encoded. Views are encoded in
/// parallel, as many at a time as there are cores. Views with nothing to read are not handed
/// over.
pub fn compute_each<E: From<Error>>(
    views: &[Arc<ViewDef>],
    source: &SourceDef,
    files: &[ScanFile],
    fold: bool,
    mut each: impl FnMut(usize, Computed) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    if files.is_empty() {
        return Ok(());
    }
    for file in files {
        check_listed(&file.path, file.bytes)?;
    }
    let started = std::time::Instant::now();
    let input = scan(files, None, source)?;
    let plans: Vec<ViewPlan> = views.iter().map(|v| ViewPlan::new(v, source)).collect();
    let queries: Vec<DslPlan> = plans
        .iter()
        .map(|plan| {
            let mut keys = plan.keys();
            keys.push(col(PARTITION));
            input
                .clone()
                .group_by(keys)
                .agg(plan.aggregations())
                .logical_plan
        })
        .collect();
    let grouped = LazyFrame::collect_all_with_engine(queries, Engine::Auto, OptFlags::default())
        .map_err(|e| scan_error(files, e))?;
    let grouped_ms = started.elapsed().as_millis();
    // Work queue of grouped frames: each taken by one encoder, and dropped once encoded.
    let work: Vec<std::sync::Mutex<Option<DataFrame>>> = grouped
        .into_iter()
        .map(|g| std::sync::Mutex::new(Some(g)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let encoders = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(views.len());
    std::thread::scope(|scope| {
        // Bounded: an encoder waits while the caller still writes earlier views.
        let (sent, received) = std::sync::mpsc::sync_channel(encoders);
        for _ in 0..encoders {
            let sent = sent.clone();
            let (work, next, stop, plans) = (&work, &next, &stop, &plans);
            scope.spawn(move || {
                use std::sync::atomic::Ordering::Relaxed;
                while !stop.load(Relaxed) {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(slot) = work.get(i) else { break };
                    let grouped = slot.lock().ok().and_then(|mut g| g.take());
                    let Some(grouped) = grouped else { continue };
                    let encoding = std::time::Instant::now();
                    let view = &views[i];
                    let result = cells::frame(view, &plans[i], &grouped, fold);
                    if let Ok((cells, _)) = &result {
                        tracing::debug!(view = %view.name, files = files.len(), partition_cells = grouped.height(), cells = cells.height(), grouped_ms, encoded_ms = encoding.elapsed().as_millis(), "view recomputed");
                    }
                    drop(grouped);
                    if sent.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sent);
        let mut handed = || -> std::result::Result<(), E> {
            for (i, result) in received.iter() {
                let (cells, rows) = result?;
                each(i, Computed { cells, rows })?;
            }
            Ok(())
        };
        let result = handed();
        if result.is_err() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // Dropped before the encoders are joined: one waiting to hand over a view stops.
        drop(received);
        result
    })
}

/// The second step of [`compute_all`]: a frame of per-partition cells (from one
/// [`compute_partitions`] or several, of disjoint partitions) as the view's cells, the states
/// of one key and bucket merged in partition order.
pub fn fold_partitions(view: &ViewDef, cells: DataFrame) -> Result<DataFrame> {
    cells::fold_partitions(view, cells)
}

/// One view's cells over some archive files, grouped but not yet states: one row per cell, or
/// per answer group (see [`group_cells`]).
pub struct GroupedCells {
    view: Arc<ViewDef>,
    plan: ViewPlan,
    frame: DataFrame,
}

impl GroupedCells {
    /// Rows: cells, or answer groups.
    pub fn len(&self) -> usize {
        self.frame.height()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each row's bucket start.
    pub fn buckets(&self) -> Result<Vec<i64>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let column = self.frame.column(BUCKET)?.cast(&DataType::Int64)?;
        Ok(column.i64()?.iter().map(|b| b.unwrap_or(0)).collect())
    }

    /// Each row's value of the view's `i`-th group-by field (one the rows are grouped by).
    pub fn group_values(&self, i: usize) -> Result<Vec<Value>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let field = &self.view.group_by[i];
        let ty = self.plan.key_types[i];
        let column = self.frame.column(&field.name)?.cast(&ty.dtype())?;
        ValueReader::new(&column, ty)?
            .values()
            .map_err(Error::Internal)
    }

    /// Every row's state of every metric: `each(metric, row, state)`, metric by metric, rows
    /// in order.
    pub fn states(&self, each: impl FnMut(usize, usize, MetricState)) -> Result<()> {
        cells::each_state(&self.view, &self.plan, &self.frame, each)
    }
}

/// How an answer regroups cells: `step_ms` wide buckets (or one bucket from `from_ms`), and
/// the group-by fields it keeps, by index into the view's.
#[derive(Debug, Clone)]
pub struct AnswerGroups {
    pub step_ms: Option<i64>,
    pub from_ms: i64,
    pub group_by: Vec<usize>,
}

/// The cells of `view` over `files`, restricted to those `cells` selects (buckets and
/// group-by values). With `answer`,
/// rows are that answer's groups instead, wherever that gives the same states as merging the
/// cells: every sketch but `top_k` gives exactly the sketch of the whole for any split of its
/// input, so only a view with a `top_k` metric is grouped into cells then.
pub fn group_cells(
    view: &Arc<ViewDef>,
    source: &SourceDef,
    files: &[ScanFile],
    cells: &CellQuery,
    answer: Option<&AnswerGroups>,
) -> Result<GroupedCells> {
    for file in files {
        check_listed(&file.path, file.bytes)?;
    }
    let plan = answer
        .and_then(|a| ViewPlan::answer(view, source, a.step_ms, a.from_ms, a.group_by.clone()))
        .unwrap_or_else(|| ViewPlan::new(view, source));
    let frame = if files.is_empty() {
        DataFrame::empty()
    } else {
        scan(files, Some(selection(view, &plan, cells)), source)?
            .group_by(plan.keys())
            .agg(plan.aggregations())
            .collect()
            .map_err(|e| scan_error(files, e))?
    };
    Ok(GroupedCells {
        view: Arc::clone(view),
        plan,
        frame,
    })
}

/// The event times `[first, end)` of the buckets `cells` selects, for buckets `granularity_ms`
/// wide: from the first bucket's start to the last's end.
pub fn event_times(cells: &CellQuery, granularity_ms: i64) -> (i64, i64) {
    let g = granularity_ms;
    let align_up = |t: i64| t.saturating_add((g - t.rem_euclid(g)) % g);
    (align_up(cells.from_ms), align_up(cells.to_ms))
}

/// Rows of the buckets and with the group-by values `cells` selects, compared as stored.
fn selection(view: &ViewDef, plan: &ViewPlan, cells: &CellQuery) -> Expr {
    let (first, end) = event_times(cells, view.granularity_ms);
    let mut filter = col(EVENT_TIME)
        .gt_eq(lit(first))
        .and(col(EVENT_TIME).lt(lit(end)));
    for (i, value) in &cells.filters {
        let name = &view.group_by[*i].name;
        filter = filter.and(crate::events::equals(name, plan.key_types[*i], value));
    }
    filter
}

/// Checks that a listed file is there, has the listed size and ends like a Parquet file, so a
/// read fails up front, naming the file, instead of deep inside a scan.
pub fn check_listed(path: &Path, bytes: u64) -> Result<()> {
    let damaged = |reason: String| Error::ArchiveFile {
        path: path.to_owned(),
        reason,
    };
    let meta =
        fs::metadata(path).map_err(|e| damaged(format!("listed in the manifest but {e}")))?;
    if meta.len() != bytes {
        return Err(damaged(format!(
            "is {} bytes, the manifest lists {bytes}: the file was truncated or replaced",
            meta.len()
        )));
    }
    let mut tail = [0u8; 4];
    {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let mut file = File::open(path).map_err(|e| damaged(e.to_string()))?;
        file.seek(SeekFrom::End(-4))
            .and_then(|_| file.read_exact(&mut tail))
            .map_err(|e| damaged(format!("unreadable: {e}")))?;
    }
    if &tail != b"PAR1" {
        return Err(damaged("is not a Parquet file (no PAR1 footer)".to_owned()));
    }
    Ok(())
}

/// One lazy frame over every file: the files read whole in one scan, each straddling file in
/// its own scan with an offset filter, each file written before `source` read some field
/// decoded again from its messages; `filter` on all of them. Every frame holds the source's
/// fields and the event time, partition and offset, in that order.
fn scan(files: &[ScanFile], filter: Option<Expr>, source: &SourceDef) -> Result<LazyFrame> {
    let args = crate::events::scan_args;
    let path = |f: &ScanFile| PlRefPath::try_from_path(&f.path);
    let mut wanted: Vec<Expr> = source.fields.iter().map(|f| col(f.name.as_str())).collect();
    wanted.extend([col(EVENT_TIME), col(PARTITION), col(OFFSET)]);
    let restrict = |frame: LazyFrame| {
        let frame = match &filter {
            Some(filter) => frame.filter(filter.clone()),
            None => frame,
        };
        frame.select(wanted.clone())
    };
    let mut current = Vec::new();
    let mut frames = Vec::new();
    for file in files {
        if crate::redecode::is_stale(&file.path, source)? {
            let offsets = (!file.whole).then_some((file.from, file.to));
            let decoded = crate::redecode::decoded(&file.path, source, offsets)?;
            frames.push(restrict(decoded.lazy()));
        } else {
            current.push(file);
        }
    }
    let whole: Vec<PlRefPath> = current
        .iter()
        .filter(|f| f.whole)
        .map(|f| path(f))
        .collect::<PolarsResult<_>>()?;
    if !whole.is_empty() {
        frames.push(restrict(LazyFrame::scan_parquet_files(
            whole.into(),
            args(),
        )?));
    }
    for file in current.iter().filter(|f| !f.whole) {
        let offsets = col(OFFSET)
            .gt_eq(lit(file.from))
            .and(col(OFFSET).lt(lit(file.to)));
        frames.push(restrict(
            LazyFrame::scan_parquet(path(file)?, args())?.filter(offsets),
        ));
    }
    if frames.len() == 1 {
        return Ok(frames.remove(0));
    }
    Ok(concat(
        frames,
        UnionArgs {
            rechunk: false,
            ..Default::default()
        },
    )?)
}

fn scan_error(files: &[ScanFile], error: PolarsError) -> Error {
    let text = error.to_string();
    match files
        .iter()
        .find(|f| text.contains(f.path.to_string_lossy().as_ref()))
    {
        Some(file) => Error::ArchiveFile {
            path: file.path.clone(),
            reason: text,
        },
        None => Error::Polars(error),
    }
}

/// The event-time bucket of each row, as Polars computes it (floor, like [`ViewDef::bucket_of`]).
fn bucket_expr(granularity_ms: i64) -> Expr {
    // `((t % g) + g) % g` is the floor remainder whichever sign convention `%` follows.
    let g = || lit(granularity_ms);
    col(EVENT_TIME) - ((col(EVENT_TIME) % g()) + g()) % g()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use braid_shared::Config;

    use super::*;
    use crate::columns::PARTITION;

    const CONFIG: &str = r#"
[kafka]
brokers = "127.0.0.1:9"
[storage]
dir = "unused"
[[source]]
name = "payments"
topic = "payments"
event_time = "ts"
[source.fields]
card_id = "string"
country = "string"
merchant_id = "string"
amount = "float"
qty = "int"
ts = "int"
[[view]]
name = "cards"
source = "payments"
group_by = ["card_id", "country"]
granularity = "1m"
[view.metrics]
tx = "count"
amount = "sum(amount)"
qty = "sum(qty)"
low = "min(amount)"
high = "max(qty)"
avg = "avg(amount)"
merchants = "approx_distinct(merchant_id)"
p90 = "quantile(amount, 0.9)"
[[view]]
name = "heavy"
source = "payments"
group_by = ["country"]
granularity = "1m"
[view.metrics]
tx = "count"
top = "top_k(merchant_id, 2)"
[[view]]
name = "heavy_hour"
source = "payments"
group_by = ["country"]
granularity = "1h"
[view.metrics]
top = "top_k(merchant_id, 2)"
amount = "sum(amount)"
"#;

    /// An archive file of `rows` generated events (some amounts null) over two hours.
    fn archive(dir: &Path, rows: usize) -> ScanFile {
        archive_of(dir, 0, 7, rows)
    }

    /// [`archive`] of partition `partition`, its events drawn from `seed`.
    fn archive_of(dir: &Path, partition: i32, seed: u64, rows: usize) -> ScanFile {
        let mut seed: u64 = seed;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let (mut cards, mut countries, mut merchants) = (vec![], vec![], vec![]);
        let (mut amounts, mut qtys, mut times) = (vec![], vec![], vec![]);
        for i in 0..rows {
            cards.push(format!("card-{}", next(40)));
            countries.push(["DE", "FR", "NL"][next(3) as usize].to_owned());
            merchants.push(format!("m-{}", next(500)));
            amounts.push((next(10) > 0).then(|| next(100_000) as f64 / 100.0 + 0.01));
            qtys.push(next(9) as i64 - 2);
            times.push(1_790_000_000_000 + (i as i64) * 7_200_000 / rows as i64);
        }
        let mut frame = df!(
            PARTITION => vec![partition; rows],
            OFFSET => (0..rows as i64).collect::<Vec<_>>(),
            EVENT_TIME => times.clone(),
            "card_id" => cards,
            "country" => countries,
            "merchant_id" => merchants,
            "amount" => amounts,
            "qty" => qtys,
            "ts" => times,
        )
        .unwrap();
        let path = dir.join(format!("events-{partition}.parquet"));
        let mut file = File::create(&path).unwrap();
        ParquetWriter::new(&mut file).finish(&mut frame).unwrap();
        ScanFile {
            bytes: fs::metadata(&path).unwrap().len(),
            path,
            rows: rows as u64,
            from: 0,
            to: rows as i64,
            whole: true,
            time_range_ms: None,
        }
    }

    type Answer = BTreeMap<(i64, Vec<Value>), Vec<MetricState>>;

    /// The rows of `grouped` merged into `answer`'s groups, in row order.
    fn merged(grouped: &GroupedCells, answer: &AnswerGroups) -> Answer {
        let buckets = grouped.buckets().unwrap();
        let kept: Vec<Vec<Value>> = answer
            .group_by
            .iter()
            .map(|&i| grouped.group_values(i).unwrap())
            .collect();
        let keys: Vec<(i64, Vec<Value>)> = (0..grouped.len())
            .map(|row| {
                let bucket = match answer.step_ms {
                    Some(step) => buckets[row] - buckets[row].rem_euclid(step),
                    None => answer.from_ms,
                };
                (bucket, kept.iter().map(|v| v[row].clone()).collect())
            })
            .collect();
        let mut out: BTreeMap<(i64, Vec<Value>), Vec<Option<MetricState>>> = BTreeMap::new();
        grouped
            .states(|metric, row, state| {
                let states = out
                    .entry(keys[row].clone())
                    .or_insert_with(|| (0..8).map(|_| None).collect());
                match &mut states[metric] {
                    Some(into) => into.merge(&state).unwrap(),
                    slot => *slot = Some(state),
                }
            })
            .unwrap();
        out.into_iter()
            .map(|(key, states)| (key, states.into_iter().flatten().collect()))
            .collect()
    }

    #[test]
    fn rows_grouped_straight_into_an_answer_equal_its_cells_merged() {
        let config = Config::from_toml(CONFIG).unwrap();
        let source = config.source("payments").unwrap();
        let view = config.view("cards").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = [archive(dir.path(), 20_000)];
        let restriction = CellQuery {
            from_ms: 1_790_000_600_000,
            to_ms: 1_790_006_000_000,
            filters: vec![(1, Value::Str("FR".into()))],
        };
        for answer in [
            AnswerGroups {
                step_ms: Some(600_000),
                from_ms: restriction.from_ms,
                group_by: vec![1],
            },
            AnswerGroups {
                step_ms: None,
                from_ms: restriction.from_ms,
                group_by: vec![],
            },
            AnswerGroups {
                step_ms: Some(1_800_000),
                from_ms: restriction.from_ms,
                group_by: vec![0, 1],
            },
        ] {
            let cells = group_cells(view, source, &files, &restriction, None).unwrap();
            let direct = group_cells(view, source, &files, &restriction, Some(&answer)).unwrap();
            assert!(direct.len() < cells.len(), "{answer:?}");
            let (want, got) = (merged(&cells, &answer), merged(&direct, &answer));
            assert_eq!(
                want.keys().collect::<Vec<_>>(),
                got.keys().collect::<Vec<_>>()
            );
            let mut rows = 0;
            for ((key, want), got) in want.iter().zip(got.values()) {
                // Only the filtered country.
                if let Some(at) = answer.group_by.iter().position(|&i| i == 1) {
                    assert_eq!(key.1[at], Value::Str("FR".into()));
                }
                for ((metric, want), got) in view.metrics.iter().zip(want).zip(got) {
                    let (want, got) = (want.finalize(&metric.expr), got.finalize(&metric.expr));
                    match (&metric.expr, want.as_f64(), got.as_f64()) {
                        // Float sums: summed by Polars per cell then merged, or folded from
                        // the values; both compensated, equal to rounding.
                        (
                            braid_shared::MetricExpr::Sum { .. }
                            | braid_shared::MetricExpr::Avg { .. },
                            Some(w),
                            Some(g),
                        ) => {
                            assert!(
                                (w - g).abs() <= 1e-12 * w.abs().max(1.0),
                                "{key:?} {}: {w} vs {g}",
                                metric.name
                            )
                        }
                        _ => assert_eq!(want, got, "{key:?} {}", metric.name),
                    }
                }
                rows += 1;
            }
            assert!(rows > 0);
        }
        // A view with a split-sensitive sketch is grouped into its cells whatever is asked.
        let heavy = config.view("heavy").unwrap();
        let answer = AnswerGroups {
            step_ms: None,
            from_ms: 0,
            group_by: vec![],
        };
        // The same selection; `country` is this view's first group-by field.
        let restriction = CellQuery {
            filters: vec![(0, Value::Str("FR".into()))],
            ..restriction
        };
        let cells = group_cells(heavy, source, &files, &restriction, Some(&answer)).unwrap();
        assert_eq!(cells.len(), 90, "one cell a minute of the 90 selected");
    }

    /// Each cell of a cell frame: (bucket, group values) -> its states, decoded.
    fn cells_of(view: &ViewDef, frame: &DataFrame) -> BTreeMap<String, Vec<MetricState>> {
        let mut out = BTreeMap::new();
        for row in 0..frame.height() {
            let mut key = format!(
                "{:?}",
                frame
                    .column(crate::snapshot::BUCKET_COLUMN)
                    .unwrap()
                    .get(row)
                    .unwrap()
            );
            for field in &view.group_by {
                key.push_str(&format!(
                    " {:?}",
                    frame.column(&field.name).unwrap().get(row).unwrap()
                ));
            }
            let states = view
                .metrics
                .iter()
                .map(|m| {
                    let column = frame
                        .column(&crate::snapshot::state_column(&m.name))
                        .unwrap();
                    match column.get(row).unwrap() {
                        AnyValue::Binary(bytes) => MetricState::decode(bytes).unwrap(),
                        other => panic!("{other:?}"),
                    }
                })
                .collect();
            assert!(out.insert(key, states).is_none(), "a cell twice");
        }
        out
    }

    #[test]
    fn cells_folded_from_shards_equal_one_computation_and_only_in_partition_order() {
        let config = Config::from_toml(CONFIG).unwrap();
        let source = config.source("payments").unwrap();
        let views: Vec<Arc<ViewDef>> = config.views.clone();
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<ScanFile> = (0..3)
            .map(|p| archive_of(dir.path(), p, 11 + p as u64, 6_000))
            .collect();
        let whole = compute_all(&views, source, &files).unwrap();
        // Two shards, given to the fold in the other order.
        let first = compute_partitions(&views, source, &files[..1]).unwrap();
        let second = compute_partitions(&views, source, &files[1..]).unwrap();
        for (i, view) in views.iter().enumerate() {
            let whole = cells_of(view, &whole[i].as_ref().unwrap().cells);
            let mut parts = second[i].as_ref().unwrap().cells.clone();
            parts.vstack_mut(&first[i].as_ref().unwrap().cells).unwrap();
            assert_eq!(parts.column(PARTITION).unwrap().len(), parts.height());
            let folded = fold_partitions(view, parts.clone()).unwrap();
            assert!(folded.column(PARTITION).is_err());
            assert_eq!(cells_of(view, &folded), whole, "{}", view.name);
            // Cells in several partitions were merged: fewer cells than per-partition rows.
            assert!(folded.height() < parts.height(), "{}", view.name);
            if view.name == "heavy_hour" {
                // Its top-k holds more distinct merchants than its capacity: folded in another
                // partition order, some cell differs. The order is what makes shards exact.
                let reversed = parts
                    .lazy()
                    .with_column((lit(2i32) - col(PARTITION)).alias(PARTITION))
                    .collect()
                    .unwrap();
                let other = cells_of(view, &fold_partitions(view, reversed).unwrap());
                assert!(other != whole, "the partition order made no difference");
            }
        }
    }
}
