//! Braid's speed layer: consumes the source topics with one Kafka consumer group and keeps every
//! view incrementally, per partition and offset segment, above the published batch coverage.
//!
//! - `consumer`: the poll loop and partition hand-over (restore on assign, checkpoint on revoke).
//! - `state`: per-partition segmented view state and the [`SpeedHandle`] reader.
//! - `checkpoint`: durable, checksummed partition checkpoints.
//! - `bench`: the `braid bench speed` measurements.
//! - `metrics`, `error`.

#[cfg(feature = "bench")]
pub mod bench;
mod checkpoint;
mod consumer;
mod error;
mod metrics;
mod state;

pub use consumer::SpeedLayer;
pub use error::{Error, Result};
pub use state::{Scoring, SpeedHandle};
