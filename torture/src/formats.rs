//! The workload in Avro or Protobuf through a schema registry: the scenario's JSON payments
//! written with a first schema version, then a second (one more field) from a message on, each
//! under its registered id; what is not a payment is sent as it is (and rejected).

use braid_shared::format::encode::Encoder;
use braid_shared::format::{AvroSchema, ProtoSchema};
use braid_testkit::registry::TestRegistry;

use crate::TortureError;
use crate::scenario::RegistryFormat;

const AVRO_V1: &str = r#"{"type": "record", "name": "Payment", "namespace": "torture", "fields": [
  {"name": "tx_id", "type": "string"},
  {"name": "card_id", "type": "string"},
  {"name": "merchant_id", "type": "string"},
  {"name": "country", "type": "string"},
  {"name": "amount", "type": "double"},
  {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "merchant", "type": {"type": "record", "name": "Merchant", "fields": [
    {"name": "id", "type": "string"},
    {"name": "risk", "type": ["null", {"type": "record", "name": "Risk", "fields": [
      {"name": "tier", "type": "int"}]}], "default": null}]}},
  {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item",
    "fields": [{"name": "sku", "type": "string"}]}}}@EXTRA@
]}"#;

const PROTO_V1: &str = r#"syntax = "proto3";
package torture;

message Payment {
  string tx_id = 1;
  string card_id = 2;
  string merchant_id = 3;
  string country = 4;
  double amount = 5;
  int64 ts = 6;
  Merchant merchant = 7;
  repeated Item items = 8;@EXTRA@
}

message Merchant {
  string id = 1;
  Risk risk = 2;
}

message Risk {
  int32 tier = 1;
}

message Item {
  string sku = 1;
}
"#;

/// The two schema versions of `format`, as registered text.
fn versions(format: RegistryFormat) -> [String; 2] {
    match format {
        RegistryFormat::Avro => [
            AVRO_V1.replace("@EXTRA@", ""),
            AVRO_V1.replace(
                "@EXTRA@",
                r#",
  {"name": "channel", "type": "string", "default": "web"}"#,
            ),
        ],
        RegistryFormat::Protobuf => [
            PROTO_V1.replace("@EXTRA@", ""),
            PROTO_V1.replace("@EXTRA@", "\n  string channel = 9;"),
        ],
    }
}

/// Registers both versions under `<topic>-value` and writes each payload with its version:
/// the first `switch_at` messages with the first, the rest with the second.
pub fn encode(
    registry: &TestRegistry,
    format: RegistryFormat,
    topic: &str,
    payloads: &[Vec<u8>],
    switch_at: usize,
) -> Result<Vec<Vec<u8>>, TortureError> {
    let subject = format!("{topic}-value");
    let setup = |e: String| TortureError::Config(format!("the workload's {format:?} schema: {e}"));
    let mut encoders = Vec::new();
    for text in versions(format) {
        let encoder = match format {
            RegistryFormat::Avro => Encoder::Avro {
                schema: std::sync::Arc::new(AvroSchema::parse(&text).map_err(setup)?),
                id: Some(registry.register(&subject, &text, "AVRO")),
            },
            RegistryFormat::Protobuf => Encoder::Protobuf {
                message: ProtoSchema::parse("torture.proto", &text)
                    .and_then(|s| s.message("torture.Payment"))
                    .map_err(setup)?,
                id: Some(registry.register(&subject, &text, "PROTOBUF")),
            },
        };
        encoders.push(encoder);
    }
    Ok(payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            let encoder = &encoders[usize::from(i >= switch_at)];
            let with_channel = match i >= switch_at {
                true => with_channel(payload, i),
                false => None,
            };
            encoder
                .encode(with_channel.as_deref().unwrap_or(payload))
                .unwrap_or_else(|_| payload.clone())
        })
        .collect())
}

/// A payment of the second version: the same object with a `channel`.
fn with_channel(payload: &[u8], i: usize) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value
        .as_object_mut()?
        .insert("channel".into(), ["web", "app", "pos"][i % 3].into());
    Some(value.to_string().into_bytes())
}
