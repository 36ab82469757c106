//! Every storage format and where it lives, so that no layer imports another: they meet here,
//! in storage. Everything is read and written through [`Storage`], one narrow interface (list,
//! get, put-if-absent, put-if-unchanged, delete); [`LocalStorage`] is the local-directory
//! implementation.
//!
//! - `storage`: the [`Storage`] interface and [`LocalStorage`].
//! - `layout`: the key of every object.
//! - `pointer`: the snapshot pointer, published over the version a run read.
//! - `manifest`: archive partition manifests and snapshot manifests.
//! - `rejected`: the speed layer's rejected-events log (chunks and manifest), writer and reader.
//! - `alerts`: the fraud alert log, one object per alert id, created once.
//! - `checkpoint`: checkpoint file framing (magic, version, checksum).
//! - `history`: the persisted batch run records, and [`BatchControl`], how runs are requested.
//! - `lease`: leases held through conditional writes (the batch run lease).
//! - `membership`: which process of a group reads which Kafka partition (partition leases).
//! - `error`: the crate's error type.

pub mod alerts;
pub mod checkpoint;
mod error;
mod history;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod membership;
pub mod pointer;
pub mod rejected;
mod renewer;
pub mod storage;

pub use error::{Error, Result};
pub use history::{
    BatchControl, History, MAX_RUN_ID_LEN, RunRecord, RunState, StoredRequests, Trigger, ViewRun,
    check_run_id, now_rfc3339,
};
pub use storage::{LocalStorage, ObjectStorage, Storage, StorageError, Version, local_root, open};
