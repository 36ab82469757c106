//! Fraud scores and trends from `braid run` on librdkafka's mock cluster: hand-made cards (calm
//! ones and one that bursts), half of them in a batch snapshot and half only in the speed layer,
//! then on-demand scores checked against features computed by hand, trends checked against
//! counts computed here, and every bad request named.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Braid, free_port, get, post};
use braid_testkit::{Produced, cluster, produce, producer, unique};
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

#[test]
fn every_burst_event_raises_one_alert_through_kill_9_and_a_batch_swap() {
    let alerts_topic = unique("alerts");
    let world = World::new(&crate::common::alerts::fraud_config(&alerts_topic));
    world._cluster.create_topic(&alerts_topic, 1, 1).unwrap();
    crate::common::alerts::every_burst_event_raises_one_alert(
        &world.bootstrap,
        &world.topic,
        &alerts_topic,
        &world.path,
    );
}
