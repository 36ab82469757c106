//! Input formats: nested JSON read by field paths (`card.id`, `amount.value`,
//! `items[0].sku`) in both layers, queries, SQL and event pages; and a view added later over
//! fields no view read before, recomputed from the messages the archive keeps.

use std::time::Duration;

use crate::common::{Braid, Produced, Shape, assert_exact, free_port, get, post};
use braid_shared::Config;
use braid_testkit::oracle::{FROM_MS, TO_MS};
use braid_testkit::{by_partition, cluster, unique};
use rand::{Rng as _, SeedableRng as _};

pub(crate) const PARTITIONS: i32 = 2;

/// A source of nested orders and its first view.
fn orders(topic: &str) -> String {
    format!(
        r#"[[source]]
name = "orders"
topic = "{topic}"
event_time = "meta.ts"
event_id = "meta.id"

[[view]]
name = "by_card"
source = "orders"
group_by = ["card.id"]
granularity = "1m"
[view.metrics]
tx = "count"
value = "sum(amount.value)"
first_sku = "top_k(items[0].sku, 3)"
"#
    )
}

/// The view added later: over paths no view read before.
const BY_CURRENCY: &str = r#"
[[view]]
name = "by_currency"
source = "orders"
group_by = ["amount.currency"]
granularity = "1h"
[view.metrics]
tx = "count"
second_sku = "top_k(items[1].sku, 3)"
high = "max(items[1].qty)"
"#;

/// Orders the way services write them: objects and arrays, optional parts, now and then a
/// field of the wrong type or broken JSON.
fn messages(count: usize) -> Vec<braid_testkit::Produced> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(35);
    (0..count)
        .map(|i| {
            let ts = 1_790_000_000_000 + i as i64 * 300 - rng.random_range(0..600_000);
            let card = rng.random_range(0..30);
            let currency = ["EUR", "USD", "GBP"][rng.random_range(0..3)];
            let value = rng.random_range(1..100_000) as f64 / 100.0;
            let items: Vec<String> = (0..rng.random_range(0..4))
                .map(|_| {
                    format!(
                        r#"{{"sku":"s{}","qty":{}}}"#,
                        rng.random_range(0..12),
                        rng.random_range(1..9)
                    )
                })
                .collect();
            let payload = match rng.random_range(0..100) {
                0 => "{\"meta\":{\"ts\":".to_owned(),
                1 => format!(
                    r#"{{"meta":{{"id":"o{i}","ts":{ts}}},"card":{{"id":"c{card}"}},"amount":{{"value":"{value}"}}}}"#
                ),
                2 => format!(r#"{{"meta":{{"id":"o{i}"}},"card":{{"id":"c{card}"}}}}"#),
                3 => format!(r#"{{"meta":{{"id":"o{i}","ts":{ts}}},"card":null,"amount":7}}"#),
                _ => format!(
                    r#"{{"meta":{{"id":"o{i}","ts":{ts},"trace":[1,{{"x":2}}]}},"card":{{"id":"c{card}","brand":"visa"}},"amount":{{"value":{value},"currency":"{currency}"}},"items":[{}]}}"#,
                    items.join(",")
                ),
            };
            braid_testkit::Produced {
                partition: rng.random_range(0..PARTITIONS),
                payload: payload.into_bytes(),
            }
        })
        .collect()
}

fn by_card() -> Shape {
    Shape {
        view: "by_card",
        params: "",
        keep: None,
        step_ms: Some(600_000),
        filters: &[],
    }
}

fn by_currency() -> Shape {
    Shape {
        view: "by_currency",
        params: "",
        keep: None,
        step_ms: None,
        filters: &[],
    }
}

/// Waits for an answer holding every produced event, and checks it against the oracle.
pub(crate) fn complete_and_exact(
    braid: &Braid,
    config: &Config,
    topic: &str,
    produced: &Produced,
    shape: &Shape,
    run: Option<&str>,
) {
    let mut answer = serde_json::Value::Null;
    braid_testkit::wait_for(
        &format!("{} with every event", shape.view),
        Duration::from_secs(90),
        || {
            answer = get(&shape.url(&braid.base)).1;
            let batch = run.is_none_or(|r| answer["provenance"]["batch"]["run_id"] == r);
            batch
                && (0..PARTITIONS).all(|p| {
                    answer["provenance"]["offsets"][format!("{topic}/{p}")].as_i64()
                        == Some(produced.len(p as usize))
                })
        },
    );
    assert_exact(config, topic, produced, shape, &answer);
    assert!(
        answer["rows"].as_array().is_some_and(|r| r.len() >= 4),
        "{answer}"
    );
}

pub(crate) fn batch_run(braid: &Braid) -> String {
    let (status, body) = post(&format!("{}/v1/batch/runs", braid.base), "{}");
    assert_eq!(status, 202, "{body}");
    let run = body["run_id"].as_str().unwrap().to_owned();
    braid_testkit::wait_for("the batch run", Duration::from_secs(120), || {
        let state = get(&format!("{}/v1/batch/runs/{run}", braid.base)).1["state"].clone();
        assert_ne!(state, "failed", "{}", braid.log_tail());
        state == "succeeded"
    });
    run
}

#[test]
fn nested_paths_answer_exactly_and_a_view_added_later_is_recomputed_from_the_archive() {
    let cluster = cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique("orders");
    cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = braid_testkit::config(&bootstrap, &topic, &unique("group"), dir.path(), "");
    let base = std::fs::read_to_string(&path).unwrap();
    let base = base[..base.find("[[source]]").unwrap()].to_owned();
    let first = format!("{base}{}", orders(&topic));
    std::fs::write(&path, &first).unwrap();
    let config = Config::from_toml(&first).unwrap();

    let messages = messages(10_000);
    let partitions = by_partition(&messages, PARTITIONS);
    let produced = Produced::new(&config, "orders", &partitions);
    assert!(produced.rejected() > 200, "{}", produced.rejected());
    let braid = Braid::start(&path, free_port());
    braid_testkit::produce(&braid_testkit::producer(&bootstrap), &topic, &messages);

    // The speed layer alone, then a batch run and the speed layer past it.
    complete_and_exact(&braid, &config, &topic, &produced, &by_card(), None);
    let run = batch_run(&braid);
    complete_and_exact(&braid, &config, &topic, &produced, &by_card(), Some(&run));

    // A filter on a path, and SQL over the view (a path is a quoted column name).
    let events = produced.events();
    let slot = config.source("orders").unwrap().slot("card.id").unwrap();
    let of_c7 = events
        .iter()
        .filter(|e| e.values[slot] == braid_shared::Value::Str("c7".into()))
        .filter(|e| (FROM_MS..TO_MS).contains(&e.time_ms))
        .count();
    let (status, answer) = get(&format!(
        "{}/v1/views/by_card?from={FROM_MS}&to={TO_MS}&card.id=c7&group_by=",
        braid.base
    ));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["rows"][0]["tx"].as_u64(),
        Some(of_c7 as u64),
        "{answer}"
    );
    let (status, answer) = post(
        &format!("{}/v1/sql", braid.base),
        r#"{"sql": "SELECT sum(tx) AS n FROM view_by_card WHERE \"card.id\" = 'c7'"}"#,
    );
    assert_eq!(status, 200, "{answer}");
    let all_c7 = events
        .iter()
        .filter(|e| e.values[slot] == braid_shared::Value::Str("c7".into()))
        .count();
    assert_eq!(
        answer["rows"][0][0].as_f64(),
        Some(all_c7 as f64),
        "{answer}"
    );
    let (status, page) = get(&format!(
        "{}/v1/events/orders?from=0&to=now%2B3650d&card.id=c7&limit=10000",
        braid.base
    ));
    assert_eq!(status, 200, "{page}");
    let listed = page["events"].as_array().unwrap();
    assert_eq!(listed.len(), all_c7, "{page}");
    assert!(
        listed.iter().all(|e| e["event"]["card.id"] == "c7"),
        "{page}"
    );

    // A view over paths no view read: every archived event is decoded again from its message.
    braid.stop();
    let second = format!("{first}{BY_CURRENCY}");
    let port = free_port();
    std::fs::write(&path, &second).unwrap();
    let config = Config::from_toml(&second).unwrap();
    let produced = Produced::new(&config, "orders", &partitions);
    let braid = Braid::start(&path, port);
    let run = batch_run(&braid);
    complete_and_exact(
        &braid,
        &config,
        &topic,
        &produced,
        &by_currency(),
        Some(&run),
    );
    complete_and_exact(&braid, &config, &topic, &produced, &by_card(), Some(&run));

    // SQL over the archived events: no file holds the new path's column yet, so it reads null;
    // the message each row keeps answers it.
    let events = produced.events();
    let currency = config
        .source("orders")
        .unwrap()
        .slot("amount.currency")
        .unwrap();
    let in_eur = events
        .iter()
        .filter(|e| e.values[currency] == braid_shared::Value::Str("EUR".into()))
        .count();
    let sql = |query: &str| {
        let body = serde_json::json!({ "sql": query }).to_string();
        let (status, answer) = post(&format!("{}/v1/sql", braid.base), &body);
        assert_eq!(status, 200, "{query}: {answer}");
        answer["rows"][0][0].as_i64().unwrap_or(-1)
    };
    braid_testkit::wait_for("every event archived", Duration::from_secs(30), || {
        sql("SELECT count(*) FROM events_orders") == events.len() as i64
    });
    assert_eq!(
        sql(r#"SELECT count(*) FROM events_orders WHERE "amount.currency" IS NULL"#),
        events.len() as i64
    );
    assert_eq!(
        sql("SELECT count(*) FROM events_orders \
             WHERE json_extract_string(decode(_message), '$.amount.currency') = 'EUR'"),
        in_eur as i64
    );
    braid.stop();
}
