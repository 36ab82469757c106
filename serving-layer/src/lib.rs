//! Braid's serving layer: the HTTP API that merges batch snapshots and speed views.
//!
//! Nothing is built here yet; ARCHITECTURE.md describes its role.
