//! The newcomer's path: `braid dev` shows live merged numbers at the URL it prints and stops
//! cleanly on SIGTERM; `braid produce` fills any broker with readable payments.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::dev::Dev;
use crate::common::{free_port, get};
use braid_shared::{Config, Decoder};
use braid_testkit::{cluster, unique, wait_for};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;

#[test]
fn dev_prints_its_url_and_answers_live_merged_numbers() {
    let port = free_port();
    let dev = Dev::start(&["--rate", "500"], port, &[], None);
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(dev.url, url);
    assert!(
        dev.printed.iter().any(|l| l.contains(&url)),
        "{:?}",
        dev.printed
    );
    assert!(dev.broker.starts_with("127.0.0.1:"), "{}", dev.broker);

    let query = format!("{url}v1/views/country_totals?from=now-1h&to=now%2B1h&group_by=");
    let mut answer = serde_json::Value::Null;
    wait_for(
        "generated payments in a merged answer",
        Duration::from_secs(60),
        || {
            answer = get(&query).1;
            answer["rows"][0]["tx"].as_u64().is_some_and(|n| n > 100)
        },
    );
    assert!(answer["provenance"]["speed"]["positions"].is_object());
    assert_eq!(get(&url).0, 200, "the dashboard page");
    dev.stop();
}

/// The example config against `cluster`'s new topic, its source's format line replaced by
/// `source_extra` (when not empty) and `prefix` before it; `braid produce` with `args`; the events read back with the config's
/// decoder.
fn produce_and_read(
    cluster: &rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    prefix: &str,
    source_extra: &str,
    args: &[&str],
) -> Vec<braid_shared::Event> {
    let topic = unique("produced");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../deploy/config/example.toml")
        .replace(
            "\"embedded\"",
            &format!("{:?}", cluster.bootstrap_servers()),
        )
        .replace("topic = \"payments\"", &format!("topic = {topic:?}"))
        .replace("format = \"json\"", source_extra);
    // A source that names its own event time replaces the example's.
    let text = match source_extra.contains("event_time") {
        true => text.replace("event_time = \"ts\"", ""),
        false => text,
    };
    let text = format!("{prefix}{text}");
    let path = dir.path().join("braid.toml");
    std::fs::write(&path, &text).unwrap();
    std::fs::write(
        dir.path().join("payment.proto"),
        braid_shared::format::encode::PAYMENT_PROTO,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["produce", "--config", path.to_str().unwrap()])
        .args(["--source", "payments", "--count", "600", "--rate", "3000"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("produced 600 events"));

    let config = Config::load(&path).unwrap();
    let decoder = Decoder::new(config.source("payments").unwrap());
    read_back(cluster, &topic, 600)
        .iter()
        .map(|payload| decoder.decode(payload).unwrap())
        .collect()
}

/// The first `count` messages of `topic`, read from the start.
fn read_back(
    cluster: &rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    count: usize,
) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", unique("check"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut payloads = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while payloads.len() < count && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            payloads.push(message.payload().unwrap_or_default().to_vec());
        }
    }
    assert_eq!(payloads.len(), count);
    payloads
}

#[test]
fn produce_writes_readable_payments_to_any_broker() {
    let cluster = cluster(1);
    let events = produce_and_read(&cluster, "", "format = \"json\"", &["--late-share", "0.5"]);
    // About half are late: their event time lies behind the stream's newest.
    let times: Vec<i64> = events.iter().map(|e| e.time_ms).collect();
    let newest = times.iter().copied().max().unwrap();
    let late = times.iter().filter(|t| newest - **t > 1_000).count();
    assert!((150..=550).contains(&late), "{late} late events of 600");
}

/// The values of `events` but their time (which follows the clock, and keeps each format's
/// raw form), sorted: what a seed generates, whichever the format.
fn sorted_values(events: &[braid_shared::Event]) -> Vec<Vec<braid_shared::Value>> {
    let config = Config::from_toml(include_str!("../../deploy/config/example.toml")).unwrap();
    let ts = config.source("payments").unwrap().slot("ts").unwrap();
    let mut values: Vec<_> = events
        .iter()
        .map(|e| {
            let mut values = e.values.clone();
            values.remove(ts);
            values
        })
        .collect();
    values.sort();
    values
}

#[test]
fn produce_writes_avro_protobuf_and_syslog() {
    let cluster = cluster(1);
    let registry = braid_testkit::registry::TestRegistry::start();
    let with_registry = format!("[schema_registry]\nurl = {:?}\n", registry.url);
    // Avro through the registry: the generator's schema registered under <topic>-value.
    let avro = produce_and_read(&cluster, &with_registry, "format = \"avro\"", &[]);
    // Fetched once by `braid produce` (it reads a sample back before sending) and once by the
    // test's reader: each process once, not per message.
    assert_eq!(registry.lookups(), 2);
    // Protobuf from a schema file (bare messages), and through the registry.
    let proto = produce_and_read(
        &cluster,
        "",
        "format = \"protobuf\"\nschema_file = \"payment.proto\"\nmessage = \"braid.generator.Payment\"",
        &[],
    );
    let proto_registry = produce_and_read(
        &cluster,
        &with_registry,
        "format = \"protobuf\"",
        &["--format", "protobuf"],
    );
    // Syslog lines: each payment's fields as structured data.
    let syslog = produce_and_read(
        &cluster,
        "",
        "format = \"syslog\"\nevent_time = \"timestamp\"",
        &["--format", "syslog"],
    );
    assert!(syslog.iter().all(|e| e.time_ms > 0));
    // The same seed writes the same payments in every format.
    let json = sorted_values(&produce_and_read(&cluster, "", "format = \"json\"", &[]));
    for events in [&avro, &proto, &proto_registry] {
        assert_eq!(sorted_values(events), json);
    }

    // A source that reads JSON refuses Avro before anything is sent.
    let topic = unique("refused");
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../deploy/config/example.toml")
        .replace(
            "\"embedded\"",
            &format!("{:?}", cluster.bootstrap_servers()),
        )
        .replace("topic = \"payments\"", &format!("topic = {topic:?}"));
    let path = dir.path().join("braid.toml");
    std::fs::write(&path, &text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["produce", "--config", path.to_str().unwrap()])
        .args(["--source", "payments", "--count", "5", "--format", "avro"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not accept") && stderr.contains("not valid JSON"),
        "{stderr}"
    );
}

#[test]
fn dev_runs_the_example_in_avro() {
    let port = free_port();
    let dev = Dev::start(&["--rate", "500", "--format", "avro"], port, &[], None);
    assert!(
        dev.printed.iter().any(|l| l.contains("format     avro")),
        "{:?}",
        dev.printed
    );
    let query = format!(
        "http://127.0.0.1:{port}/v1/views/country_totals?from=now-1h&to=now%2B1h&group_by="
    );
    let mut answer = serde_json::Value::Null;
    wait_for(
        "Avro payments in a merged answer",
        Duration::from_secs(60),
        || {
            answer = get(&query).1;
            answer["rows"][0]["tx"].as_u64().is_some_and(|n| n > 100)
        },
    );
    let rejected = get(&format!("http://127.0.0.1:{port}/v1/rejected/payments")).1;
    assert_eq!(rejected["total"], 0, "{rejected}");
    dev.stop();
}

#[test]
fn produce_reaches_a_registry_over_tls_with_basic_auth() {
    use braid_shared::format::registry::Known;
    use braid_shared::format::{Registry, RegistrySettings};
    let cluster = cluster(1);
    let (registry, ca) = braid_testkit::registry::TestRegistry::start_secure("braid", "s3cret");
    assert!(registry.url.starts_with("https://"), "{}", registry.url);
    let topic = unique("secure");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
    let example = include_str!("../../deploy/config/example.toml")
        .replace(
            "\"embedded\"",
            &format!("{:?}", cluster.bootstrap_servers()),
        )
        .replace("topic = \"payments\"", &format!("topic = {topic:?}"))
        .replace("format = \"json\"", "format = \"avro\"");
    let produce = |password: &str, ca_file: &str| {
        let path = dir.path().join(format!("{}.toml", unique("braid")));
        let text = format!(
            "[schema_registry]\nurl = {:?}\nusername_env = \"REGISTRY_USER\"\npassword_env = \"REGISTRY_PASSWORD\"\n{ca_file}\n{example}",
            registry.url
        );
        std::fs::write(&path, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_braid"))
            .args(["produce", "--config", path.to_str().unwrap()])
            .args(["--source", "payments", "--count", "50", "--rate", "1000"])
            .env("REGISTRY_USER", "braid")
            .env("REGISTRY_PASSWORD", password)
            .output()
            .unwrap()
    };
    let trusted = "ca_file = \"ca.pem\"";

    // Refused credentials and an untrusted certificate stop it before anything is sent.
    let refused = produce("wrong", trusted);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("answered 401"), "{stderr}");
    let untrusted = produce("s3cret", "");
    assert_eq!(untrusted.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert_eq!(registry.lookups(), 0);

    // With both: the schema registered, fetched back to check a sample, the events sent.
    let output = produce("s3cret", trusted);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(registry.lookups(), 1);

    // Each message names the registered schema, which the registry client reads over TLS.
    let client = Registry::new(&RegistrySettings {
        url: registry.url.clone(),
        basic_auth: Some(("braid".to_owned(), "s3cret".to_owned())),
        ca_pem: Some(ca.into_bytes()),
    })
    .unwrap();
    for bytes in read_back(&cluster, &topic, 50) {
        assert_eq!(bytes[0], 0, "the wire format's magic byte");
        let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
        match client.schema(id).unwrap() {
            Known::Avro(schema) => assert!(schema.decode(&bytes[5..]).is_ok()),
            _ => panic!("schema {id} is not the registered Avro schema"),
        }
    }
}
