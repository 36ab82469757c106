//! `braid produce`: the synthetic payments generator against any broker, at a steady rate.
//! `braid dev` runs the same loop against its embedded broker.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use braid_shared::generator::{Payments, PaymentsShape};
use braid_shared::{Config, Decoder, SourceDef};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use tokio_util::sync::CancellationToken;

/// What to generate, and how fast.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Events per second.
    pub rate: u64,
    /// Stop after this many (`None`: until cancelled).
    pub count: Option<u64>,
    pub late_share: f64,
    pub seed: u64,
}

/// Checks that `source` reads the generator's events, so nothing is produced only to be rejected.
pub fn check_source(source: &SourceDef) -> Result<(), String> {
    let mut sample = Payments::new(
        1,
        chrono::Utc::now().timestamp_millis(),
        PaymentsShape::default(),
    );
    Decoder::new(source).decode(&sample.next_event()).map(|_| ()).map_err(|reason| {
        format!(
            "source {:?} does not accept the generator's payment events (tx_id, card_id, merchant_id, country, amount, currency, ts): {reason}",
            source.name
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

/// Produces to `topic` until `plan.count` or `cancel`; returns (produced, failed deliveries).
pub fn generate(
    producer: &BaseProducer,
    topic: &str,
    plan: &Plan,
    cancel: &CancellationToken,
) -> (u64, u64) {
    let shape = PaymentsShape {
        late_share: plan.late_share.clamp(0.0, 1.0),
        ..PaymentsShape::default()
    };
    let mut payments = Payments::new(plan.seed, chrono::Utc::now().timestamp_millis(), shape);
    let started = Instant::now();
    let mut produced: u64 = 0;
    let mut failed: u64 = 0;
    let mut last_report = Instant::now();
    let rate = plan.rate.max(1);
    while !cancel.is_cancelled() && plan.count.is_none_or(|n| produced < n) {
        // Events due by now at the steady rate; the clock follows wall time.
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
        if produced >= due {
            std::thread::sleep(Duration::from_millis(2));
            producer.poll(Duration::ZERO);
            continue;
        }
        payments.set_clock_ms(chrono::Utc::now().timestamp_millis());
        let event = payments.next_event();
        let key = produced.to_string();
        match producer.send(BaseRecord::to(topic).payload(&event).key(&key)) {
            Ok(()) => produced += 1,
            Err((error, _)) => {
                if matches!(
                    error.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                ) {
                    producer.poll(Duration::from_millis(10));
                } else {
                    tracing::warn!(%error, "produce failed");
                    failed += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            tracing::info!(produced, topic, "generator");
            last_report = Instant::now();
        }
    }
    if producer.flush(Duration::from_secs(30)).is_err() {
        failed += producer.in_flight_count().max(0) as u64;
    }
    (produced, failed)
}

/// `braid produce`.
pub fn run(config: &Config, source: &str, plan: &Plan) -> ExitCode {
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
    if let Err(error) = check_source(source) {
        eprintln!("error: {error}");
        return ExitCode::from(crate::EXIT_CONFIG);
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
    let (produced, failed) = generate(&producer, &source.topic, plan, &cancel);
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
