//! Resolved definitions (a source's fields, a view's keys, bucket and metrics) and the view
//! state both layers compute from them.
//!
//! `state`: [`ViewState`], the cells of one view with apply, merge and the reference recompute.

mod bucket;
mod state;

use serde::{Deserialize, Serialize};

use crate::metric::MetricExpr;

pub use state::{CellKey, GroupKey, PointKey, Row, ViewState};

/// What a field slot of a source accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// Declared `string`.
    String,
    /// Declared `int`.
    Int,
    /// Declared `float` (integers are accepted and widened).
    Float,
    /// Declared `bool`.
    Bool,
    /// Not declared; a view computes on it, so it must be a number.
    Number,
    /// Not declared; any scalar (string, number, bool) is accepted.
    Scalar,
}

impl FieldKind {
    pub fn from_declared(ty: FieldType) -> Self {
        match ty {
            FieldType::String => Self::String,
            FieldType::Int => Self::Int,
            FieldType::Float => Self::Float,
            FieldType::Bool => Self::Bool,
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Int | Self::Float | Self::Number)
    }

    /// Describes the accepted values for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Int => "an integer",
            Self::Float | Self::Number => "a number",
            Self::Bool => "a boolean",
            Self::Scalar => "a string, number or boolean",
        }
    }
}

/// One field a source's events are decoded into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldSpec {
    pub name: String,
    pub kind: FieldKind,
}

/// A validated source: where its events come from and which fields are decoded, by slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceDef {
    pub name: String,
    pub topic: String,
    pub format: Format,
    pub event_time: String,
    pub event_id: Option<String>,
    /// Decoded fields; an event's `values[i]` holds `fields[i]`.
    pub fields: Vec<FieldSpec>,
    /// Whether `fields` came from a declared `[source.fields]` schema.
    pub schema_declared: bool,
    pub max_event_bytes: usize,
    /// How messages are read: the format with its schemas or pattern.
    #[serde(skip)]
    pub reader: crate::format::Reader,
    /// How a textual event time is written.
    #[serde(skip)]
    pub time_layout: crate::format::lines::TimeLayout,
}

impl SourceDef {
    /// The slot of a decoded field.
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

/// A group-by field resolved to its slot in the source's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldRef {
    pub name: String,
    pub slot: usize,
}

/// A named metric of a view, with its input field resolved to a slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricDef {
    pub name: String,
    pub expr: MetricExpr,
    /// Slot of the metric's field (`None` for `count`).
    pub slot: Option<usize>,
}

/// A validated view: computed identically by the batch and the speed layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewDef {
    pub name: String,
    pub source: String,
    pub group_by: Vec<FieldRef>,
    /// Event-time bucket width in milliseconds; divides a day.
    pub granularity_ms: i64,
    pub metrics: Vec<MetricDef>,
}

impl ViewDef {
    /// Start of the bucket holding `time_ms`.
    pub fn bucket_of(&self, time_ms: i64) -> i64 {
        time_ms - time_ms.rem_euclid(self.granularity_ms)
    }

    /// A stable fingerprint of everything that shapes the view's cells. When it changes, stored
    /// states of the view can no longer be merged with new ones.
    pub fn fingerprint(&self) -> u64 {
        let mut canonical = format!("v1|{}|{}|", self.source, self.granularity_ms);
        for field in &self.group_by {
            canonical.push_str(&field.name);
            canonical.push(',');
        }
        for metric in &self.metrics {
            canonical.push('|');
            canonical.push_str(&metric.name);
            canonical.push('=');
            canonical.push_str(&metric.expr.to_string());
        }
        xxhash_rust::xxh3::xxh3_64(canonical.as_bytes())
    }
}

/// The wire format of a source's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Avro,
    Protobuf,
    Syslog,
    Logfmt,
    Regex,
}

impl Format {
    /// The name configs write.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Avro => "avro",
            Self::Protobuf => "protobuf",
            Self::Syslog => "syslog",
            Self::Logfmt => "logfmt",
            Self::Regex => "regex",
        }
    }
}

/// A declared field type in `[source.fields]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Int,
    #[serde(alias = "number")]
    Float,
    Bool,
}
