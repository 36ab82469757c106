//! Braid's batch layer: the Parquet master dataset and recomputes of every view from it.
//!
//! - `archive`: the archiver (Kafka -> Parquet, per-partition manifests of offset ranges,
//!   compaction), kill -9 safe; [`ArchiveWriter`], the same writes without a broker.
//! - `run`: one batch run (coverage, incremental or full per view, publish, retention).
//! - `shard`: sharded runs (shards computed apart, merged into one snapshot).
//! - `scheduler`: periodic and requested runs. `files`: durable Parquet writes, checked reads.
//! - Run records are `braid-store`'s; snapshot cell files, Parquet columns and the recompute of
//!   a view's cells from archive files with Polars are `braid-columnar`'s, shared with as-of
//!   answers.
//! - `metrics`, `error`.

mod archive;
mod error;
mod files;
mod metrics;
mod run;
mod scheduler;
mod shard;

pub use archive::{ArchiveHandle, ArchiveWriter, Archiver, RETIRED_GRACE, archive_group};
pub use braid_store::{History, RunRecord, RunState, Trigger, ViewRun};
pub use error::{Error, Result};
pub use run::{BatchRunner, target_coverage};
pub use scheduler::{BatchHandle, BatchScheduler};
pub use shard::{Shard, ShardOutcome, check_run_name};
