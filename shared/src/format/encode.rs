//! Writing events in a source's format: the generator's JSON payments as Avro, Protobuf or
//! syslog lines, for `braid produce --format`, `braid dev --format` and the format benchmarks.

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use serde_json::Value as Json;

use super::{AvroSchema, ProtoSchema};
use crate::view::Format;

/// The generator's payment as an Avro schema (`.avsc`).
pub const PAYMENT_AVSC: &str = include_str!("../../schemas/payment.avsc");
/// The generator's payment as a Protobuf file (`.proto`), message [`PAYMENT_MESSAGE`].
pub const PAYMENT_PROTO: &str = include_str!("../../schemas/payment.proto");
pub const PAYMENT_MESSAGE: &str = "braid.generator.Payment";

/// Writes JSON objects in one format.
#[derive(Debug, Clone)]
pub enum Encoder {
    Json,
    /// Avro datums, after the wire-format header of `id` when registered.
    Avro {
        schema: Arc<AvroSchema>,
        id: Option<u32>,
    },
    /// Protobuf messages, after the wire-format header of `id` (and index list) when registered.
    Protobuf {
        message: MessageDescriptor,
        id: Option<u32>,
    },
    /// RFC 5424 lines: the object's members as structured data `[event@32473 ...]`, its
    /// `time_field` as the line's timestamp.
    Syslog {
        time_field: String,
    },
}

impl Encoder {
    /// The generator's payments in `format`, framed with `id` when the schema is registered.
    pub fn payments(format: Format, id: Option<u32>) -> Result<Self, String> {
        Ok(match format {
            Format::Json => Self::Json,
            Format::Avro => Self::Avro {
                schema: Arc::new(AvroSchema::parse(PAYMENT_AVSC)?),
                id,
            },
            Format::Protobuf => Self::Protobuf {
                message: ProtoSchema::parse("braid/generator/payment.proto", PAYMENT_PROTO)?
                    .message(PAYMENT_MESSAGE)?,
                id,
            },
            Format::Syslog => Self::Syslog {
                time_field: "ts".to_owned(),
            },
            Format::Logfmt | Format::Regex => {
                return Err(format!(
                    "events are not written as {}: choose json, avro, protobuf or syslog",
                    format.name()
                ));
            }
        })
    }

    /// `json` (an object) in this format.
    pub fn encode(&self, json: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Self::Json => Ok(json.to_vec()),
            Self::Avro { schema, id } => {
                let value: Json = serde_json::from_slice(json).map_err(|e| e.to_string())?;
                let datum = schema.encode_json(&value)?;
                Ok(match id {
                    Some(id) => super::frame(*id, false, &datum),
                    None => datum,
                })
            }
            Self::Protobuf { message, id } => {
                use prost_reflect::prost::Message as _;
                let mut deserializer = serde_json::Deserializer::from_slice(json);
                let dynamic = DynamicMessage::deserialize(message.clone(), &mut deserializer)
                    .map_err(|e| e.to_string())?;
                let body = dynamic.encode_to_vec();
                Ok(match id {
                    Some(id) => {
                        let mut out = super::frame(*id, false, &[]);
                        out.extend(index_list(message));
                        out.extend(body);
                        out
                    }
                    None => body,
                })
            }
            Self::Syslog { time_field } => {
                let value: Json = serde_json::from_slice(json).map_err(|e| e.to_string())?;
                let object = value.as_object().ok_or("not a JSON object")?;
                let time = object
                    .get(time_field)
                    .and_then(Json::as_str)
                    .ok_or_else(|| format!("no text field {time_field:?}"))?;
                let params: Vec<String> = object
                    .iter()
                    .filter(|(key, _)| *key != time_field)
                    .map(|(key, value)| {
                        let text = match value {
                            Json::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        let escaped = text
                            .replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace(']', "\\]");
                        format!("{key}=\"{escaped}\"")
                    })
                    .collect();
                Ok(format!(
                    "<134>1 {time} braid braid-produce - - [event@32473 {}] event",
                    params.join(" ")
                )
                .into_bytes())
            }
        }
    }
}

/// The Confluent message-index list naming `message` in its file.
fn index_list(message: &MessageDescriptor) -> Vec<u8> {
    let mut path = Vec::new();
    let mut current = message.clone();
    while let Some(parent) = current.parent_message() {
        path.push(
            parent
                .child_messages()
                .position(|m| m == current)
                .unwrap_or(0),
        );
        current = parent;
    }
    path.push(
        current
            .parent_file()
            .messages()
            .position(|m| m == current)
            .unwrap_or(0),
    );
    path.reverse();
    if path == [0] {
        return vec![0];
    }
    let zigzag = |n: i64| ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    for n in std::iter::once(path.len() as i64).chain(path.iter().map(|&i| i as i64)) {
        let mut v = zigzag(n);
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out
}

impl AvroSchema {
    /// A JSON value as a datum of this schema: records from objects, unions by the first
    /// branch that takes the value, timestamps from RFC 3339 text or epoch milliseconds.
    pub fn encode_json(&self, json: &Json) -> Result<Vec<u8>, String> {
        let value = self.avro_of(self.schema(), json)?;
        apache_avro::to_avro_datum(self.schema(), value).map_err(|e| e.to_string())
    }

    fn avro_of(&self, schema: &Schema, json: &Json) -> Result<Avro, String> {
        let schema = self.resolved(schema);
        let wrong = || format!("{json} does not fit {schema:?}");
        Ok(match (schema, json) {
            (Schema::Null, Json::Null) => Avro::Null,
            (Schema::Boolean, Json::Bool(b)) => Avro::Boolean(*b),
            (Schema::Int, Json::Number(n)) => Avro::Int(
                n.as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(wrong)?,
            ),
            (Schema::Long, Json::Number(n)) => Avro::Long(n.as_i64().ok_or_else(wrong)?),
            (Schema::Float, Json::Number(n)) => Avro::Float(n.as_f64().ok_or_else(wrong)? as f32),
            (Schema::Double, Json::Number(n)) => Avro::Double(n.as_f64().ok_or_else(wrong)?),
            (Schema::String, Json::String(s)) => Avro::String(s.clone()),
            (Schema::Enum(_), Json::String(s)) => {
                let Schema::Enum(e) = schema else {
                    unreachable!()
                };
                let at = e.symbols.iter().position(|x| x == s).ok_or_else(wrong)?;
                Avro::Enum(at as u32, s.clone())
            }
            (Schema::TimestampMillis, Json::Number(n)) => {
                Avro::TimestampMillis(n.as_i64().ok_or_else(wrong)?)
            }
            (Schema::TimestampMillis, Json::String(s)) => Avro::TimestampMillis(
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|_| wrong())?
                    .timestamp_millis(),
            ),
            (Schema::Array(array), Json::Array(items)) => Avro::Array(
                items
                    .iter()
                    .map(|item| self.avro_of(&array.items, item))
                    .collect::<Result<_, _>>()?,
            ),
            (Schema::Map(map), Json::Object(entries)) => Avro::Map(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.avro_of(&map.types, v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            (Schema::Record(record), Json::Object(members)) => Avro::Record(
                record
                    .fields
                    .iter()
                    .map(|field| {
                        let value = members.get(&field.name).unwrap_or(&Json::Null);
                        Ok((field.name.clone(), self.avro_of(&field.schema, value)?))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            (Schema::Union(union), _) => union
                .variants()
                .iter()
                .enumerate()
                .find_map(|(i, variant)| {
                    let value = self.avro_of(variant, json).ok()?;
                    Some(Avro::Union(i as u32, Box::new(value)))
                })
                .ok_or_else(wrong)?,
            _ => return Err(wrong()),
        })
    }
}
