//! Checkpoints of one partition: its next offset, batch floor, the rejected-log chunks it
//! covers and the state of every segment. Framed by `braid_store::checkpoint` (a torn or
//! foreign file is detected, never trusted); the payload is postcard.
//!
//! Format 2 counts the rejected log in chunks; format 1 (older versions) counted bytes of a
//! single-file log, which a restore migrates.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_store::checkpoint::{Unframed, frame, unframe};
use braid_store::layout;
use braid_store::rejected::Keep;

use braid_shared::{TopicPartition, ViewState};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::{PartitionState, Progress, Segment, Shared};
use braid_kafka::TopicPlan;

const FORMAT_VERSION: u8 = 2;
/// The format before rejected logs were chunked; its `rejected` counts bytes.
const FORMAT_VERSION_BYTES_LOG: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Payload {
    topic: String,
    partition: i32,
    next_offset: i64,
    floor: i64,
    segment_size: i64,
    /// Chunks of the rejected log covered (format 1: bytes of the single-file log).
    rejected: u64,
    views: Vec<(String, u64)>,
    /// (segment index, next offset within it, encoded state of each view)
    segments: Vec<(i64, i64, Vec<Vec<u8>>)>,
}

/// What a checkpoint restores.
pub(crate) struct Restored {
    pub progress: Progress,
    /// What of the rejected log the checkpoint covers.
    pub rejected: Keep,
    pub segments: BTreeMap<i64, Segment>,
}

/// Encodes a partition's state. Each segment is read under its lock, with its own offset.
pub(crate) fn encode(
    plan: &TopicPlan,
    state: &PartitionState,
    segment_size: i64,
    rejected_chunks: u64,
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
        rejected: rejected_chunks,
        views: plan.view_ids(),
        segments,
    };
    frame(
        FORMAT_VERSION,
        &postcard::to_stdvec(&payload).unwrap_or_default(),
    )
}

/// Why a checkpoint cannot be restored.
#[derive(Debug)]
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
    let (version, body) = unframe(bytes).map_err(|e: Unframed| corrupt(&e.to_string()))?;
    if version != FORMAT_VERSION && version != FORMAT_VERSION_BYTES_LOG {
        return Err(Unusable::Incompatible(format!("format version {version}")));
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
        rejected: if version == FORMAT_VERSION_BYTES_LOG {
            Keep::LegacyBytes(payload.rejected)
        } else {
            Keep::Chunks {
                chunks: payload.rejected,
                replay_from: payload.next_offset,
            }
        },
        segments,
    })
}

/// Writes a partition's checkpoint durably, over the version this owner holds, after making
/// its rejected log durable. Returns the bytes written.
pub(crate) fn write(shared: &Shared, plan: &TopicPlan, state: &PartitionState) -> Result<usize> {
    let (storage, segment_size) = (shared.storage.as_ref(), shared.segment_size);
    // The alerts of the events this checkpoint covers are durable before it is.
    if let Some(scoring) = &shared.scoring {
        scoring.scorer.flush().map_err(|why| {
            Error::Internal(format!(
                "making the fraud alerts of {} durable: {why}",
                state.tp
            ))
        })?;
    }
    // The writer lock keeps the consumer out while the checkpoint is taken.
    let mut writer = state
        .writer
        .lock()
        .map_err(|_| Error::Internal(format!("state of {} is unusable after a panic", state.tp)))?;
    let rejected_chunks = writer.rejected.sync()?;
    let bytes = encode(plan, state, segment_size, rejected_chunks);
    let key = layout::speed_checkpoint(&state.tp.topic, state.tp.partition);
    let version = braid_store::storage::put_over(storage, &key, &bytes, writer.checkpoint.as_ref())
        .map_err(braid_store::Error::from)?
        .ok_or(braid_store::Error::Conflict { key })?;
    writer.checkpoint = Some(version);
    writer.pending = 0;
    Ok(bytes.len())
}
