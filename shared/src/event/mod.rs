//! Events: typed records decoded from a source's message bytes, and the reasons a message is
//! rejected instead.
//!
//! `decode`: JSON bytes to [`Event`] or [`RejectReason`], driven by a [`crate::SourceDef`].

mod decode;
mod tree;

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

pub use decode::Decoder;
pub(crate) use decode::{Found, quote};
pub(crate) use tree::Tree;

/// One scalar field value of an event. Its serde form is tagged (compact in binary encodings);
/// answers use [`Value::to_json`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Always finite; `-0.0` is stored as `0.0`.
    Float(f64),
    /// Held inline up to 24 bytes (most keys: ids, codes, names), so a value such as a group
    /// key costs no heap block of its own; the serde form is a plain string, as before.
    Str(CompactString),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The value as a float, for numbers.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Int(i) => Some(i as f64),
            Self::Float(f) => Some(f),
            _ => None,
        }
    }

    /// The type name used in messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Float(_) => "float",
            Self::Str(_) => "string",
        }
    }

    /// Writes the canonical key form used by distinct counts and top-k: strings as they are,
    /// numbers and booleans as JSON would print them (so `7` and `"7"` are the same key).
    pub fn write_key(&self, out: &mut String) {
        use fmt::Write as _;
        match self {
            Self::Null => {}
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Self::Float(f) => {
                let _ = write!(out, "{f}");
            }
            Self::Str(s) => out.push_str(s),
        }
    }

    /// Converts to JSON for answers.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Null => serde_json::Value::Null,
            Self::Bool(b) => serde_json::Value::Bool(*b),
            Self::Int(i) => serde_json::Value::from(*i),
            Self::Float(f) => serde_json::Value::from(*f),
            Self::Str(s) => serde_json::Value::String(s.to_string()),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Null, Self::Null) => true,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::Float(a), Self::Float(b)) => a.to_bits() == b.to_bits(),
            (Self::Str(a), Self::Str(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Self::Null => {}
            Self::Bool(b) => b.hash(state),
            Self::Int(i) => i.hash(state),
            Self::Float(f) => f.to_bits().hash(state),
            Self::Str(s) => s.hash(state),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A total order for stable answers: null < bool < numbers (by value) < strings.
impl Ord for Value {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Bool(_) => 1,
                Value::Int(_) | Value::Float(_) => 2,
                Value::Str(_) => 3,
            }
        }
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a.cmp(b),
            (Self::Int(a), Self::Int(b)) => a.cmp(b),
            (Self::Str(a), Self::Str(b)) => a.cmp(b),
            (a @ (Self::Int(_) | Self::Float(_)), b @ (Self::Int(_) | Self::Float(_))) => {
                compare_numbers(a, b)
            }
            (a, b) => rank(a).cmp(&rank(b)).then(Ordering::Equal),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Str(s) => write!(f, "{s:?}"),
            other => {
                let mut key = String::new();
                other.write_key(&mut key);
                f.write_str(&key)
            }
        }
    }
}

/// A decoded event: its event time and the values of the source's fields, by field slot
/// (see [`crate::SourceDef::fields`]). Missing fields are [`Value::Null`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// Event time, epoch milliseconds (UTC).
    pub time_ms: i64,
    pub values: Vec<Value>,
}

/// Why a message could not become an event. Every rejected message is kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RejectReason {
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    Oversized { size: usize, limit: usize },
    #[error("not valid JSON: {message}")]
    NotJson { message: String },
    #[error("JSON {found} where an object was expected")]
    NotAnObject { found: String },
    #[error("event time field `{field}` is missing or null")]
    MissingEventTime { field: String },
    #[error("event time field `{field}` has unusable value {value}: {problem}")]
    InvalidEventTime {
        field: String,
        value: String,
        problem: String,
    },
    #[error("field `{field}` is {found} but {expected} is required")]
    WrongType {
        field: String,
        expected: String,
        found: String,
    },
    #[error("field `{field}` appears more than once")]
    DuplicateField { field: String },
    #[error("schema id {id} is unknown: {message}")]
    UnknownSchemaId { id: u32, message: String },
    #[error("the first byte is {found}, not the wire format's magic byte 0")]
    BadMagicByte { found: u8 },
    #[error("not a readable Avro message: {message}")]
    AvroDecode { message: String },
    #[error("not a readable Protobuf message: {message}")]
    ProtoDecode { message: String },
    #[error("not a syslog line: {message}")]
    SyslogParse { message: String },
    #[error("not a logfmt line: {message}")]
    LogfmtParse { message: String },
    #[error("the line does not match the source's pattern: {line}")]
    RegexNoMatch { line: String },
    /// Not a rejection: the schema registry could not be asked. The layers wait for it
    /// ([`Decoder::resolve`]) before decoding, so they never see this; readers of archived
    /// messages report it as an error.
    #[error("{message}")]
    SchemaUnavailable { message: String },
}

impl RejectReason {
    /// Every [`RejectReason::code`].
    pub const CODES: [&'static str; 14] = [
        "oversized",
        "not_json",
        "not_an_object",
        "missing_event_time",
        "invalid_event_time",
        "wrong_type",
        "duplicate_field",
        "unknown_schema_id",
        "bad_magic_byte",
        "avro_decode",
        "proto_decode",
        "syslog_parse",
        "logfmt_parse",
        "regex_no_match",
    ];

    /// A short, bounded code for metrics labels and filters.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::NotJson { .. } => "not_json",
            Self::NotAnObject { .. } => "not_an_object",
            Self::MissingEventTime { .. } => "missing_event_time",
            Self::InvalidEventTime { .. } => "invalid_event_time",
            Self::WrongType { .. } => "wrong_type",
            Self::DuplicateField { .. } => "duplicate_field",
            Self::UnknownSchemaId { .. } => "unknown_schema_id",
            Self::BadMagicByte { .. } => "bad_magic_byte",
            Self::AvroDecode { .. } => "avro_decode",
            Self::ProtoDecode { .. } => "proto_decode",
            Self::SyslogParse { .. } => "syslog_parse",
            Self::LogfmtParse { .. } => "logfmt_parse",
            Self::RegexNoMatch { .. } => "regex_no_match",
            Self::SchemaUnavailable { .. } => "schema_unavailable",
        }
    }
}

/// Compares two numeric values exactly where both are integers, by value otherwise; ties
/// between an integer and an equal float order the integer first so choices are deterministic.
pub fn compare_numbers(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
        (Value::Int(x), Value::Float(y)) => compare_int_float(*x, *y),
        (Value::Float(x), Value::Int(y)) => compare_int_float(*y, *x).reverse(),
        _ => Ordering::Equal,
    }
}

fn compare_int_float(i: i64, f: f64) -> Ordering {
    match (i as f64).total_cmp(&f) {
        Ordering::Equal => {
            // Both round to the same float: compare exactly through i128 (f is integral here,
            // as every float that an i64 rounds to is), and put the integer first on a tie.
            let fi = f as i128;
            (i as i128).cmp(&fi).then(Ordering::Less)
        }
        other => other,
    }
}
