//! Braid's batch layer: the Parquet master dataset and full recomputes of every view from it.
//!
//! Nothing is built here yet; ARCHITECTURE.md describes its role.
