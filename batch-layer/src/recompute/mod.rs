//! Recompute: views' cells from the archive, with Polars. One lazy scan of the listed files
//! (filtered by offset where a file straddles the coverage), shared by the views of a source
//! that read the same offsets, grouped by each view's keys and event-time bucket. Exact metrics on typed numeric columns are Polars aggregations; sketches
//! (and metrics on untyped fields) take each group's values as a list column, folded into the
//! shared states column by column, so every state equals the speed layer's.
//!
//! - `plan`: the aggregation of each metric.
//! - `cells`: turning the grouped frame into a [`ViewState`].

mod cells;
mod plan;

use std::path::PathBuf;
use std::sync::Arc;

use braid_shared::{Coverage, SourceDef, ViewDef};
use braid_store::manifest::{FileKind, PartitionManifest};
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::files::check_listed;
use braid_store::columns::{EVENT_TIME, OFFSET};

pub(crate) use plan::ViewPlan;

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
}

/// The events files of `source` holding offsets `[from, to)` of each partition.
pub fn files_between(
    dir: &std::path::Path,
    source: &SourceDef,
    manifests: &[PartitionManifest],
    from: &Coverage,
    to: &Coverage,
) -> Vec<ScanFile> {
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
                if file.source == source.name && file.kind == FileKind::Events {
                    files.push(ScanFile {
                        path: dir.join(&file.path),
                        bytes: file.bytes,
                        rows: file.rows,
                        from: lo,
                        to: hi,
                        whole,
                    });
                }
            }
        }
    }
    files
}

/// A view's cells over some archive files, as the frame a snapshot layer stores (see
/// [`crate::snapshot`]), and how many archive rows they came from.
pub struct Computed {
    pub cells: DataFrame,
    pub rows: u64,
}

/// Computes several views of one source from the same files in one Polars query, so the files
/// are scanned once. Per view, `None` when there is nothing to read.
pub fn compute_all(
    views: &[Arc<ViewDef>],
    source: &SourceDef,
    files: &[ScanFile],
) -> Result<Vec<Option<Computed>>> {
    if files.is_empty() {
        return Ok(views.iter().map(|_| None).collect());
    }
    for file in files {
        check_listed(&file.path, file.bytes)?;
    }
    let started = std::time::Instant::now();
    let input = scan(files)?;
    let plans: Vec<ViewPlan> = views.iter().map(|v| ViewPlan::new(v, source)).collect();
    let queries: Vec<DslPlan> = plans
        .iter()
        .map(|plan| {
            input
                .clone()
                .group_by(plan.keys())
                .agg(plan.aggregations())
                .logical_plan
        })
        .collect();
    let grouped = LazyFrame::collect_all_with_engine(queries, Engine::Auto, OptFlags::default())
        .map_err(|e| scan_error(files, e))?;
    let grouped_ms = started.elapsed().as_millis();
    let mut out = Vec::with_capacity(views.len());
    for ((view, plan), grouped) in views.iter().zip(&plans).zip(grouped) {
        let encoding = std::time::Instant::now();
        let (cells, rows) = cells::frame(view, plan, &grouped)?;
        tracing::debug!(view = %view.name, files = files.len(), cells = cells.height(), grouped_ms, encoded_ms = encoding.elapsed().as_millis(), "view recomputed");
        out.push(Some(Computed { cells, rows }));
    }
    Ok(out)
}

/// One lazy frame over every file: the files read whole in one scan, each straddling file in
/// its own scan with an offset filter.
fn scan(files: &[ScanFile]) -> Result<LazyFrame> {
    let args = braid_store::events::scan_args;
    let path = |f: &ScanFile| PlRefPath::try_from_path(&f.path);
    let whole: Vec<PlRefPath> = files
        .iter()
        .filter(|f| f.whole)
        .map(path)
        .collect::<PolarsResult<_>>()?;
    let mut frames = Vec::new();
    if !whole.is_empty() {
        frames.push(LazyFrame::scan_parquet_files(whole.into(), args())?);
    }
    for file in files.iter().filter(|f| !f.whole) {
        let offsets = col(OFFSET)
            .gt_eq(lit(file.from))
            .and(col(OFFSET).lt(lit(file.to)));
        frames.push(LazyFrame::scan_parquet(path(file)?, args())?.filter(offsets));
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
pub(crate) fn bucket_expr(granularity_ms: i64) -> Expr {
    // `((t % g) + g) % g` is the floor remainder whichever sign convention `%` follows.
    let g = || lit(granularity_ms);
    col(EVENT_TIME) - ((col(EVENT_TIME) % g()) + g()) % g()
}
