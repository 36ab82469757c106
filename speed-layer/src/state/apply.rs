//! The writer side of a partition's state: the consumer thread decodes a poll batch's messages
//! a chunk at a time into reused events, hands the fraud source's to the scorer, and applies
//! them under one hold of the segment's write lock; malformed messages go to the rejected log.

use braid_shared::plan::TopicPlan;
use braid_shared::{Event, RejectedRecord, SpeedReader};

use super::{Message, PartitionState, Progress, Scoring, Shared, Writer, poisoned};
use crate::metrics;

/// Events decoded, then applied under one hold of a segment's write lock: bounds how long a
/// reader waits, and how many decoded events a partition keeps for reuse.
const APPLY_CHUNK: usize = 512;

/// How long a rejected event waits, at most about, before `/v1/rejected` lists it.
pub(crate) const REJECTED_LISTED_WITHIN: std::time::Duration =
    std::time::Duration::from_millis(100);

/// Writes the rejections of every partition that have waited long enough.
pub(crate) fn list_due_rejections(shared: &Shared) -> crate::Result<()> {
    for (tp, state) in shared.assigned() {
        let mut writer = state.writer.lock().map_err(|_| poisoned(&tp))?;
        writer.rejected.sync_if_due(REJECTED_LISTED_WITHIN)?;
    }
    Ok(())
}

impl PartitionState {
    /// Applies consecutive messages of this partition. Messages below `next_offset` (redelivered)
    /// are skipped; messages below `floor` (covered by the batch layer while this partition was
    /// behind it) are only checked for rejections, so every malformed message is listed even
    /// when a snapshot overtakes the speed layer. Returns events applied.
    pub fn apply(
        &self,
        plan: &TopicPlan,
        messages: &[Message<'_>],
        segment_size: i64,
        now_ms: i64,
        scoring: Option<(&Scoring, &dyn SpeedReader)>,
    ) -> crate::Result<u64> {
        let Progress { next_offset, floor } = self.progress();
        let unread: Vec<&Message<'_>> = messages
            .iter()
            .filter(|m| m.offset >= next_offset)
            .collect();
        let Some(last) = unread.last() else {
            return Ok(0);
        };
        let (covered, fresh): (Vec<&Message<'_>>, Vec<&Message<'_>>) =
            unread.iter().partition(|m| m.offset < floor);
        let mut writer = self.writer.lock().map_err(|_| poisoned(&self.tp))?;
        let mut pool = std::mem::take(&mut writer.events);
        if pool.is_empty() {
            pool.push(Event::default());
        }
        let scratch = &mut pool[0];
        for message in &covered {
            for source in &plan.sources {
                if let Err(reason) = source.speed_decoder.decode_into(message.payload, scratch) {
                    self.reject(&mut writer, source.name(), message, reason, now_ms);
                }
            }
        }
        let mut applied = 0;
        let mut offsets: Vec<i64> = Vec::with_capacity(fresh.len().min(APPLY_CHUNK));
        let single_source = plan.sources.len() == 1;
        for run in fresh.chunk_by(|a, b| a.offset / segment_size == b.offset / segment_size) {
            let segment = self.segment(run[0].offset / segment_size, plan)?;
            let run_end = run[run.len() - 1].offset + 1;
            // Decoded, scored and applied a chunk at a time: the decoded events of a chunk
            // are reused for the next.
            for (source, chunk) in plan
                .sources
                .iter()
                .flat_map(|source| run.chunks(APPLY_CHUNK).map(move |chunk| (source, chunk)))
            {
                offsets.clear();
                let mut decoded = 0;
                for message in chunk {
                    if decoded == pool.len() {
                        pool.push(Event::default());
                    }
                    match source
                        .speed_decoder
                        .decode_into(message.payload, &mut pool[decoded])
                    {
                        Ok(()) => {
                            decoded += 1;
                            offsets.push(message.offset);
                        }
                        Err(reason) => {
                            self.reject(&mut writer, source.name(), message, reason, now_ms);
                        }
                    }
                }
                let events = &pool[..decoded];
                if let Some((scoring, speed)) = scoring.filter(|(s, _)| s.source == source.name()) {
                    // Scored before they are applied: each event as of itself.
                    scoring
                        .scorer
                        .score(speed, &self.tp, &offsets, events)
                        .map_err(|why| {
                            crate::Error::Internal(format!("fraud scoring of {}: {why}", self.tp))
                        })?;
                }
                metrics::consumed(source.name(), chunk.len() as u64);
                metrics::applied(source.name(), events.len() as u64);
                applied += events.len() as u64;
                let mut segment = segment.write().map_err(|_| poisoned(&self.tp))?;
                for &i in &source.views {
                    segment.views[i].apply(events);
                }
                // A segment's offset promises that all its views hold everything below it:
                // with several sources on the topic, that is true only once all have applied.
                if let (true, Some(&offset)) = (single_source, offsets.last()) {
                    segment.next_offset = segment.next_offset.max(offset + 1);
                }
            }
            if let Ok(mut segment) = segment.write() {
                segment.next_offset = segment.next_offset.max(run_end);
            }
        }
        if let Ok(mut progress) = self.progress.write() {
            progress.next_offset = last.offset + 1;
        }
        writer.events = pool;
        writer.pending += unread.len() as u64;
        // Rejections are listed within REJECTED_LISTED_WITHIN of their arrival, between
        // checkpoints too: a chunk written past the last checkpoint is dropped on restore and
        // written again by the replay.
        writer.rejected.sync_if_due(REJECTED_LISTED_WITHIN)?;
        Ok(applied)
    }

    /// Logs one malformed message of a source.
    fn reject(
        &self,
        writer: &mut Writer,
        source: &str,
        message: &Message<'_>,
        reason: braid_shared::RejectReason,
        now_ms: i64,
    ) {
        metrics::rejected(source, reason.code());
        tracing::debug!(topic = %self.tp.topic, partition = self.tp.partition, offset = message.offset, %reason, "rejected event");
        writer.rejected.append(&RejectedRecord {
            source: source.to_owned(),
            topic: self.tp.topic.clone(),
            partition: self.tp.partition,
            offset: message.offset,
            reason,
            raw: RejectedRecord::bounded_raw(message.payload),
            raw_bytes: message.payload.len(),
            rejected_at_ms: now_ms,
        });
    }
}
