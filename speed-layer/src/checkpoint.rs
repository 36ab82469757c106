//! Checkpoints of one partition: its next offset, batch floor, rejected-log length and the state
//! of every segment. Written atomically; a torn or foreign file is detected, never trusted.
//!
//! File: `BRAIDCKP` magic, format version byte, postcard payload, xxh3-64 of the payload.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use braid_shared::{TopicPartition, ViewState};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::{PartitionState, Progress, Segment};
use braid_kafka::TopicPlan;

const MAGIC: &[u8; 8] = b"BRAIDCKP";
const FORMAT_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Payload {
    topic: String,
    partition: i32,
    next_offset: i64,
    floor: i64,
    segment_size: i64,
    rejected_len: u64,
    views: Vec<(String, u64)>,
    /// (segment index, next offset within it, encoded state of each view)
    segments: Vec<(i64, i64, Vec<Vec<u8>>)>,
}

/// What a checkpoint restores.
pub(crate) struct Restored {
    pub progress: Progress,
    pub rejected_len: u64,
    pub segments: BTreeMap<i64, Segment>,
}

/// Encodes a partition's state. Each segment is read under its lock, with its own offset.
pub(crate) fn encode(
    plan: &TopicPlan,
    state: &PartitionState,
    segment_size: i64,
    rejected_len: u64,
) -> Vec<u8> {
    let progress = state.progress();
    let segments = state
        .segments_from(i64::MIN, 1)
        .into_iter()
        .filter_map(|(index, segment)| {
            let segment = segment.read().ok()?;
            Some((
                index,
                segment.next_offset,
                segment.views.iter().map(ViewState::encode).collect(),
            ))
        })
        .collect();
    let payload = Payload {
        topic: state.tp.topic.clone(),
        partition: state.tp.partition,
        next_offset: progress.next_offset,
        floor: progress.floor,
        segment_size,
        rejected_len,
        views: plan.view_ids(),
        segments,
    };
    let body = postcard::to_stdvec(&payload).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 17);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&body);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
    out
}

/// Why a checkpoint cannot be restored.
pub(crate) enum Unusable {
    /// Written for other view definitions or another segment size: rebuild the partition.
    Incompatible(String),
    /// Damaged: rebuild the partition and say so loudly.
    Corrupt(String),
}

/// Decodes a checkpoint of `tp` for the current plan.
pub(crate) fn decode(
    plan: &TopicPlan,
    tp: &TopicPartition,
    segment_size: i64,
    bytes: &[u8],
) -> std::result::Result<Restored, Unusable> {
    let corrupt = |reason: &str| Unusable::Corrupt(reason.to_owned());
    if bytes.len() < MAGIC.len() + 1 + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a Braid checkpoint"));
    }
    if bytes[MAGIC.len()] != FORMAT_VERSION {
        return Err(Unusable::Incompatible(format!(
            "format version {}",
            bytes[MAGIC.len()]
        )));
    }
    let (body, sum) = bytes[MAGIC.len() + 1..].split_at(bytes.len() - MAGIC.len() - 1 - 8);
    let mut expected = [0u8; 8];
    expected.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(expected) {
        return Err(corrupt("checksum mismatch"));
    }
    let payload: Payload =
        postcard::from_bytes(body).map_err(|e| Unusable::Corrupt(e.to_string()))?;
    if payload.topic != tp.topic || payload.partition != tp.partition {
        return Err(Unusable::Corrupt(format!(
            "holds {}/{}",
            payload.topic, payload.partition
        )));
    }
    if payload.views != plan.view_ids() {
        return Err(Unusable::Incompatible(
            "the topic's views changed".to_owned(),
        ));
    }
    if payload.segment_size != segment_size {
        return Err(Unusable::Incompatible(format!(
            "segment size {} != configured {segment_size}",
            payload.segment_size
        )));
    }
    let mut segments = BTreeMap::new();
    for (index, next_offset, views) in payload.segments {
        if views.len() != plan.views.len() {
            return Err(corrupt("segment with the wrong number of views"));
        }
        let states = views
            .iter()
            .zip(&plan.views)
            .map(|(bytes, view)| ViewState::decode(Arc::clone(view), bytes))
            .collect::<braid_shared::Result<Vec<_>>>()
            .map_err(|e| Unusable::Corrupt(e.to_string()))?;
        segments.insert(
            index,
            Segment {
                views: states,
                next_offset,
            },
        );
    }
    Ok(Restored {
        progress: Progress {
            next_offset: payload.next_offset,
            floor: payload.floor,
        },
        rejected_len: payload.rejected_len,
        segments,
    })
}

/// Writes a partition's checkpoint durably (temp + fsync + rename + fsync(dir)) after making its
/// rejected log durable. Returns the bytes written.
pub(crate) fn write(
    dir: &Path,
    plan: &TopicPlan,
    state: &PartitionState,
    segment_size: i64,
) -> Result<usize> {
    // The writer lock keeps the consumer out while the checkpoint is taken.
    let mut writer = state
        .writer
        .lock()
        .map_err(|_| Error::Internal(format!("state of {} is unusable after a panic", state.tp)))?;
    let rejected_len = writer.rejected.sync()?;
    let bytes = encode(plan, state, segment_size, rejected_len);
    let path =
        braid_shared::storage::speed_checkpoint_path(dir, &state.tp.topic, state.tp.partition);
    braid_shared::storage::write_atomic(&path, &bytes).map_err(Error::io(&path))?;
    writer.pending = 0;
    Ok(bytes.len())
}
