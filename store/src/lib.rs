//! The files the batch layer writes and the serving layer reads, so that neither layer imports
//! the other: they meet here, in storage.
//!
//! - `columns`: Braid values <-> Parquet columns (archive files and snapshot cell files).
//! - `snapshot`: snapshot cell files and reading a published view.
//! - `history`: the persisted batch run records, and [`BatchControl`], how runs are requested.
//! - `error`: the crate's error type.

pub mod columns;
mod error;
mod history;
pub mod snapshot;

pub use error::{Error, Result};
pub use history::{
    BatchControl, History, MAX_RUN_ID_LEN, RunRecord, RunState, Trigger, ViewRun, check_run_id,
    now_rfc3339,
};
