//! Braid's shared contract, used by every layer: pure data and algorithms, no I/O runtime.
//!
//! - `config`: the TOML configuration with `BRAID__*` overrides, validated into definitions.
//! - `path`: field paths (`card.id`, `items[0].sku`), as every field is named.
//! - `metric`: the metric expression language (`sum(amount)`, `quantile(amount, 0.99)`, ...).
//! - `event`: decoding message bytes into typed events, or typed rejection reasons.
//! - `format`: how messages are read: JSON, Avro and Protobuf (schema files or a registry),
//!   log lines.
//! - `generator`: a deterministic synthetic payments stream.
//! - `aggregate`: mergeable metric states (monoids) with a versioned binary encoding.
//! - `view`: resolved source and view definitions, and [`ViewState`], the cells of one view.
//! - `duration`: human durations (`500ms`, `15m`, `1d`) as config values write them.
//! - `coverage`: per-partition offset coverage, the snapshot pointer, the speed read trait.
//! - `fraud`: the `[fraud]` configuration, its rule language and the score.
//! - `rejected`: a message a layer could not read, as both layers keep it.
//! - `plan`: the routing plan: which sources decode each topic and which views they feed.
//! - `text`: event times and echoed values as messages and answers write them.
//! - `error`: the crate's error type.

pub mod aggregate;
pub mod config;
pub mod coverage;
pub mod duration;
mod error;
pub mod event;
pub mod format;
pub mod fraud;
pub mod generator;
pub mod metric;
pub mod path;
pub mod plan;
pub mod rejected;
pub mod text;
pub mod view;

pub use config::Config;
pub use coverage::{
    CellQuery, Coverage, PartitionCells, PartitionStatus, SpeedFuture, SpeedPositions, SpeedReader,
    TopicPartition,
};
pub use error::{ConfigIssue, Error, Invalid, Result};
pub use event::{Decoder, Event, RejectReason, Value};
pub use metric::MetricExpr;
pub use rejected::RejectedRecord;
pub use view::{SourceDef, ViewDef, ViewState};
