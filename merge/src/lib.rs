//! Braid's merge core, free of HTTP: every answer is the published batch snapshot merged with
//! the speed layer's cells above its coverage, exactly. The serving layer adapts it to HTTP; the
//! fraud scorer runs it on the speed layer's thread.
//!
//! - `alerts`: the logged fraud alerts, filtered and listed.
//! - `answer`: batch ⊕ speed from one snapshot, regrouped, with provenance, into rows.
//! - `snapshot`: the published snapshot held in memory and swapped whole ([`SnapshotCache`]).
//! - `as_of`: an answer as it stood at given offsets, recomputed from the archive.
//! - `events`: the audit trail's event pages, archived and not yet archived.
//! - `fraud`: fraud features as merged point reads, and scores.
//! - `lineage`: the snapshot layers, archive files and offset ranges behind one cell.
//! - `scorer`: every applied event of the fraud source scored ([`AlertScorer`]), its alert
//!   logged once by a thread of its own.
//! - `rejections`: both layers' rejected events of a source, each once.
//! - `trends`: the keys of a view rising most above their baseline.
//! - `metrics`: snapshot swaps, merge retries, scoring.

pub mod alerts;
pub mod answer;
pub mod as_of;
pub mod events;
pub mod fraud;
pub mod lineage;
mod metrics;
pub mod rejections;
mod scorer;
pub mod snapshot;
pub mod trends;

pub use scorer::AlertScorer;
pub use snapshot::{Snapshot, SnapshotCache};
