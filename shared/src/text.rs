//! How values are written for people: event times as the API, alerts and event pages write
//! them, and client-supplied values echoed in messages.

/// Epoch milliseconds as RFC 3339 with milliseconds in UTC (`2026-12-07T13:00:00.000Z`); the
/// number itself when it is out of chrono's range.
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// A client-supplied value echoed in a message, cut to a readable length.
pub fn abbreviate(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}... ({} characters)", &text[..cut], text.chars().count()),
    }
}
