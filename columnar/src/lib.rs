//! Everything Braid does with Polars and Parquet, in one crate: the storage formats and the
//! layers that need no columns (`braid-store`, the speed layer) never link Polars.
//!
//! - `columns`: Braid values <-> Parquet columns (the archive's and the cell files' layout).
//! - `snapshot`: snapshot cell files, and reading a published view back.
//! - `events`: archived events read back for the audit trail.
//! - `recompute`: a view's cells from archive files with Polars, for the batch layer's runs and
//!   as-of answers.
//! - `redecode`: archive files written before their source read some field, decoded again
//!   from the messages they keep.
//! - `rejected`: the archive's rejected files read back.
//! - `error`: the crate's error type.

pub mod columns;
mod error;
pub mod events;
pub mod recompute;
pub mod redecode;
pub mod rejected;
pub mod snapshot;

pub use error::{Error, Result};
