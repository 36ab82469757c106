//! Event times as the API, alerts and event pages write them.

/// Epoch milliseconds as RFC 3339 with milliseconds in UTC (`2026-12-07T13:00:00.000Z`); the
/// number itself when it is out of chrono's range.
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}
