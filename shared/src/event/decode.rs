//! JSON decoding driven by a source definition. Only the fields a source needs are
//! materialised; everything else is skipped without allocation.

use std::borrow::Cow;
use std::fmt;

use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Event, RejectReason, Value};
use crate::view::{FieldKind, SourceDef};

/// Latest event time accepted: 9999-12-31T23:59:59.999Z.
const MAX_TIME_MS: i64 = 253_402_300_799_999;
/// How much of an offending value a rejection reason quotes.
const QUOTE_LIMIT: usize = 64;

#[derive(Clone, Copy)]
enum Slot {
    Time,
    Field(usize),
}

/// Decodes one source's messages. Build once per source and reuse.
#[derive(Debug, Clone)]
pub struct Decoder {
    event_time: String,
    fields: Vec<(String, FieldKind)>,
    slots: FxHashMap<String, usize>,
    time_slot: Option<usize>,
    max_bytes: usize,
}

impl Decoder {
    pub fn new(source: &SourceDef) -> Self {
        let slots = source
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        Self {
            event_time: source.event_time.clone(),
            fields: source
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.kind))
                .collect(),
            time_slot: source.slot(&source.event_time),
            slots,
            max_bytes: source.max_event_bytes,
        }
    }

    /// Decodes one message. Never panics; every failure is a [`RejectReason`].
    pub fn decode(&self, bytes: &[u8]) -> Result<Event, RejectReason> {
        if bytes.len() > self.max_bytes {
            return Err(RejectReason::Oversized {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        let mut raw = Raw {
            time: None,
            values: vec![None; self.fields.len()],
            duplicate: None,
        };
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let outcome = ObjectSeed {
            decoder: self,
            raw: &mut raw,
        }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_data() => return Err(not_an_object(bytes)),
            Err(e) => {
                return Err(RejectReason::NotJson {
                    message: e.to_string(),
                });
            }
        }
        if let Some(field) = raw.duplicate {
            return Err(RejectReason::DuplicateField { field });
        }
        let time_ms = self.event_time(raw.time.as_ref())?;
        let mut values = Vec::with_capacity(self.fields.len());
        for ((name, kind), raw_value) in self.fields.iter().zip(raw.values) {
            values.push(check_kind(
                name,
                *kind,
                raw_value.unwrap_or(RawValue::Null),
            )?);
        }
        if let Some(slot) = self.time_slot {
            // The event-time field is also a declared field: keep its raw form there.
            if values[slot].is_null() {
                values[slot] = raw.time.map_or(Value::Null, RawValue::into_value_lossy);
            }
        }
        Ok(Event { time_ms, values })
    }

    fn event_time(&self, raw: Option<&RawValue>) -> Result<i64, RejectReason> {
        let field = &self.event_time;
        let invalid = |value: String, problem: &str| RejectReason::InvalidEventTime {
            field: field.clone(),
            value,
            problem: problem.to_owned(),
        };
        match raw {
            None | Some(RawValue::Null) => Err(RejectReason::MissingEventTime {
                field: field.clone(),
            }),
            Some(RawValue::Int(ms)) if (0..=MAX_TIME_MS).contains(ms) => Ok(*ms),
            Some(RawValue::Int(ms)) => Err(invalid(
                ms.to_string(),
                "epoch milliseconds must be between 0 and 253402300799999",
            )),
            Some(RawValue::Str(text)) => match chrono::DateTime::parse_from_rfc3339(text) {
                Ok(time) => {
                    let ms = time.timestamp_millis();
                    if (0..=MAX_TIME_MS).contains(&ms) {
                        Ok(ms)
                    } else {
                        Err(invalid(quote(text), "time is before 1970"))
                    }
                }
                Err(e) => Err(invalid(quote(text), &format!("not RFC 3339 ({e})"))),
            },
            Some(other) => Err(invalid(
                other.describe(),
                "expected an RFC 3339 string or integer epoch milliseconds",
            )),
        }
    }
}

fn not_an_object(bytes: &[u8]) -> RejectReason {
    let found = match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Array(_)) => "array",
        Ok(serde_json::Value::String(_)) => "string",
        Ok(serde_json::Value::Number(_)) => "number",
        Ok(serde_json::Value::Bool(_)) => "boolean",
        Ok(serde_json::Value::Null) => "null",
        Ok(serde_json::Value::Object(_)) => "object",
        Err(e) => {
            return RejectReason::NotJson {
                message: e.to_string(),
            };
        }
    };
    RejectReason::NotAnObject {
        found: found.to_owned(),
    }
}

fn quote(text: &str) -> String {
    if text.len() <= QUOTE_LIMIT {
        return format!("{text:?}");
    }
    let mut end = QUOTE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &text[..end])
}

fn check_kind(name: &str, kind: FieldKind, raw: RawValue) -> Result<Value, RejectReason> {
    let value = match (kind, raw) {
        (_, RawValue::Null) => Value::Null,
        (FieldKind::String | FieldKind::Scalar, RawValue::Str(s)) => Value::Str(s),
        (FieldKind::Int | FieldKind::Number | FieldKind::Scalar, RawValue::Int(i)) => Value::Int(i),
        (FieldKind::Float, RawValue::Int(i)) => Value::Float(i as f64),
        (FieldKind::Float | FieldKind::Number | FieldKind::Scalar, RawValue::Float(f)) => {
            Value::Float(f)
        }
        (FieldKind::Bool | FieldKind::Scalar, RawValue::Bool(b)) => Value::Bool(b),
        (kind, raw) => {
            return Err(RejectReason::WrongType {
                field: name.to_owned(),
                expected: kind.describe().to_owned(),
                found: raw.describe(),
            });
        }
    };
    Ok(value)
}

struct Raw {
    time: Option<RawValue>,
    values: Vec<Option<RawValue>>,
    duplicate: Option<String>,
}

#[derive(Debug, Clone)]
enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Object,
    Array,
}

impl RawValue {
    fn describe(&self) -> String {
        match self {
            Self::Null => "null".to_owned(),
            Self::Bool(b) => format!("boolean {b}"),
            Self::Int(i) => format!("integer {i}"),
            Self::Float(f) => format!("number {f}"),
            Self::Str(s) => format!("string {}", quote(s)),
            Self::Object => "an object".to_owned(),
            Self::Array => "an array".to_owned(),
        }
    }

    fn into_value_lossy(self) -> Value {
        match self {
            Self::Bool(b) => Value::Bool(b),
            Self::Int(i) => Value::Int(i),
            Self::Float(f) => Value::Float(f),
            Self::Str(s) => Value::Str(s),
            Self::Null | Self::Object | Self::Array => Value::Null,
        }
    }
}

impl<'de> de::Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawValueVisitor)
    }
}

struct RawValueVisitor;

impl<'de> Visitor<'de> for RawValueVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
        // JSON has no NaN or infinity; normalise -0.0 so equal numbers are equal keys.
        Ok(RawValue::Float(if v == 0.0 { 0.0 } else { v }))
    }

    fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Str(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(RawValue::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawValue::Array)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct ObjectSeed<'a> {
    decoder: &'a Decoder,
    raw: &'a mut Raw,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let decoder = self.decoder;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let slot = if *key == *decoder.event_time {
                Some(Slot::Time)
            } else {
                decoder.slots.get(key.as_ref()).map(|&i| Slot::Field(i))
            };
            let target = match slot {
                None => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                Some(Slot::Time) => &mut self.raw.time,
                Some(Slot::Field(i)) => &mut self.raw.values[i],
            };
            let value = map.next_value::<RawValue>()?;
            if target.is_some() && self.raw.duplicate.is_none() {
                self.raw.duplicate = Some(key.into_owned());
            }
            *target = Some(value);
        }
        Ok(())
    }
}
