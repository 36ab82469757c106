//! `braid dev`: everything on one machine with no setup. The embedded broker is librdkafka's
//! mock cluster (the real Kafka protocol, in process), so any Kafka client can produce to the
//! address printed.

use std::process::ExitCode;
use std::time::Duration;

use braid_shared::Config;
use braid_shared::config::Format;
use braid_shared::config::Interval;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio_util::sync::CancellationToken;

use crate::cli::{DevFormat, Layer};
use braid_kafka::GeneratorPlan;

use crate::produce;

/// Partitions of each topic on the embedded broker.
const PARTITIONS: i32 = 3;

pub fn run(mut config: Config, builtin: bool, rate: u64, format: Option<DevFormat>) -> ExitCode {
    // A fresh data dir for the built-in example; a given config keeps its own.
    let _fresh = if builtin {
        match tempfile::Builder::new().prefix("braid-dev-").tempdir() {
            Ok(dir) => {
                config.storage.dir = dir.path().to_owned();
                // Batch swaps every minute, so a newcomer sees both layers at work.
                config.batch.interval = Interval(Some(Duration::from_secs(60)));
                Some(dir)
            }
            Err(error) => {
                eprintln!("error: cannot create a data dir: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let cluster = if config.kafka.is_embedded() {
        match embedded_broker(&config) {
            Ok(cluster) => {
                config.kafka.brokers = cluster.bootstrap_servers();
                config.kafka.prefer_short_fetch_wait();
                Some(cluster)
            }
            Err(error) => {
                eprintln!("error: embedded broker: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let schema_file = match format.map(Into::into) {
        Some(format) if format != Format::Json => match with_format(&mut config, format) {
            Ok(file) => Some(file),
            Err(error) => {
                eprintln!("error: --format {}: {error}", format.name());
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let Some(source) = config.sources.first().cloned() else {
        eprintln!("error: the config has no source to generate events for");
        return ExitCode::from(crate::EXIT_CONFIG);
    };
    let encoder = produce::encoder(&source, None);
    let generator_fits = encoder
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|encoder| produce::check_source(&source, encoder));
    let cancel = CancellationToken::new();
    let generator = match generator_fits {
        Ok(()) if rate == 0 => None,
        Ok(()) => {
            let producer = match produce::producer(&config, &config.kafka.brokers) {
                Ok(producer) => producer,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let cancel = cancel.clone();
            let topic = source.topic.clone();
            let plan = GeneratorPlan {
                rate,
                count: None,
                late_share: 0.05,
                seed: 42,
                encoder: encoder.unwrap_or(braid_shared::format::encode::Encoder::Json),
            };
            Some(std::thread::spawn(move || {
                braid_kafka::generate(&producer, &topic, &plan, &cancel)
            }))
        }
        Err(reason) => {
            tracing::warn!(%reason, "no generator: produce events yourself");
            None
        }
    };
    let brokers = config.kafka.brokers.clone();
    let dir = config.storage.dir.clone();
    let layers = [Layer::Batch, Layer::Speed, Layer::Serve];
    let code = crate::run::run_layers(&config, &layers, &cancel, |addr| {
        if let Some(addr) = addr {
            println!("Braid is running (stop with Ctrl-C)");
            println!("  dashboard  http://{addr}/");
            println!("  API        http://{addr}/v1/views");
            if let Some(file) = &schema_file {
                println!(
                    "  format     {} (schema file {})",
                    source.format.name(),
                    file.display()
                );
            }
            println!(
                "  broker     {brokers}   (Kafka protocol; topic {:?})",
                source.topic
            );
            println!("  data dir   {}", dir.display());

            if generator.is_some() {
                println!("  generator  {rate} payments/s into {:?}", source.topic);
            }
        }
    });
    cancel.cancel();
    if let Some(generator) = generator
        && let Ok((produced, _)) = generator.join()
    {
        tracing::info!(produced, "generator stopped");
    }
    drop(cluster);
    code
}

/// Makes the built-in example's source read `format` with the generator's schema, written to
/// the data dir as its schema file; that file.
fn with_format(config: &mut Config, format: Format) -> Result<std::path::PathBuf, String> {
    use braid_shared::format::encode::{PAYMENT_AVSC, PAYMENT_MESSAGE, PAYMENT_PROTO};
    use braid_shared::format::{AvroSchema, ProtoSchema, Reader, Schemas};
    let (name, text) = match format {
        Format::Avro => ("payment.avsc", PAYMENT_AVSC),
        _ => ("payment.proto", PAYMENT_PROTO),
    };
    let file = config.storage.dir.join(name);
    std::fs::create_dir_all(&config.storage.dir)
        .and_then(|()| std::fs::write(&file, text))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let reader = match format {
        Format::Avro => Reader::Avro(Schemas::Fixed(std::sync::Arc::new(AvroSchema::parse(
            text,
        )?))),
        _ => Reader::Protobuf(Schemas::Fixed(
            ProtoSchema::load(&file)?.message(PAYMENT_MESSAGE)?,
        )),
    };
    let source = config
        .sources
        .first_mut()
        .ok_or("the config has no source")?;
    let source = std::sync::Arc::make_mut(source);
    source.format = format;
    source.reader = reader;
    Ok(file)
}

fn embedded_broker(
    config: &Config,
) -> Result<MockCluster<'static, DefaultProducerContext>, rdkafka::error::KafkaError> {
    let cluster = MockCluster::new(1)?;
    for topic in config.topics() {
        cluster.create_topic(topic, PARTITIONS, 1)?;
    }
    Ok(cluster)
}
