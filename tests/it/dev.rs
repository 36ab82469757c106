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

#[test]
fn produce_writes_readable_payments_to_any_broker() {
    let cluster = cluster(1);
    let topic = unique("produced");
    cluster.create_topic(&topic, 2, 1).unwrap();
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
        .args([
            "--source",
            "payments",
            "--count",
            "600",
            "--rate",
            "3000",
            "--late-share",
            "0.5",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("produced 600 events"));

    let config = Config::from_toml(&text).unwrap();
    let decoder = Decoder::new(config.source("payments").unwrap());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", unique("check"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while events.len() < 600 && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            events.push(decoder.decode(message.payload().unwrap()).unwrap());
        }
    }
    assert_eq!(events.len(), 600);
    // About half are late: their event time lies behind the stream's newest.
    let times: Vec<i64> = events.iter().map(|e| e.time_ms).collect();
    let newest = times.iter().copied().max().unwrap();
    let late = times.iter().filter(|t| newest - **t > 1_000).count();
    assert!((150..=550).contains(&late), "{late} late events of 600");
}
