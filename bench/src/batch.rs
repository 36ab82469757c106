//! `braid bench batch`: full and incremental recompute of generated events into a config's
//! views, side by side with DuckDB computing the same exact aggregates from the same Parquet
//! files, in the same process: the DuckDB library Braid links for its SQL endpoint.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use braid_shared::generator::{Payments, PaymentsShape};
use braid_shared::{Config, MetricExpr};
use tokio_util::sync::CancellationToken;

use braid_batch::{ArchiveWriter, BatchRunner};
use braid_store::{RunRecord, Trigger};

use crate::error::{BenchError, Result};

const PARTITIONS: i32 = 4;
const START_MS: i64 = 1_790_000_000_000;

/// Measures recomputes of `events` generated payments (plus `increment_percent`% more for the
/// incremental run) in `dir` (a temp dir when `None`).
pub fn run(
    config: &Config,
    events: usize,
    increment_percent: f64,
    dir: Option<&Path>,
) -> Result<String> {
    let (dir, owned): (PathBuf, bool) = match dir {
        Some(dir) => (dir.to_owned(), false),
        None => (tempfile_dir()?, true),
    };
    let report = measure(config, events, increment_percent, &dir);
    if owned {
        let _ = std::fs::remove_dir_all(&dir);
    }
    report
}

fn measure(config: &Config, events: usize, increment_percent: f64, dir: &Path) -> Result<String> {
    let dir = dir.to_owned();
    let (mut config, source) = bench_config(config, &dir)?;
    config.batch.keep_snapshots = 2;
    let storage: Arc<dyn braid_store::Storage> = Arc::new(braid_store::LocalStorage::new(&dir));

    let mut out = String::new();
    let _ = writeln!(
        out,
        "braid bench batch: {events} generated events into {} views of source {:?}, {PARTITIONS} partitions",
        config.views.len(),
        source.name
    );
    let _ = writeln!(
        out,
        "  storage: {} (removed afterwards unless given with --dir)",
        dir.display()
    );

    let mut generator = Payments::new(42, START_MS, PaymentsShape::default());
    let mut writer = ArchiveWriter::new(&config, Arc::clone(&storage), PARTITIONS)?;
    let started = Instant::now();
    archive(&mut writer, &mut generator, events)?;
    let archive_seconds = started.elapsed().as_secs_f64();
    let bytes = dir_size(&dir.join("archive"));
    let _ = writeln!(
        out,
        "  archive: {:.1} s to generate, decode and write ({:.2} M events/s), {:.1} MiB of Parquet",
        archive_seconds,
        events as f64 / archive_seconds / 1e6,
        bytes as f64 / (1 << 20) as f64
    );

    let runner = BatchRunner::new(&config, Arc::clone(&storage))?;
    let cancel = CancellationToken::new();
    let full = runner.run(Trigger::Command, true, &cancel)?;
    let full_seconds = seconds(&full)?;
    let _ = writeln!(
        out,
        "  braid full recompute (all metrics, sketches included): {full_seconds:.2} s, {:.2} M rows/s",
        full.rows_read as f64 / full_seconds / 1e6
    );
    for (view, run) in &full.views {
        let _ = writeln!(
            out,
            "    {view}: {} ms, {} cells",
            run.duration_ms, run.cells_written
        );
    }

    let files = archive_files(&dir, &source.name);
    let (version, duck_exact, duck_sketches) =
        duckdb(&config, &files).map_err(BenchError::Setup)?;
    let _ = writeln!(
        out,
        "  duckdb {version} (in process, all cores), the same views from the same files into temp tables:"
    );
    let _ = writeln!(
        out,
        "    exact aggregates only (count/sum/min/max/avg): {duck_exact:.2} s",
    );
    let _ = writeln!(
        out,
        "    with its own sketches too (approx_count_distinct, approx_quantile, approx_top_k): {duck_sketches:.2} s -> braid/duckdb = {:.2}x",
        full_seconds / duck_sketches
    );
    // Braid over the same views with only their exact metrics, for the like-for-like ratio.
    let exact_runner = BatchRunner::new(&exact_only(&config), Arc::clone(&storage))?;
    let exact = exact_runner.run(Trigger::Command, true, &cancel)?;
    let exact_seconds = seconds(&exact)?;
    let _ = writeln!(
        out,
        "  braid full recompute of the exact metrics only (sketches left out): {exact_seconds:.2} s -> braid/duckdb = {:.2}x",
        exact_seconds / duck_exact
    );
    // The full snapshot again, so the incremental run below starts from every metric.
    let full_again = runner.run(Trigger::Command, true, &cancel)?;
    seconds(&full_again)?;

    let more = ((events as f64) * increment_percent / 100.0).round() as usize;
    archive(&mut writer, &mut generator, more)?;
    let incremental = runner.run(Trigger::Command, false, &cancel)?;
    let incremental_seconds = seconds(&incremental)?;
    let _ = writeln!(
        out,
        "  braid incremental recompute of {more} new events ({increment_percent}%): {incremental_seconds:.3} s = {:.1}% of the full run",
        incremental_seconds / full_seconds * 100.0
    );
    for (view, run) in &incremental.views {
        let _ = writeln!(
            out,
            "    {view}: {} ({} rows read, {} ms, {} layers)",
            run.mode, run.rows_read, run.duration_ms, run.layers
        );
    }
    Ok(out)
}

/// Generated events archived in `dir` as the archiver writes them (`PARTITIONS` partitions,
/// event times from `START_MS`, `spacing_ms` apart) and one full recompute published: the
/// storage the audit benchmark serves from. Returns the config pointed at `dir`, its first
/// source and that source's views only, and how long archiving and the run took.
pub fn prepare(
    config: &Config,
    events: usize,
    spacing_ms: i64,
    dir: &Path,
) -> Result<(Config, std::time::Duration, std::time::Duration)> {
    let (config, _) = bench_config(config, dir)?;
    let storage: Arc<dyn braid_store::Storage> = Arc::new(braid_store::LocalStorage::new(dir));
    let shape = PaymentsShape {
        spacing_ms,
        ..PaymentsShape::default()
    };
    let mut generator = Payments::new(42, START_MS, shape);
    let mut writer = ArchiveWriter::new(&config, Arc::clone(&storage), PARTITIONS)?;
    let started = Instant::now();
    archive(&mut writer, &mut generator, events)?;
    let archived = started.elapsed();
    let started = Instant::now();
    let run = BatchRunner::new(&config, storage)?.run(
        Trigger::Command,
        true,
        &CancellationToken::new(),
    )?;
    seconds(&run)?;
    Ok((config, archived, started.elapsed()))
}

/// Partitions of the benchmarks' generated topics.
pub const BENCH_PARTITIONS: i32 = PARTITIONS;
/// Event time of the first generated event.
pub const BENCH_START_MS: i64 = START_MS;

/// `config` pointed at `dir`, with its first source and that source's views only (no fraud
/// scoring), and the segment size the benchmarks' coverage falls on.
fn bench_config(config: &Config, dir: &Path) -> Result<(Config, Arc<braid_shared::SourceDef>)> {
    let mut config = config.clone();
    config.storage.dir = dir.to_owned();
    config.speed.segment_size = 1000;
    let source = config
        .sources
        .first()
        .cloned()
        .ok_or_else(|| BenchError::Setup("the config has no source".into()))?;
    config.views.retain(|v| v.source == source.name);
    config.sources = vec![Arc::clone(&source)];
    config.fraud = None;
    Ok((config, source))
}

fn seconds(record: &RunRecord) -> Result<f64> {
    match (&record.error, record.duration_ms) {
        (Some(error), _) => Err(BenchError::Setup(format!(
            "run {} failed: {error}",
            record.id
        ))),
        (None, Some(ms)) => Ok((ms as f64 / 1000.0).max(1e-3)),
        (None, None) => Err(BenchError::Setup("run without duration".into())),
    }
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("braid-bench-batch-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Generates `count` events round-robin over the partitions and archives them as the archiver
/// does (decode, buffer, flush every `flush_rows`).
fn archive(writer: &mut ArchiveWriter, generator: &mut Payments, count: usize) -> Result<()> {
    for i in 0..count {
        writer.push(i % PARTITIONS as usize, &generator.next_event())?;
    }
    Ok(writer.flush()?)
}

fn archive_files(dir: &Path, source: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.join("archive").join(format!("source={source}"))];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet")
                && !entry.file_name().to_string_lossy().starts_with('.')
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The SQL DuckDB runs per view: the exact metrics (and, for the second timing, sketches).
fn view_sql(view: &braid_shared::ViewDef, sketches: bool) -> String {
    let mut select: Vec<String> = view
        .group_by
        .iter()
        .map(|f| format!("\"{}\"", f.name))
        .collect();
    select.push(format!(
        "(_event_time // {g}) * {g} AS bucket",
        g = view.granularity_ms
    ));
    for metric in &view.metrics {
        let expr = match &metric.expr {
            MetricExpr::Count => Some("count(*)".to_owned()),
            MetricExpr::Sum { field } => Some(format!("sum(\"{field}\")")),
            MetricExpr::Min { field } => Some(format!("min(\"{field}\")")),
            MetricExpr::Max { field } => Some(format!("max(\"{field}\")")),
            MetricExpr::Avg { field } => Some(format!("avg(\"{field}\")")),
            MetricExpr::ApproxDistinct { field } if sketches => {
                Some(format!("approx_count_distinct(\"{field}\")"))
            }
            MetricExpr::Quantile { field, q } if sketches => {
                Some(format!("approx_quantile(\"{field}\", {q})"))
            }
            MetricExpr::TopK { field, k } if sketches => {
                Some(format!("approx_top_k(\"{field}\", {k})"))
            }
            _ => None,
        };
        if let Some(expr) = expr {
            select.push(format!("{expr} AS \"{}\"", metric.name));
        }
    }
    format!("SELECT {} FROM events GROUP BY ALL", select.join(", "))
}

/// Times DuckDB (the linked library, in this process) over the same files: exact aggregates
/// only, then with sketches, each query materialized into a temp table. Its version and the
/// seconds; the exact queries run once first, to warm the file cache as Braid's run did.
fn duckdb(config: &Config, files: &[PathBuf]) -> std::result::Result<(String, f64, f64), String> {
    let fail = |e: duckdb::Error| format!("duckdb: {e}");
    let connection = duckdb::Connection::open_in_memory().map_err(fail)?;
    let version = connection.version().map_err(fail)?;
    let list: Vec<String> = files
        .iter()
        .map(|f| format!("'{}'", f.display().to_string().replace('\'', "''")))
        .collect();
    connection
        .execute_batch(&format!(
            "CREATE VIEW events AS SELECT * FROM read_parquet([{}])",
            list.join(", ")
        ))
        .map_err(fail)?;
    let timed = |sketches: bool| -> std::result::Result<f64, String> {
        let started = Instant::now();
        for (i, view) in config.views.iter().enumerate() {
            connection
                .execute_batch(&format!(
                    "CREATE OR REPLACE TEMP TABLE out_{i} AS {}",
                    view_sql(view, sketches)
                ))
                .map_err(fail)?;
        }
        Ok(started.elapsed().as_secs_f64())
    };
    timed(false)?;
    Ok((version, timed(false)?, timed(true)?))
}

/// `config` with each view's sketch metrics left out (those DuckDB computes exactly too).
fn exact_only(config: &Config) -> Config {
    let mut config = config.clone();
    for view in &mut config.views {
        let mut exact = (**view).clone();
        exact.metrics.retain(|m| {
            matches!(
                m.expr,
                MetricExpr::Count
                    | MetricExpr::Sum { .. }
                    | MetricExpr::Min { .. }
                    | MetricExpr::Max { .. }
                    | MetricExpr::Avg { .. }
            )
        });
        *view = Arc::new(exact);
    }
    config
}
