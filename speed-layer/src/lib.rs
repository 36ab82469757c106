//! Braid's speed layer: consumes the source topics with one Kafka consumer group and keeps every
//! view incrementally, per partition and offset segment, above the published batch coverage.
//!
//! - `consumer`: the poll loop and partition hand-over (restore on assign, checkpoint on revoke).
//! - `state`: per-partition segmented view state and the [`SpeedHandle`] reader.
//! - `checkpoint`: durable, checksummed partition checkpoints.
//! - `peer`: the speed tier apart: the endpoint a speed instance answers serving instances on,
//!   and [`RemoteSpeed`], the serving tier's reader of it.
//! - `detached`: one partition applied in place, without a broker ([`DetachedPartition`]).
//! - `metrics`, `error`.

mod checkpoint;
mod consumer;
mod detached;
mod error;
mod metrics;
mod peer;
mod state;

pub use consumer::SpeedLayer;
pub use detached::DetachedPartition;
pub use error::{Error, Result};
pub use peer::{RemoteSpeed, serve as serve_endpoint};
pub use state::SpeedHandle;
