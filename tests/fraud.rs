//! Fraud scores and trends from `braid run` on librdkafka's mock cluster: hand-made cards (calm
//! ones and one that bursts), half of them in a batch snapshot and half only in the speed layer,
//! then on-demand scores checked against features computed by hand, trends checked against
//! counts computed here, and every bad request named.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use braid_testkit::{Produced, cluster, produce, producer, unique};
use common::{Braid, free_port, get, post};
use serde_json::{Value, json};

const MIN: i64 = 60_000;
/// An hour boundary well in the past.
const T0: i64 = 1_790_000_000_000 - 1_790_000_000_000 % (60 * MIN);

const FRAUD: &str = r#"
[fraud]
source = "payments"
key = "card_id"
alert_threshold = 0.7

[[fraud.feature]]
name = "tx_10m"
view = "card_minute"
metric = "tx"
window = "10m"
[[fraud.feature]]
name = "merchants_10m"
view = "card_minute"
metric = "merchants"
window = "10m"
[[fraud.feature]]
name = "tx_30d"
view = "card_minute"
metric = "tx"
window = "30d"
[[fraud.feature]]
name = "amount_30d"
view = "card_minute"
metric = "amount"
window = "30d"

[[fraud.rule]]
name = "burst"
when = "tx_10m >= 8"
weight = 0.5
[[fraud.rule]]
name = "many_merchants"
when = "merchants_10m >= 5"
weight = 0.5
[[fraud.rule]]
name = "big_vs_usual"
when = "event.amount > 2 * amount_30d / tx_30d and tx_10m >= 3"
weight = 0.6
"#;

/// (card, merchant, amount, time) of every produced payment.
type Payment = (String, String, f64, i64);

/// Calm cards pay every 5 minutes for two hours; `burst-1` pays every 12 minutes, and nine
/// times at many merchants within minute 100.
fn payments() -> Vec<Payment> {
    let mut out = Vec::new();
    for card in 1..=3 {
        for minute in (0..120).step_by(5) {
            out.push((
                format!("calm-{card}"),
                format!("m-calm-{card}"),
                20.0,
                T0 + minute * MIN + 7_000,
            ));
        }
    }
    for minute in (0..120).step_by(12) {
        out.push((
            "burst-1".into(),
            "m-calm".into(),
            20.0,
            T0 + minute * MIN + 1_000,
        ));
    }
    for i in 0..9 {
        out.push((
            "burst-1".into(),
            format!("m-{i}"),
            500.0,
            T0 + 100 * MIN + 2_000 + i * 3_000,
        ));
    }
    out
}

fn message(i: usize, p: &Payment) -> Vec<u8> {
    json!({"tx_id": format!("t{i}"), "card_id": p.0, "merchant_id": p.1, "country": "DE", "amount": p.2, "ts": p.3})
        .to_string()
        .into_bytes()
}

/// A mock cluster with a two-partition topic, and a config with `fraud` appended.
struct World {
    _cluster: braid_testkit::Cluster,
    bootstrap: String,
    topic: String,
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl World {
    fn new(fraud: &str) -> Self {
        let cluster = cluster(1);
        let bootstrap = cluster.bootstrap_servers();
        let topic = unique("payments");
        cluster.create_topic(&topic, 2, 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = braid_testkit::config(&bootstrap, &topic, &unique("group"), dir.path(), "");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(fraud);
        std::fs::write(&path, &text).unwrap();
        Self {
            _cluster: cluster,
            bootstrap,
            topic,
            dir,
            path,
        }
    }
}

#[test]
fn scores_and_trends_are_exact_over_batch_and_speed() {
    let World {
        _cluster,
        bootstrap,
        topic,
        dir,
        path,
    } = World::new(FRAUD);

    let payments = payments();
    // Each card on one partition, in time order, as a keyed producer would send them.
    let messages: Vec<Produced> = payments
        .iter()
        .enumerate()
        .map(|(i, p)| Produced {
            partition: i32::from(p.0.starts_with("burst")),
            payload: message(i, p),
        })
        .collect();
    let half = messages.len() / 2;
    let producer = producer(&bootstrap);
    let braid = Braid::start(&path, free_port());
    produce(&producer, &topic, &messages[..half]);
    let counts = |upto: usize| -> [i64; 2] {
        let mut n = [0; 2];
        for m in &messages[..upto] {
            n[m.partition as usize] += 1;
        }
        n
    };
    let all_in = |answer: &Value, n: [i64; 2]| {
        (0..2)
            .all(|p| answer["provenance"]["offsets"][format!("{topic}/{p}")].as_i64() == Some(n[p]))
    };
    // The first half in a batch snapshot, the rest only in the speed layer.
    let views = format!(
        "{}/v1/views/card_minute?from={}&to={}",
        braid.base,
        T0,
        T0 + 180 * MIN
    );
    braid_testkit::wait_for("the first half consumed", Duration::from_secs(60), || {
        all_in(&get(&views).1, counts(half))
    });
    let (status, run) = post(&format!("{}/v1/batch/runs", braid.base), "{\"full\": true}");
    assert_eq!(status, 202, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    braid_testkit::wait_for("the batch run", Duration::from_secs(60), || {
        get(&format!("{}/v1/batch/runs/{run_id}", braid.base)).1["state"] == "succeeded"
    });
    produce(&producer, &topic, &messages[half..]);
    braid_testkit::wait_for("everything consumed", Duration::from_secs(60), || {
        let answer = get(&views).1;
        all_in(&answer, counts(messages.len()))
            && answer["provenance"]["batch"]["run_id"] == run_id.as_str()
    });

    // A new burst payment at 100:40, scored as the card's next event (not ingested).
    let score = format!("{}/v1/fraud/score", braid.base);
    let burst = json!({"tx_id": "x", "card_id": "burst-1", "merchant_id": "m-9", "amount": 900.0, "ts": T0 + 100 * MIN + 40_000});
    let (status, answer) = post(&score, &burst.to_string());
    assert_eq!(status, 200, "{answer}");
    // By hand: window [91, 101) holds minute 96 and the nine burst payments, plus this one.
    assert_eq!(answer["features"]["tx_10m"], 11.0, "{answer}");
    assert_eq!(answer["features"]["merchants_10m"], 11.0, "{answer}");
    // 30 days up to minute 101: minutes 0..=96 every 12 (9), the burst (9), this one.
    assert_eq!(answer["features"]["tx_30d"], 19.0, "{answer}");
    assert_eq!(
        answer["features"]["amount_30d"],
        9.0 * 20.0 + 9.0 * 500.0 + 900.0
    );
    // 1 - (1 - 0.5)(1 - 0.5)(1 - 0.6)
    assert_eq!(answer["score"], 0.9, "{answer}");
    assert_eq!(answer["alert"], true);
    let fired: Vec<bool> = answer["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fired"] == true)
        .collect();
    assert_eq!(fired, [true, true, true]);
    assert!(all_in(&answer, counts(messages.len())), "{answer}");
    // Nothing was ingested: the same request scores the same.
    assert_eq!(
        post(&score, &burst.to_string()).1["features"]["tx_10m"],
        11.0
    );

    // A calm card at 50:30: minutes 45 and 50 plus this one.
    let calm = json!({"tx_id": "y", "card_id": "calm-2", "merchant_id": "m-calm-2", "amount": 20, "ts": T0 + 50 * MIN + 30_000});
    let (status, answer) = post(&score, &calm.to_string());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["features"]["tx_10m"], 3.0, "{answer}");
    assert_eq!(answer["features"]["merchants_10m"], 1.0);
    assert_eq!(answer["score"], 0.0);
    assert_eq!(answer["alert"], false);
    // A card never seen: its own event only.
    let new = json!({"tx_id": "z", "card_id": "new-card", "amount": 10, "ts": T0});
    let (_, answer) = post(&score, &new.to_string());
    assert_eq!(answer["features"]["tx_10m"], 1.0, "{answer}");
    assert_eq!(answer["features"]["tx_30d"], 1.0);

    // Bad bodies are 400s naming what is wrong; nothing is a 500.
    let long_card = "c".repeat(100_000);
    for (body, says) in [
        ("not json".to_owned(), "not valid JSON"),
        ("[1, 2]".to_owned(), "where an object was expected"),
        ("{}".to_owned(), "event time field `ts`"),
        (
            json!({"card_id": "c", "ts": "yesterday"}).to_string(),
            "`ts`",
        ),
        (
            json!({"card_id": "c", "amount": "12.50", "ts": T0}).to_string(),
            "field `amount`",
        ),
        (
            json!({"amount": 1, "ts": T0}).to_string(),
            "the event has no `card_id`",
        ),
        (
            json!({"card_id": null, "ts": T0}).to_string(),
            "the event has no `card_id`",
        ),
        (
            "{\"card_id\": \"a\u{1}\", \"ts\": 1".to_owned(),
            "not valid JSON",
        ),
    ] {
        let (status, answer) = post(&score, &body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_event", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
        assert!(message.len() < 600 && !message.contains(dir.path().to_str().unwrap()));
    }
    let (status, answer) = post(&score, &json!({"card_id": long_card, "ts": T0}).to_string());
    assert_eq!(status, 413, "a body over serve.max_body_bytes: {answer}");
    let control = json!({"card_id": "card\u{0}\u{7}\n", "ts": T0, "amount": 1});
    let (status, answer) = post(&score, &control.to_string());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["features"]["tx_10m"], 1.0);

    // Trends, checked against counts computed here.
    let at = T0 + 101 * MIN;
    for (metric, window, baseline) in [("tx", 10, 60), ("amount", 10, 60), ("tx", 5, 20)] {
        let url = format!(
            "{}/v1/trends/card_minute?metric={metric}&window={window}m&baseline={baseline}m&at={at}&limit=50",
            braid.base
        );
        let (status, answer) = get(&url);
        assert_eq!(status, 200, "{answer}");
        let from = at - window * MIN;
        let baseline_from = from - baseline * MIN;
        let mut sums: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for (card, _, amount, ts) in &payments {
            let bucket = ts - ts.rem_euclid(MIN);
            let value = if metric == "tx" { 1.0 } else { *amount };
            let entry = sums.entry(card.as_str()).or_default();
            if (from..at).contains(&bucket) {
                entry.0 += value;
            } else if (baseline_from..from).contains(&bucket) {
                entry.1 += value;
            }
        }
        let mut expected: Vec<(f64, &str, f64, f64, f64)> = sums
            .iter()
            .map(|(card, (value, base))| {
                let rate = base * window as f64 / baseline as f64;
                let z = (value - rate) / (rate + 1.0).sqrt();
                (z, *card, *value, rate, value / rate.max(1.0))
            })
            .collect();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let trends = answer["trends"].as_array().unwrap();
        assert_eq!(trends.len(), expected.len(), "{answer}");
        for (got, (z, card, value, rate, ratio)) in trends.iter().zip(&expected) {
            assert_eq!(got["key"]["card_id"], *card, "{metric} {window}: {answer}");
            let close = |field: &str, want: f64| {
                let have = got[field].as_f64().unwrap();
                assert!(
                    (have - want).abs() < 1e-9,
                    "{card} {field}: {have} vs {want}"
                );
            };
            close("value", *value);
            close("baseline_rate", *rate);
            close("ratio", *ratio);
            close("z", *z);
        }
        assert_eq!(trends[0]["key"]["card_id"], "burst-1", "{answer}");
    }
    // min_baseline and limit cut the list.
    let base = format!(
        "{}/v1/trends/card_minute?metric=tx&window=10m&baseline=60m&at={at}",
        braid.base
    );
    let (_, answer) = get(&format!("{base}&limit=1"));
    assert_eq!(answer["trends"].as_array().unwrap().len(), 1);
    let (_, answer) = get(&format!("{base}&min_baseline=1.5"));
    assert!(
        answer["trends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["baseline_rate"].as_f64().unwrap() >= 1.5)
    );
    assert_eq!(
        answer["trends"].as_array().unwrap().len(),
        3,
        "the calm cards: {answer}"
    );

    // Bad trend requests are 400s (or 404) naming the parameter.
    let trends = format!("{}/v1/trends", braid.base);
    for (query, status, code, says) in [
        (
            "card_minute?metric=high&window=10m&baseline=1h",
            400,
            "invalid_parameter",
            "\"high\" is max(amount); trends are for count and sum",
        ),
        (
            "card_minute?metric=nope&window=10m&baseline=1h",
            400,
            "invalid_parameter",
            "not a metric of view",
        ),
        (
            "card_minute?window=10m&baseline=1h",
            400,
            "invalid_parameter",
            "metric",
        ),
        (
            "card_minute?metric=tx&window=90s&baseline=1h",
            400,
            "invalid_parameter",
            "not a multiple of the view's granularity 1m",
        ),
        (
            "card_minute?metric=tx&window=10m",
            400,
            "invalid_parameter",
            "baseline",
        ),
        (
            "card_minute?metric=tx&window=10m&baseline=soon",
            400,
            "invalid_parameter",
            "not a duration",
        ),
        (
            "card_minute?metric=tx&window=10m&baseline=1h&at=yesterday",
            400,
            "invalid_parameter",
            "not a time",
        ),
        (
            "card_minute?metric=tx&window=10m&baseline=1h&limit=0",
            400,
            "invalid_parameter",
            "limit",
        ),
        (
            "card_minute?metric=tx&window=10m&baseline=1h&min_baseline=-1",
            400,
            "invalid_parameter",
            "min_baseline",
        ),
        (
            "card_minute?metric=tx&window=10m&baseline=1h&colour=red",
            400,
            "invalid_parameter",
            "colour",
        ),
        (
            "card_minute?metric=tx&window=10m&baseline=1h&at=-9223372036854775808",
            400,
            "invalid_parameter",
            "at",
        ),
        (
            "nope?metric=tx&window=10m&baseline=1h",
            404,
            "unknown_view",
            "no view",
        ),
    ] {
        let (got, answer) = get(&format!("{trends}/{query}"));
        assert_eq!(got, status, "{query}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{query}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    braid.stop();
}

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

#[test]
fn every_burst_event_raises_one_alert_through_kill_9_and_a_batch_swap() {
    let alerts_topic = unique("alerts");
    let World {
        _cluster,
        bootstrap,
        topic,
        dir: _dir,
        path,
    } = World::new(&ALERTING.replace(
        "alert_threshold = 0.5",
        &format!("alert_threshold = 0.5\nalerts_topic = \"{alerts_topic}\""),
    ));
    _cluster.create_topic(&alerts_topic, 1, 1).unwrap();

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

    let producer = producer(&bootstrap);
    let mut braid = Braid::start(&path, free_port());
    // A live client from the start, reconnecting with Last-Event-ID across the kill.
    let address = braid.base.trim_start_matches("http://").to_owned();
    let want = expected.len();
    let live = std::thread::spawn(move || follow_alerts(&address, want));
    let alerts_url = format!("{}/v1/fraud/alerts?limit=1000", braid.base);
    let third = messages.len() / 3;
    produce(&producer, &topic, &messages[..third]);
    // A snapshot in the middle: later features merge batch and speed.
    let (status, run) = post(&format!("{}/v1/batch/runs", braid.base), "{\"full\": true}");
    assert_eq!(status, 202, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    braid_testkit::wait_for("the batch run", Duration::from_secs(60), || {
        get(&format!("{}/v1/batch/runs/{run_id}", braid.base)).1["state"] == "succeeded"
    });
    // Killed while the second burst is being consumed.
    produce(&producer, &topic, &messages[third..2 * third]);
    braid.kill_and_restart();
    produce(&producer, &topic, &messages[2 * third..]);

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
    let on_topic = consume_alerts(&bootstrap, &alerts_topic, &wanted);
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
