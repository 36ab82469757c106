//! `braid bench speed --format`: decode + apply of Avro and Protobuf beside the same run's
//! reference decode of the same bytes into the library's generic value (`apache-avro`'s
//! `from_avro_datum` into `Value`, `prost-reflect`'s `DynamicMessage::decode`), and JSON with
//! nested paths beside flat JSON, through the speed layer's apply path on one core.

use std::sync::Arc;
use std::time::Instant;

use braid_shared::Config;
use braid_shared::config::Format;
use braid_shared::format::encode::{Encoder, PAYMENT_AVSC, PAYMENT_MESSAGE, PAYMENT_PROTO};
use braid_shared::generator::{Payments, PaymentsShape};
use braid_speed::DetachedPartition;

use crate::error::{BenchError, Result};

const EXAMPLE: &str = include_str!("../../deploy/config/example.toml");

/// Which format `braid bench speed --format` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchFormat {
    Avro,
    Protobuf,
    /// The payments as nested objects (`card.id`, `amount.value`), beside the flat payments.
    JsonNested,
}

/// One encoding of the same payments: its decode + apply rate and its reference's.
#[derive(Debug, Clone)]
pub struct Measured {
    pub name: &'static str,
    pub mean_bytes: f64,
    /// Decode + apply to the example's three views, one core, events/s.
    pub braid_events_per_sec: f64,
    /// Braid's decode alone (the fields the views read, as the speed layer decodes), events/s.
    pub decode_events_per_sec: f64,
    /// The reference decode of the same bytes, events/s, and what it is.
    pub reference_events_per_sec: f64,
    pub reference: &'static str,
}

#[derive(Debug, Clone)]
pub struct FormatReport {
    pub events: usize,
    pub measured: Vec<Measured>,
}

impl std::fmt::Display for FormatReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = |x: f64| x / 1e6;
        writeln!(
            f,
            "{} payments, the example's three views (card_spend, merchant_stats, country_totals), one core",
            self.events
        )?;
        for measured in &self.measured {
            writeln!(
                f,
                "{:<12} {:>4.0} bytes  reference {:>5.2} M events/s ({})",
                measured.name,
                measured.mean_bytes,
                m(measured.reference_events_per_sec),
                measured.reference,
            )?;
            writeln!(
                f,
                "{:<18} decode alone   {:>5.2} M events/s = {:.2}x the reference",
                "",
                m(measured.decode_events_per_sec),
                measured.decode_events_per_sec / measured.reference_events_per_sec
            )?;
            writeln!(
                f,
                "{:<18} decode + apply {:>5.2} M events/s = {:.2}x the reference",
                "",
                m(measured.braid_events_per_sec),
                measured.braid_events_per_sec / measured.reference_events_per_sec
            )?;
        }
        if let [flat, nested] = self.measured.as_slice() {
            write!(
                f,
                "nested JSON decode + apply = {:.2}x flat JSON's (goal: within 10%)",
                nested.braid_events_per_sec / flat.braid_events_per_sec
            )?;
        } else if let [one] = self.measured.as_slice() {
            write!(
                f,
                "decode + apply = {:.2}x the reference decode alone (goal: at least 0.8x)",
                one.braid_events_per_sec / one.reference_events_per_sec
            )?;
        }
        Ok(())
    }
}

/// Runs the comparison for `format` over `events` generated payments.
pub fn run(format: BenchFormat, events: usize) -> Result<FormatReport> {
    let mut generator = Payments::new(42, 1_790_000_000_000, PaymentsShape::default());
    let json: Vec<Vec<u8>> = (0..events).map(|_| generator.next_event()).collect();
    let dir = tempfile::Builder::new().prefix("braid-bench-").tempdir()?;
    std::fs::write(dir.path().join("payment.avsc"), PAYMENT_AVSC)?;
    std::fs::write(dir.path().join("payment.proto"), PAYMENT_PROTO)?;
    let example = &EXAMPLE[..EXAMPLE.find("[fraud]").unwrap_or(EXAMPLE.len())];
    let config = |text: &str| {
        Config::from_toml_in(text, dir.path()).map_err(|e| BenchError::Setup(e.to_string()))
    };
    let measured = match format {
        BenchFormat::Avro => {
            let text = example.replace(
                "format = \"json\"",
                "format = \"avro\"\nschema_file = \"payment.avsc\"",
            );
            let encoder = Encoder::payments(Format::Avro, None).map_err(BenchError::Setup)?;
            let messages = encode(&encoder, &json)?;
            let schema = apache_avro::Schema::parse_str(PAYMENT_AVSC)
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            let reference = rate(&messages, |m| {
                apache_avro::from_avro_datum(&schema, &mut &m[..], None).is_ok()
            });
            vec![Measured {
                name: "avro",
                mean_bytes: mean(&messages),
                braid_events_per_sec: apply_rate(&config(&text)?, &messages)?,
                decode_events_per_sec: decode_rate(&config(&text)?, &messages),
                reference_events_per_sec: reference,
                reference: "apache-avro from_avro_datum into Value",
            }]
        }
        BenchFormat::Protobuf => {
            let text = example.replace(
                "format = \"json\"",
                &format!(
                    "format = \"protobuf\"\nschema_file = \"payment.proto\"\nmessage = \"{PAYMENT_MESSAGE}\""
                ),
            );
            let encoder = Encoder::payments(Format::Protobuf, None).map_err(BenchError::Setup)?;
            let messages = encode(&encoder, &json)?;
            let Encoder::Protobuf { message, .. } = &encoder else {
                return Err(BenchError::Setup("not a Protobuf encoder".to_owned()));
            };
            let reference = rate(&messages, |m| {
                prost_reflect::DynamicMessage::decode(message.clone(), &m[..]).is_ok()
            });
            vec![Measured {
                name: "protobuf",
                mean_bytes: mean(&messages),
                braid_events_per_sec: apply_rate(&config(&text)?, &messages)?,
                decode_events_per_sec: decode_rate(&config(&text)?, &messages),
                reference_events_per_sec: reference,
                reference: "prost-reflect DynamicMessage::decode",
            }]
        }
        BenchFormat::JsonNested => {
            let nested: Vec<Vec<u8>> = json.iter().map(|m| nest(m)).collect::<Result<_>>()?;
            let value_parse = |m: &Vec<u8>| serde_json::from_slice::<serde_json::Value>(m).is_ok();
            vec![
                Measured {
                    name: "json flat",
                    mean_bytes: mean(&json),
                    braid_events_per_sec: apply_rate(&config(example)?, &json)?,
                    decode_events_per_sec: decode_rate(&config(example)?, &json),
                    reference_events_per_sec: rate(&json, value_parse),
                    reference: "serde_json::Value",
                },
                Measured {
                    name: "json nested",
                    mean_bytes: mean(&nested),
                    braid_events_per_sec: apply_rate(&config(&nested_config(example))?, &nested)?,
                    decode_events_per_sec: decode_rate(&config(&nested_config(example))?, &nested),
                    reference_events_per_sec: rate(&nested, value_parse),
                    reference: "serde_json::Value",
                },
            ]
        }
    };
    Ok(FormatReport { events, measured })
}

fn encode(encoder: &Encoder, json: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    json.iter()
        .map(|m| encoder.encode(m).map_err(BenchError::Setup))
        .collect()
}

fn mean(messages: &[Vec<u8>]) -> f64 {
    messages.iter().map(Vec::len).sum::<usize>() as f64 / messages.len().max(1) as f64
}

/// Events per second of `decode` over every message (the best of three passes).
fn rate(messages: &[Vec<u8>], mut decode: impl FnMut(&Vec<u8>) -> bool) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let mut ok = 0usize;
            for m in messages {
                ok += usize::from(std::hint::black_box(decode(m)));
            }
            std::hint::black_box(ok);
            messages.len() as f64 / started.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Braid's decode alone, as the speed layer decodes (the fields its views read), into a reused
/// event.
fn decode_rate(config: &Config, messages: &[Vec<u8>]) -> f64 {
    let plan = braid_shared::plan::Plan::new(config);
    let Some(source) = plan.topics.first().and_then(|t| t.sources.first()) else {
        return 0.0;
    };
    let mut event = braid_shared::Event::default();
    rate(messages, |m| {
        source.speed_decoder.decode_into(m, &mut event).is_ok()
    })
}

/// Decode + apply through the speed layer's path, one partition on this thread (the best of
/// three fresh partitions).
fn apply_rate(config: &Config, messages: &[Vec<u8>]) -> Result<f64> {
    let batch = config.speed.max_batch.max(1);
    let mut best = 0.0f64;
    for _ in 0..3 {
        let temp = tempfile::Builder::new().prefix("braid-bench-").tempdir()?;
        let storage = Arc::new(braid_store::LocalStorage::new(temp.path()));
        let partition = DetachedPartition::new(config, storage)?;
        let started = Instant::now();
        let mut applied = 0;
        for (n, chunk) in messages.chunks(batch).enumerate() {
            applied += partition.apply((n * batch) as i64, chunk)?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        if applied != messages.len() as u64 {
            return Err(BenchError::Setup(format!(
                "{} of {} events applied: the format's messages are rejected",
                applied,
                messages.len()
            )));
        }
        best = best.max(messages.len() as f64 / elapsed);
    }
    Ok(best)
}

/// A flat payment as services nest it: `tx.id`, `card.id`, `merchant.{id,country}`,
/// `amount.{value,currency}`.
fn nest(flat: &[u8]) -> Result<Vec<u8>> {
    let v: serde_json::Value =
        serde_json::from_slice(flat).map_err(|e| BenchError::Setup(e.to_string()))?;
    let nested = serde_json::json!({
        "tx": {"id": v["tx_id"]},
        "card": {"id": v["card_id"]},
        "merchant": {"id": v["merchant_id"], "country": v["country"]},
        "amount": {"value": v["amount"], "currency": v["currency"]},
        "ts": v["ts"],
    });
    Ok(nested.to_string().into_bytes())
}

/// The example config over the nested payments.
fn nested_config(example: &str) -> String {
    example
        .replace("tx_id = \"string\"", "\"tx.id\" = \"string\"")
        .replace("card_id = \"string\"", "\"card.id\" = \"string\"")
        .replace("merchant_id = \"string\"", "\"merchant.id\" = \"string\"")
        .replace("country = \"string\"", "\"merchant.country\" = \"string\"")
        .replace("amount = \"float\"", "\"amount.value\" = \"float\"")
        .replace("\"tx_id\"", "\"tx.id\"")
        .replace("card_id", "card.id")
        .replace("merchant_id", "merchant.id")
        .replace("[\"country\"]", "[\"merchant.country\"]")
        .replace("(amount", "(amount.value")
}
