//! The alert scenario both brokers run: hand-made bursts and calm cards produced around a batch
//! swap and a kill -9 of `braid run`; every expected alert (computed here) must be listed, streamed
//! to a live client that resumes with `Last-Event-ID`, and on the alerts topic, each exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use braid_testkit::{Produced, produce, producer, unique};
use serde_json::{Value, json};

use super::{Braid, free_port, get, post};

const MIN: i64 = 60_000;
/// An hour boundary well in the past.
const T0: i64 = 1_790_000_000_000 - 1_790_000_000_000 % (60 * MIN);

const ALERTING: &str = r#"
[fraud]
source = "payments"
key = "card_id"
alert_threshold = 0.5

[[fraud.feature]]
name = "tx_10m"
view = "card_minute"
metric = "tx"
window = "10m"

[[fraud.rule]]
name = "burst"
when = "tx_10m >= 8"
weight = 0.5
"#;

/// The `[fraud]` section of the scenario, alerting to `alerts_topic`.
pub fn fraud_config(alerts_topic: &str) -> String {
    ALERTING.replace(
        "alert_threshold = 0.5",
        &format!("alert_threshold = 0.5\nalerts_topic = \"{alerts_topic}\""),
    )
}

/// Runs the scenario against `braid run` with the config at `path` (which holds
/// [`fraud_config`]), consuming `topic` (two partitions) of the broker at `bootstrap`.
pub fn every_burst_event_raises_one_alert(
    bootstrap: &str,
    topic: &str,
    alerts_topic: &str,
    path: &Path,
) {
    // (partition, card, minute, second) in produce order; each card on one partition, in time
    // order. Calm cards pay every 5 minutes; bursts are many payments within a minute.
    let mut plan: Vec<(i32, String, i64, i64)> = Vec::new();
    for minute in (0..120).step_by(5) {
        for card in 1..=3 {
            plan.push((0, format!("calm-{card}"), minute, 10));
        }
        if minute == 70 {
            plan.extend((0..15).map(|s| (0, "burst-2".to_owned(), 70, s * 2)));
        }
        if minute == 50 {
            plan.extend((0..30).map(|s| (1, "burst-1".to_owned(), 50, s)));
        }
        if minute == 90 {
            plan.extend((0..20).map(|s| (1, "burst-1".to_owned(), 91, s)));
        }
    }
    let mut offsets = [0i64; 2];
    let mut messages = Vec::new();
    // Expected alerts, computed here: the card's payments up to this one with a bucket in the
    // ten minutes ending with this one's.
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    let mut seen: Vec<(String, i64)> = Vec::new();
    for (i, (partition, card, minute, second)) in plan.iter().enumerate() {
        let ts = T0 + minute * MIN + second * 1000;
        let p: Payment = (card.clone(), "m".into(), 10.0, ts);
        messages.push(Produced {
            partition: *partition,
            payload: message(i, &p),
        });
        seen.push((card.clone(), *minute));
        let count = seen
            .iter()
            .filter(|(c, m)| c == card && (minute - 9..=*minute).contains(m))
            .count();
        if count >= 8 {
            expected.insert(
                format!("{topic}/{partition}/{}", offsets[*partition as usize]),
                count as f64,
            );
        }
        offsets[*partition as usize] += 1;
    }
    assert_eq!(expected.len(), 23 + 13 + 8, "by hand: 30-7 + 20-7 + 15-7");

    let producer = producer(bootstrap);
    let mut braid = Braid::start(path, free_port());
    // A live client from the start, reconnecting with Last-Event-ID across the kill.
    let address = braid.base.trim_start_matches("http://").to_owned();
    let want = expected.len();
    let live = std::thread::spawn(move || follow_alerts(&address, want));
    let alerts_url = format!("{}/v1/fraud/alerts?limit=1000", braid.base);
    let third = messages.len() / 3;
    produce(&producer, topic, &messages[..third]);
    // A snapshot in the middle: later features merge batch and speed.
    let (status, run) = post(&format!("{}/v1/batch/runs", braid.base), "{\"full\": true}");
    assert_eq!(status, 202, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    braid_testkit::wait_for("the batch run", Duration::from_secs(60), || {
        get(&format!("{}/v1/batch/runs/{run_id}", braid.base)).1["state"] == "succeeded"
    });
    // Killed while the second burst is being consumed.
    produce(&producer, topic, &messages[third..2 * third]);
    braid.kill_and_restart();
    produce(&producer, topic, &messages[2 * third..]);

    let mut alerts = Value::Null;
    braid_testkit::wait_for("every expected alert", Duration::from_secs(60), || {
        alerts = get(&alerts_url).1;
        alerts["alerts"]
            .as_array()
            .is_some_and(|a| a.len() >= expected.len())
    });
    let listed = alerts["alerts"].as_array().unwrap();
    let ids: Vec<&str> = listed.iter().map(|a| a["id"].as_str().unwrap()).collect();
    let unique_ids: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique_ids.len(), ids.len(), "an alert raised twice");
    let wanted: std::collections::BTreeSet<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(unique_ids, wanted);
    for alert in listed {
        let id = alert["id"].as_str().unwrap();
        assert_eq!(alert["features"]["tx_10m"], expected[id], "{alert}");
        assert_eq!(alert["score"], 0.5);
        assert_eq!(alert["rules"], json!(["burst"]));
        assert!(
            alert["key"].as_str().unwrap().starts_with("burst-"),
            "{alert}"
        );
    }
    let streamed = live.join().unwrap();
    let streamed_set: std::collections::BTreeSet<&str> =
        streamed.iter().map(String::as_str).collect();
    assert_eq!(
        streamed_set.len(),
        streamed.len(),
        "an alert streamed twice: {streamed:?}"
    );
    assert_eq!(streamed_set, wanted, "the live stream");
    // The alerts topic carries every alert, keyed by its id (at least once: a replay after the
    // kill may produce one again, with the same key and content).
    let on_topic = consume_alerts(bootstrap, alerts_topic, &wanted);
    assert_eq!(
        on_topic
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        wanted
    );
    for (id, alert) in &on_topic {
        assert_eq!(alert["id"], id.as_str());
        assert_eq!(alert["features"]["tx_10m"], expected[id]);
    }
    // Newest first, filters and bad parameters.
    let (_, one) = get(&format!("{}/v1/fraud/alerts?key=burst-2", braid.base));
    assert_eq!(one["alerts"].as_array().unwrap().len(), 8, "{one}");
    let (status, bad) = get(&format!("{}/v1/fraud/alerts?limit=0", braid.base));
    assert_eq!(status, 400, "{bad}");
    let (status, bad) = get(&format!("{}/v1/fraud/alerts?colour=red", braid.base));
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    braid.stop();
}

/// Follows `GET /v1/fraud/alerts` as an event stream, reconnecting with `Last-Event-ID` when the
/// connection ends, until `want` alerts arrived (or 90 s passed); returns their ids in order.
fn follow_alerts(address: &str, want: usize) -> Vec<String> {
    use std::io::{BufRead as _, Write as _};
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut ids: Vec<String> = Vec::new();
    while ids.len() < want && std::time::Instant::now() < deadline {
        let Ok(mut stream) = std::net::TcpStream::connect(address) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let last = ids
            .last()
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /v1/fraud/alerts HTTP/1.1\r\nHost: braid\r\nAccept: text/event-stream\r\n{last}\r\n"
        );
        if stream.write_all(request.as_bytes()).is_err() {
            continue;
        }
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if let Some(id) = line.trim_end().strip_prefix("id: ") {
                        ids.push(id.to_owned());
                        if ids.len() >= want {
                            return ids;
                        }
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if std::time::Instant::now() >= deadline {
                        return ids;
                    }
                }
                Err(_) => break,
            }
        }
    }
    ids
}

/// Reads `topic` from the start until every id of `wanted` was seen (or 60 s passed): the last
/// alert per key.
fn consume_alerts(
    bootstrap: &str,
    topic: &str,
    wanted: &std::collections::BTreeSet<&str>,
) -> BTreeMap<String, Value> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("alert-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    while std::time::Instant::now() < deadline && !wanted.iter().all(|id| seen.contains_key(*id)) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let alert: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        seen.insert(key, alert);
    }
    seen
}

/// (card, merchant, amount, time) of one payment.
type Payment = (String, String, f64, i64);

fn message(i: usize, p: &Payment) -> Vec<u8> {
    json!({"tx_id": format!("t{i}"), "card_id": p.0, "merchant_id": p.1, "country": "DE", "amount": p.2, "ts": p.3})
        .to_string()
        .into_bytes()
}
