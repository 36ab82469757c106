//! Braid's speed layer: Kafka consumption into incremental views above the batch coverage.
//!
//! Nothing is built here yet; ARCHITECTURE.md describes its role.
