//! The snapshot pointer: which snapshot is published. One object, replaced only by a batch run
//! over the version it read when it started, so two runs racing to publish cannot both win.

use braid_shared::coverage::SnapshotPointer;

use crate::error::{Error, Result};
use crate::layout::SNAPSHOT_POINTER;
use crate::storage::{Storage, Version, put_over};

/// Reads the published snapshot pointer, if any.
pub fn read_pointer(storage: &dyn Storage) -> Result<Option<SnapshotPointer>> {
    let Some(object) = storage.get(SNAPSHOT_POINTER)? else {
        return Ok(None);
    };
    serde_json::from_slice(&object.bytes)
        .map(Some)
        .map_err(|e| Error::codec("snapshot pointer", SNAPSHOT_POINTER)(e.to_string()))
}

/// The pointer's current version, whatever it holds (`None`: nothing is published yet). A
/// batch run takes it before computing and publishes over it.
pub fn pointer_version(storage: &dyn Storage) -> Result<Option<Version>> {
    Ok(storage.get(SNAPSHOT_POINTER)?.map(|o| o.version))
}

/// Publishes `pointer` over the version `held`; a conflict means another run published first.
pub fn publish_pointer(
    storage: &dyn Storage,
    pointer: &SnapshotPointer,
    held: Option<&Version>,
) -> Result<Version> {
    let json = serde_json::to_vec_pretty(pointer).map_err(|e| Error::Encode {
        what: "snapshot pointer",
        reason: e.to_string(),
    })?;
    put_over(storage, SNAPSHOT_POINTER, &json, held)?.ok_or(Error::Conflict {
        key: SNAPSHOT_POINTER.to_owned(),
    })
}
