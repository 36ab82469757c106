//! Every `braid bench ...` command: each measures a part of Braid on this machine, with its
//! peer (a raw JSON parse, a plain Kafka consume, DuckDB, stream processors) measured in the
//! same run over the same data.
//!
//! - `speed`: `braid bench speed`, decode + apply in process, end to end, memory per cell.
//! - `formats`: `braid bench speed --format`, Avro and Protobuf decode + apply beside the
//!   libraries' own decoding, nested JSON beside flat.
//! - `batch`: `braid bench batch`, full and incremental recomputes beside DuckDB.
//! - `serve`: `braid bench serve`, merged query latency under ingest, freshness, speed peers;
//!   and the paced load generator the other HTTP benchmarks share.
//! - `fraud`: `braid bench fraud`, the cost of scoring every event, produce-to-alert latency.
//! - `audit`: `braid bench audit`, lineage, event pages, as-of and SQL.
//! - `error`: why a benchmark could not run.

pub mod audit;
pub mod batch;
mod error;
pub mod formats;
pub mod fraud;
pub mod serve;
pub mod speed;

pub use error::{BenchError, Result};
