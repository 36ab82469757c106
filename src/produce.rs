//! `braid produce`: the synthetic payments generator against any broker, at a steady rate.
//! `braid dev` runs the same loop against its embedded broker.

use std::process::ExitCode;

use braid_kafka::{GeneratorPlan, generate};
use braid_shared::config::Format;
use braid_shared::format::encode::{Encoder, PAYMENT_AVSC, PAYMENT_PROTO};
use braid_shared::format::{Reader, Schemas};
use braid_shared::generator::{Payments, PaymentsShape};
use braid_shared::{Config, Decoder, SourceDef};
use rdkafka::ClientConfig;
use rdkafka::producer::BaseProducer;
use tokio_util::sync::CancellationToken;

/// How the generator's events are written for `source`: in `format` (default: the source's
/// own). Avro and Protobuf use the source's schema file, or the generator's built-in schema,
/// registered under `<topic>-value` when the source reads a registry.
pub fn encoder(source: &SourceDef, format: Option<Format>) -> Result<Encoder, String> {
    let format = format.unwrap_or(source.format);
    let subject = format!("{}-value", source.topic);
    match (format, &source.reader) {
        (Format::Avro, Reader::Avro(Schemas::Fixed(schema))) => Ok(Encoder::Avro {
            schema: schema.clone(),
            id: None,
        }),
        (Format::Protobuf, Reader::Protobuf(Schemas::Fixed(message))) => Ok(Encoder::Protobuf {
            message: message.clone(),
            id: None,
        }),
        (Format::Avro, Reader::Avro(Schemas::Registry(registry))) => {
            let id = registry.register(&subject, "AVRO", PAYMENT_AVSC)?;
            Encoder::payments(format, Some(id))
        }
        (Format::Protobuf, Reader::Protobuf(Schemas::Registry(registry))) => {
            let id = registry.register(&subject, "PROTOBUF", PAYMENT_PROTO)?;
            Encoder::payments(format, Some(id))
        }
        (format, _) => Encoder::payments(format, None),
    }
}

/// Checks that `source` reads the generator's events as `encoder` writes them, so nothing is
/// produced only to be rejected.
pub fn check_source(source: &SourceDef, encoder: &Encoder) -> Result<(), String> {
    let mut sample = Payments::new(
        1,
        chrono::Utc::now().timestamp_millis(),
        PaymentsShape::default(),
    );
    let event = encoder.encode(&sample.next_event())?;
    Decoder::new(source).decode(&event).map(|_| ()).map_err(|reason| {
        format!(
            "source {:?} ({}) does not accept the generator's payment events (tx_id, card_id, merchant_id, country, amount, currency, ts) as written: {reason}",
            source.name,
            source.format.name()
        )
    })
}

/// A producer for `brokers`, with the config's pass-through settings a producer takes.
pub fn producer(config: &Config, brokers: &str) -> Result<BaseProducer, String> {
    let mut client = ClientConfig::new();
    for (key, value) in config.kafka.producer_settings() {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .map_err(|e| format!("cannot create a producer for {brokers}: {e}"))
}

/// `braid produce`.
pub fn run(
    config: &Config,
    source: &str,
    mut plan: GeneratorPlan,
    format: Option<Format>,
) -> ExitCode {
    let Some(source) = config.source(source) else {
        let known: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "error: --source {source:?} is not a source of the config (sources: {})",
            known.join(", ")
        );
        return ExitCode::from(crate::EXIT_CONFIG);
    };
    if config.kafka.is_embedded() {
        eprintln!(
            "error: kafka.brokers is \"embedded\": `braid produce` needs a broker address (`braid dev` prints its embedded broker's)"
        );
        return ExitCode::from(crate::EXIT_CONFIG);
    }
    match encoder(source, format).and_then(|e| check_source(source, &e).map(|()| e)) {
        Ok(encoder) => plan.encoder = encoder,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(crate::EXIT_CONFIG);
        }
    }
    let producer = match producer(config, &config.kafka.brokers) {
        Ok(producer) => producer,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = CancellationToken::new();
    let watcher = crate::run::SignalWatcher::start(cancel.clone());
    let (produced, failed) = generate(&producer, &source.topic, &plan, &cancel);
    drop(watcher);
    println!(
        "produced {produced} events to {}, {failed} not delivered",
        source.topic
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
