//! A message a layer could not read, as both layers keep it.

use serde::{Deserialize, Serialize};

use crate::event::RejectReason;

/// How much of a rejected message is kept.
pub const REJECTED_RAW_LIMIT: usize = 4096;

/// A message a layer could not read, kept with where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub source: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: RejectReason,
    /// The message, as UTF-8 with invalid bytes replaced, cut at [`REJECTED_RAW_LIMIT`] bytes.
    pub raw: String,
    pub raw_bytes: usize,
    /// When it was rejected, epoch milliseconds.
    pub rejected_at_ms: i64,
}

impl RejectedRecord {
    /// Keeps a bounded, printable copy of `raw`.
    pub fn bounded_raw(raw: &[u8]) -> String {
        let cut = &raw[..raw.len().min(REJECTED_RAW_LIMIT)];
        String::from_utf8_lossy(cut).into_owned()
    }
}
