//! Human durations in config values: `500ms`, `15m`, `1h`, `1d`, and `off` where allowed.

use crate::error::Invalid;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a duration such as `15m` or `1d`, naming the bad value on error.
pub fn parse_duration(text: &str) -> Result<Duration, Invalid> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Invalid(
            "empty duration (expected e.g. \"30s\", \"15m\", \"1h\")".to_owned(),
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        Invalid(format!(
            "invalid duration {text:?} ({e}); expected e.g. \"30s\", \"15m\", \"1h\""
        ))
    })
}

/// Formats a duration the way a config file would write it: `1m`, `1h 30m`.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// A schedule interval: a positive duration, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Option<Duration>);

impl Interval {
    pub fn off() -> Self {
        Self(None)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some(d) => f.write_str(&format_duration(d)),
        }
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        let duration = parse_duration(&text).map_err(serde::de::Error::custom)?;
        if duration < Duration::from_secs(1) {
            return Err(serde::de::Error::custom(format!(
                "interval {text:?} is shorter than 1s (use \"off\" to disable)"
            )));
        }
        Ok(Self(Some(duration)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_units() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 500ms "), Ok(Duration::from_millis(500)));
        assert!(parse_duration("").is_err());
        assert!(
            parse_duration("15 parsecs")
                .unwrap_err()
                .0
                .contains("15 parsecs")
        );
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }
}
