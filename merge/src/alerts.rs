//! The fraud alerts the scorer logged, listed: filtered by event time and key, newest first.

use braid_store::Storage;
use braid_store::alerts::{self, Alert};

/// Which alerts a list or a stream holds.
pub struct Filter {
    /// Event time `[from, to)`.
    pub from: i64,
    pub to: i64,
    /// One value of `fraud.key`, as text.
    pub key: Option<String>,
}

impl Filter {
    pub fn keeps(&self, alert: &Alert) -> bool {
        (self.from..self.to).contains(&alert.event_time_ms)
            && self.key.as_ref().is_none_or(|k| match &alert.key {
                serde_json::Value::String(s) => s == k,
                other => &other.to_string() == k,
            })
    }
}

/// The alerts `filter` keeps, newest raised first, at most `limit`; alerts that cannot be read
/// are skipped (and logged).
pub fn list(
    storage: &dyn Storage,
    filter: &Filter,
    limit: usize,
) -> braid_store::Result<Vec<Alert>> {
    let (mut listed, unreadable) = alerts::read_all(storage)?;
    if unreadable > 0 {
        tracing::warn!(unreadable, "fraud alerts that cannot be read were skipped");
    }
    listed.retain(|a| filter.keeps(a));
    listed.sort_by(|a, b| {
        (b.raised_at_ms, &b.partition, b.offset).cmp(&(a.raised_at_ms, &a.partition, a.offset))
    });
    listed.truncate(limit);
    Ok(listed)
}
