//! Log lines: RFC 5424 and RFC 3164 syslog (`syslog_loose`), logfmt (`logfmt`), and a regex
//! with named captures (`regex`). A line becomes a small tree of named values that field paths
//! read like any message's; captured text converts to a field's declared type when read.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Utc};

use crate::event::{Found, RejectReason, Tree};

/// How a source's lines are split into fields.
#[derive(Debug)]
pub enum LineFormat {
    Syslog,
    Logfmt,
    Regex(regex::Regex),
}

/// How a line's own timestamp is read: a strftime-like layout, and the zone of times written
/// without an offset (UTC when unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeLayout {
    pub format: Option<String>,
    pub zone: Option<chrono_tz::Tz>,
}

impl TimeLayout {
    /// Epoch milliseconds of `text` in this layout, or what is wrong with it.
    pub fn parse(&self, text: &str) -> Result<i64, String> {
        let Some(format) = &self.format else {
            return DateTime::parse_from_rfc3339(text)
                .map(|t| t.timestamp_millis())
                .map_err(|e| format!("not RFC 3339 ({e})"));
        };
        if let Ok(time) = DateTime::parse_from_str(text, format) {
            return Ok(time.timestamp_millis());
        }
        let naive = NaiveDateTime::parse_from_str(text, format)
            .map_err(|e| format!("does not match time_format {format:?} ({e})"))?;
        match self.zone {
            None => Ok(Utc.from_utc_datetime(&naive).timestamp_millis()),
            Some(zone) => zone
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.timestamp_millis())
                .ok_or_else(|| format!("does not exist in time zone {zone}")),
        }
    }
}

/// A line's fields: text, numbers, or named groups of them (syslog structured data).
#[derive(Debug)]
pub(crate) enum Line<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    Group(Vec<(Cow<'a, str>, Line<'a>)>),
}

impl<'a> Tree<'a> for &'a Line<'a> {
    fn member(&self, name: &str) -> Option<Self> {
        match self {
            Line::Group(members) => members.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    fn element(&self, _: usize) -> Option<Self> {
        None
    }

    fn found(&self) -> Found<'a> {
        match self {
            Line::Text(Cow::Borrowed(text)) => Found::Text(Cow::Borrowed(text)),
            Line::Text(Cow::Owned(text)) => Found::Text(Cow::Owned(text.clone())),
            Line::Int(i) => Found::Int(*i),
            Line::Group(_) => Found::Object,
        }
    }
}

/// A name as paths can write it: characters other than letters, digits and `_` become `_`
/// (`exampleSDID@32473` is `exampleSDID_32473`; a leading digit gets a `_` before it).
pub fn path_name(name: &str) -> Cow<'_, str> {
    let plain = name.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric())
        && name.bytes().next().is_some_and(|b| !b.is_ascii_digit());
    if plain {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    if name.bytes().next().is_none_or(|b| b.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c == '_' || c.is_ascii_alphanumeric() {
            c
        } else {
            '_'
        }
    }));
    Cow::Owned(out)
}

impl LineFormat {
    /// The fields of one line, or why it cannot be read.
    pub(crate) fn read<'a>(
        &'a self,
        bytes: &'a [u8],
        layout: &TimeLayout,
    ) -> Result<Line<'a>, RejectReason> {
        let text =
            std::str::from_utf8(bytes).map_err(|e| self.error(format!("not UTF-8 text ({e})")))?;
        let text = text.trim_end_matches(['\n', '\r']);
        match self {
            Self::Syslog => syslog(text, layout).map_err(|message| self.error(message)),
            Self::Logfmt => logfmt(text).map_err(|message| self.error(message)),
            Self::Regex(pattern) => {
                let captures =
                    pattern
                        .captures(text)
                        .ok_or_else(|| RejectReason::RegexNoMatch {
                            line: crate::event::quote(text),
                        })?;
                Ok(Line::Group(
                    pattern
                        .capture_names()
                        .flatten()
                        .filter_map(|name| {
                            let value = captures.name(name)?;
                            Some((
                                Cow::Borrowed(name),
                                Line::Text(Cow::Borrowed(value.as_str())),
                            ))
                        })
                        .collect(),
                ))
            }
        }
    }

    fn error(&self, message: String) -> RejectReason {
        match self {
            Self::Syslog => RejectReason::SyslogParse { message },
            Self::Logfmt => RejectReason::LogfmtParse { message },
            Self::Regex(_) => RejectReason::RegexNoMatch { line: message },
        }
    }
}

/// The fields of a syslog line: `priority`, `facility`, `severity`, `timestamp` (epoch ms),
/// `host`, `app`, `procid`, `msgid`, `msg`, and `sd.<id>.<param>` for structured data.
fn syslog<'a>(text: &'a str, layout: &TimeLayout) -> Result<Line<'a>, String> {
    let priority = priority(text)?;
    let zone = layout.zone;
    let now = Utc::now();
    // RFC 3164 timestamps carry no year: the latest year that does not put the line more than
    // a day in the future.
    let year = move |(month, day, ..): syslog_loose::IncompleteDate| {
        let this = now.year();
        match Utc.with_ymd_and_hms(this, month, day, 0, 0, 0).single() {
            Some(date) if date > now + chrono::TimeDelta::days(1) => this - 1,
            _ => this,
        }
    };
    let message = match zone {
        Some(zone) => syslog_loose::parse_message_with_year_exact_tz(
            text,
            year,
            Some(zone),
            syslog_loose::Variant::Either,
        ),
        None => syslog_loose::parse_message_with_year_exact_tz(
            text,
            year,
            Some(Utc),
            syslog_loose::Variant::Either,
        ),
    }?;
    let mut fields: Vec<(Cow<'a, str>, Line<'a>)> = vec![
        (Cow::Borrowed("priority"), Line::Int(i64::from(priority))),
        (Cow::Borrowed("msg"), Line::Text(Cow::Borrowed(message.msg))),
    ];
    if let Some(facility) = message.facility {
        fields.push((
            Cow::Borrowed("facility"),
            Line::Text(Cow::Borrowed(facility.as_str())),
        ));
    }
    if let Some(severity) = message.severity {
        fields.push((
            Cow::Borrowed("severity"),
            Line::Text(Cow::Borrowed(severity.as_str())),
        ));
    }
    if let Some(time) = message.timestamp {
        fields.push((
            Cow::Borrowed("timestamp"),
            Line::Int(time.timestamp_millis()),
        ));
    }
    let named = [
        ("host", message.hostname),
        ("app", message.appname),
        ("msgid", message.msgid),
    ];
    for (name, value) in named {
        if let Some(value) = value {
            fields.push((Cow::Borrowed(name), Line::Text(Cow::Borrowed(value))));
        }
    }
    if let Some(procid) = message.procid {
        let value = match procid {
            syslog_loose::ProcId::PID(pid) => Line::Int(i64::from(pid)),
            syslog_loose::ProcId::Name(name) => Line::Text(Cow::Borrowed(name)),
        };
        fields.push((Cow::Borrowed("procid"), value));
    }
    if !message.structured_data.is_empty() {
        let elements = message
            .structured_data
            .into_iter()
            .map(|element| {
                let params = element
                    .params
                    .into_iter()
                    .map(|(name, value)| (path_name(name), Line::Text(Cow::Borrowed(value))))
                    .collect();
                (path_name(element.id), Line::Group(params))
            })
            .collect();
        fields.push((Cow::Borrowed("sd"), Line::Group(elements)));
    }
    Ok(Line::Group(fields))
}

/// The `<PRI>` a syslog line starts with: 0 to 191.
fn priority(text: &str) -> Result<u8, String> {
    let digits = text
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .map(|(digits, _)| digits)
        .ok_or_else(|| "the line does not start with a <priority>".to_owned())?;
    let valid = !digits.is_empty()
        && digits.len() <= 3
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    match digits.parse::<u8>() {
        Ok(pri) if valid && pri <= 191 => Ok(pri),
        _ => Err(format!(
            "priority <{}> is not a number from 0 to 191",
            crate::event::quote(digits).trim_matches('"')
        )),
    }
}

/// The `key=value` pairs of a logfmt line (a key without `=` reads as `true`).
fn logfmt(text: &str) -> Result<Line<'static>, String> {
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err("the line holds control characters".to_owned());
    }
    let mut quotes = 0usize;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => quotes += 1,
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    if quotes % 2 == 1 {
        return Err("a quoted value is not closed".to_owned());
    }
    let pairs: Vec<_> = ::logfmt::parse(text)
        .into_iter()
        .filter(|pair| !pair.key.trim().is_empty())
        .collect();
    if pairs.is_empty() {
        return Err("the line holds no key=value pair".to_owned());
    }
    Ok(Line::Group(
        pairs
            .into_iter()
            .map(|pair| {
                let key = path_name(&pair.key).into_owned();
                let value = pair.val.unwrap_or_else(|| "true".to_owned());
                (Cow::Owned(key), Line::Text(Cow::Owned(value)))
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_checked() {
        assert_eq!(priority("<34>1 2026").unwrap(), 34);
        assert_eq!(priority("<0>x").unwrap(), 0);
        assert_eq!(priority("<191>x").unwrap(), 191);
        for bad in [
            "<192>x", "<999>x", "<>x", "<01>x", "<a>x", "34 x", "<1234>x", "<-1>x",
        ] {
            assert!(priority(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_become_path_names() {
        assert_eq!(path_name("exampleSDID@32473"), "exampleSDID_32473");
        assert_eq!(path_name("http.status"), "http_status");
        assert_eq!(path_name("9lives"), "_9lives");
        assert_eq!(path_name(""), "_");
        assert_eq!(path_name("plain_1"), "plain_1");
    }

    #[test]
    fn time_layouts_read_zones() {
        let layout = TimeLayout {
            format: Some("%d/%b/%Y:%H:%M:%S %z".to_owned()),
            zone: None,
        };
        assert_eq!(
            layout.parse("10/Oct/2026:13:55:36 -0700").unwrap(),
            1_791_665_736_000
        );
        let paris = TimeLayout {
            format: Some("%Y-%m-%d %H:%M:%S".to_owned()),
            zone: Some(chrono_tz::Europe::Paris),
        };
        assert_eq!(
            paris.parse("2026-07-01 12:00:00").unwrap(),
            1_782_900_000_000
        );
        assert!(paris.parse("2026-07-01").is_err());
        // The hour skipped when clocks go forward does not exist.
        assert!(paris.parse("2026-03-29 02:30:00").is_err());
        assert!(TimeLayout::default().parse("2026-07-01T10:00:00Z").is_ok());
    }
}
