//! The synthetic payments generator produced to a topic at a steady rate (`braid produce`,
//! `braid dev` and the benchmarks' ingest).

use std::time::{Duration, Instant};

use braid_shared::generator::{Payments, PaymentsShape};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use tokio_util::sync::CancellationToken;

/// What to generate, and how fast.
#[derive(Debug, Clone)]
pub struct GeneratorPlan {
    /// Events per second.
    pub rate: u64,
    /// Stop after this many (`None`: until cancelled).
    pub count: Option<u64>,
    pub late_share: f64,
    pub seed: u64,
    /// How each event is written (JSON, Avro, Protobuf, a syslog line).
    pub encoder: braid_shared::format::encode::Encoder,
}

/// Produces to `topic` until `plan.count` or `cancel`; returns (produced, failed deliveries).
pub fn generate(
    producer: &BaseProducer,
    topic: &str,
    plan: &GeneratorPlan,
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
        let event = match plan.encoder.encode(&payments.next_event()) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "an event could not be encoded");
                failed += 1;
                continue;
            }
        };
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
