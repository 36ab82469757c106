//! Braid's batch layer: the Parquet master dataset and recomputes of every view from it.
//!
//! - `archive`: the archiver (Kafka -> Parquet, per-partition manifests of offset ranges,
//!   compaction), kill -9 safe.
//! - `recompute`: a view's cells from archive files with Polars.
//! - `snapshot`: cell files (Parquet with encoded states) and reading a published view.
//! - `run`: one batch run (coverage, incremental or full per view, publish, retention).
//! - `history`: the persisted run records. `scheduler`: periodic and requested runs.
//! - `columns`: Braid values <-> Parquet columns. `files`: durable Parquet writes, checked reads.
//! - `bench`: the `braid bench batch` measurements. `metrics`, `error`.

mod archive;
pub mod bench;
pub mod columns;
mod error;
mod files;
mod history;
mod metrics;
pub mod recompute;
mod run;
mod scheduler;
pub mod snapshot;

pub use archive::{ArchiveHandle, Archiver, RETIRED_GRACE, archive_group};
pub use error::{Error, Result};
pub use history::{History, RunRecord, RunState, Trigger, ViewRun};
pub use run::{BatchRunner, target_coverage};
pub use scheduler::{BatchHandle, BatchScheduler};
