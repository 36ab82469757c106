//! End to end against a real Kafka-compatible broker process, tansu (installed by
//! `scripts/install-deps.sh --tansu`), with its SQLite storage so that it survives a restart:
//! Braid runs as a process, events are produced before and while it runs, the broker is stopped
//! and started again mid-stream, and every merged answer equals the independent reference; and
//! the fraud alert scenario (every expected alert exactly once through a kill -9) on this broker.

use std::time::Duration;

use crate::common::tansu::{Tansu, create_topic};
use crate::common::{Braid, COUNTRY_HOURS, Produced, Shape, assert_exact, free_port, get, post};
use braid_testkit::{by_partition, payments, produce, producer, unique, wait_for};

const PARTITIONS: i32 = 2;

const SHAPES: [Shape; 2] = [
    COUNTRY_HOURS,
    Shape {
        view: "card_minute",
        params: "&group_by=",
        keep: Some(&[]),
        step_ms: Some(600_000),
        filters: &[],
    },
];

#[test]
fn merged_answers_are_exact_on_tansu_through_a_broker_restart() {
    let broker_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let tansu = Tansu::start(broker_dir.path(), port);
    let topic = unique("payments");
    create_topic(&bootstrap, &topic, PARTITIONS);

    let dir = tempfile::tempdir().unwrap();
    let (path, config) =
        braid_testkit::config(&bootstrap, &topic, &unique("group"), dir.path(), "");
    let messages = payments(919, 3_000, PARTITIONS);
    let produced = Produced::new(&config, "payments", &by_partition(&messages, PARTITIONS));
    let (first, rest) = messages.split_at(1_000);
    let (second, third) = rest.split_at(1_000);
    produce(&producer(&bootstrap), &topic, first);

    let braid = Braid::start(&path, free_port());
    let check_all = |braid: &Braid| {
        for shape in &SHAPES {
            let (status, answer) = get(&shape.url(&braid.base));
            assert_eq!(status, 200, "{answer}");
            assert_exact(&config, &topic, &produced, shape, &answer);
        }
    };
    check_all(&braid);
    let (status, body) = post(&format!("{}/v1/batch/runs", braid.base), "");
    assert_eq!(status, 202, "{body}");
    produce(&producer(&bootstrap), &topic, second);
    for _ in 0..10 {
        check_all(&braid);
        std::thread::sleep(Duration::from_millis(100));
    }

    // The broker goes away and comes back with its log; Braid answers throughout.
    tansu.stop();
    for _ in 0..5 {
        check_all(&braid);
        std::thread::sleep(Duration::from_millis(200));
    }
    let _tansu = Tansu::start(broker_dir.path(), port);
    produce(&producer(&bootstrap), &topic, third);
    let (status, body) = post(&format!("{}/v1/batch/runs", braid.base), "");
    assert_eq!(status, 202, "{body}");
    let id = body["run_id"].as_str().unwrap().to_owned();
    wait_for(
        "the batch run after the restart",
        Duration::from_secs(60),
        || {
            let state = get(&format!("{}/v1/batch/runs/{id}", braid.base)).1["state"].clone();
            assert_ne!(state, "failed", "{}", braid.log_tail());
            state == "succeeded"
        },
    );
    for shape in &SHAPES {
        let mut answer = serde_json::Value::Null;
        wait_for("every event in the answer", Duration::from_secs(90), || {
            answer = get(&shape.url(&braid.base)).1;
            (0..PARTITIONS).all(|p| {
                answer["provenance"]["offsets"][format!("{topic}/{p}")].as_i64()
                    == Some(produced.len(p as usize))
            })
        });
        assert_exact(&config, &topic, &produced, shape, &answer);
        assert!(answer["provenance"]["batch"]["run_id"].is_string());
    }
    braid.stop();
}

#[test]
fn every_burst_event_raises_one_alert_on_tansu_through_kill_9_and_a_batch_swap() {
    let broker_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let _tansu = Tansu::start(broker_dir.path(), port);
    let topic = unique("payments");
    let alerts_topic = unique("alerts");
    create_topic(&bootstrap, &topic, PARTITIONS);
    create_topic(&bootstrap, &alerts_topic, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = braid_testkit::config(&bootstrap, &topic, &unique("group"), dir.path(), "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&crate::common::alerts::fraud_config(&alerts_topic));
    std::fs::write(&path, text).unwrap();
    crate::common::alerts::every_burst_event_raises_one_alert(
        &bootstrap,
        &topic,
        &alerts_topic,
        &path,
    );
}
