//! Avro and Protobuf through a schema registry, produced by the Confluent Python client's own
//! serializers: nested and optional fields answer exactly in both layers and over HTTP; a new
//! schema version mid-stream keeps every view exact; a 5 s registry outage rejects nothing and
//! the layers resume where they stopped; broken messages are rejected with their reasons.

use std::path::Path;
use std::time::Duration;

use braid_shared::Config;
use braid_shared::format::ProtoSchema;
use braid_testkit::registry::TestRegistry;
use braid_testkit::{cluster, unique};
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value as Json, json};

use crate::common::tools::{root, venv};
use crate::common::{Braid, Produced, Shape, free_port, get};
use crate::formats::{PARTITIONS, batch_run, complete_and_exact};

fn support(file: &str) -> std::path::PathBuf {
    root().join("tests/it/support").join(file)
}

/// Payments of schema version 1 or 2 (2 adds `channel`), as JSON records both serializers
/// read (Protobuf's through its JSON mapping).
fn payments(seed: u64, count: usize, version: u8, protobuf: bool) -> Vec<Json> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let ts = 1_790_000_000_000 + i as i64 * 250 - rng.random_range(0..600_000);
            let items: Vec<Json> = (0..rng.random_range(0..3))
                .map(|_| json!({"sku": format!("s{}", rng.random_range(0..8)), "qty": rng.random_range(1..5)}))
                .collect();
            let note = (rng.random_range(0..4) == 0).then(|| format!("n{}", rng.random_range(0..3)));
            let mut tags = serde_json::Map::new();
            if rng.random_range(0..2) == 0 {
                tags.insert("region".into(), json!(["eu", "us", "apac"][rng.random_range(0..3)]));
            }
            let brand = ["VISA", "MASTERCARD", "AMEX"][rng.random_range(0..3)];
            let mut value = json!({
                "tx_id": format!("{seed}-{i}"),
                "card": {"id": format!("c{}", rng.random_range(0..25)), "brand": brand},
                "amount": {"value": rng.random_range(1..50_000) as f64 / 100.0, "currency": "EUR"},
                "items": items,
                "tags": tags,
            });
            if protobuf {
                let time = chrono::DateTime::from_timestamp_millis(ts).unwrap();
                value["ts"] = json!(time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                if let Some(note) = note {
                    value["note"] = json!(note);
                }
            } else {
                value["ts"] = json!(ts);
                // fastavro takes a union's value as it is.
                value["note"] = json!(note);
            }
            if version == 2 {
                value["channel"] = json!(["web", "app", "pos"][rng.random_range(0..3)]);
            }
            json!({"partition": rng.random_range(0..PARTITIONS), "value": value})
        })
        .collect()
}

/// Produces `records` with the Python client; the bytes sent, by partition and offset.
fn produce(
    dir: &Path,
    bootstrap: &str,
    topic: &str,
    registry: &str,
    format: &[(&str, Json)],
    records: Vec<Json>,
) -> Vec<(i32, i64, Vec<u8>)> {
    let out = dir.join(format!("{}.json", unique("delivered")));
    let mut spec = json!({
        "bootstrap": bootstrap,
        "topic": topic,
        "registry": registry,
        "records": records,
        "out": out,
    });
    for (key, value) in format {
        spec[*key] = value.clone();
    }
    let spec_path = dir.join(format!("{}.json", unique("spec")));
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    // Its stderr is shown only when it fails (the client's OAuth dependency warns on import).
    let output = std::process::Command::new(venv("confluent", "python"))
        .arg(support("confluent_produce.py"))
        .arg(&spec_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the Confluent producer failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let delivered: Vec<(i32, i64, String)> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    delivered
        .into_iter()
        .map(|(p, o, hex)| {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (p, o, bytes)
        })
        .collect()
}

/// Every message sent, by partition in offset order (offsets must be dense from 0).
fn by_partition(sent: &[(i32, i64, Vec<u8>)]) -> Vec<Vec<Vec<u8>>> {
    let mut partitions = vec![Vec::new(); PARTITIONS as usize];
    let mut sorted: Vec<_> = sent.iter().collect();
    sorted.sort_by_key(|(p, o, _)| (*p, *o));
    for (p, o, bytes) in sorted {
        assert_eq!(
            *o,
            partitions[*p as usize].len() as i64,
            "a gap in partition {p}"
        );
        partitions[*p as usize].push(bytes.clone());
    }
    partitions
}

fn sources(avro: &str, proto: &str) -> String {
    let mut text = String::new();
    for (source, topic, format) in [("pay_avro", avro, "avro"), ("pay_proto", proto, "protobuf")] {
        text.push_str(&format!(
            r#"
[[source]]
name = "{source}"
topic = "{topic}"
format = "{format}"
event_time = "ts"
event_id = "tx_id"

[[view]]
name = "{source}_cards"
source = "{source}"
group_by = ["card.id"]
granularity = "1m"
[view.metrics]
tx = "count"
value = "sum(amount.value)"
first_sku = "top_k(items[0].sku, 3)"
noted = "approx_distinct(note)"

[[view]]
name = "{source}_channels"
source = "{source}"
group_by = ["channel", "card.brand", "tags.region"]
granularity = "1h"
[view.metrics]
tx = "count"
qty = "sum(items[1].qty)"
"#
        ));
    }
    text
}

fn shape(view: &'static str, step_ms: Option<i64>) -> Shape {
    Shape {
        view,
        params: "",
        keep: None,
        step_ms,
        filters: &[],
    }
}

fn shapes(source: &str) -> [Shape; 2] {
    match source {
        "pay_avro" => [
            shape("pay_avro_cards", Some(600_000)),
            shape("pay_avro_channels", None),
        ],
        _ => [
            shape("pay_proto_cards", Some(600_000)),
            shape("pay_proto_channels", None),
        ],
    }
}

#[test]
fn avro_and_protobuf_from_a_registry_stay_exact_across_a_new_schema_version_and_an_outage() {
    let registry = TestRegistry::start();
    let cluster = cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    let (avro_topic, proto_topic) = (unique("pay-avro"), unique("pay-proto"));
    for topic in [&avro_topic, &proto_topic] {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, _) =
        braid_testkit::config(&bootstrap, &avro_topic, &unique("group"), dir.path(), "");
    let base = std::fs::read_to_string(&path).unwrap();
    let base = base[..base.find("[[source]]").unwrap()].to_owned();
    let text = format!(
        "{base}[schema_registry]\nurl = \"{}\"\n{}",
        registry.url,
        sources(&avro_topic, &proto_topic)
    );
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml(&text).unwrap();

    // Version 2 of each schema: one more field (a backward-compatible change).
    let avro = |version: u8| {
        let v1 = std::fs::read_to_string(support("payment_v1.avsc")).unwrap();
        let schema = match version {
            1 => v1,
            _ => v1.replacen(
                r#"{"name": "tx_id", "type": "string"},"#,
                r#"{"name": "tx_id", "type": "string"}, {"name": "channel", "type": "string", "default": "web"},"#,
                1,
            ),
        };
        vec![("format", json!("avro")), ("schema", json!(schema))]
    };
    let proto = |version: u8| {
        let v1 = std::fs::read_to_string(support("payment_v1.proto")).unwrap();
        let file = dir.path().join(format!("payment_v{version}.proto"));
        let text = match version {
            1 => v1,
            _ => v1.replace(
                "  map<string, string> tags = 7;\n",
                "  map<string, string> tags = 7;\n  string channel = 8;\n",
            ),
        };
        std::fs::write(&file, text).unwrap();
        let set = dir.path().join(format!("payment_v{version}.pb"));
        std::fs::write(&set, ProtoSchema::load(&file).unwrap().descriptor_set()).unwrap();
        vec![
            ("format", json!("protobuf")),
            ("descriptor_set", json!(set)),
            ("message", json!("shop.Payment")),
        ]
    };
    // Records of both topics, written with schema `version`; the bytes sent are kept.
    let send = |sent: &mut [Vec<(i32, i64, Vec<u8>)>; 2], version: u8, records: [Vec<Json>; 2]| {
        let [avro_records, proto_records] = records;
        sent[0].extend(produce(
            dir.path(),
            &bootstrap,
            &avro_topic,
            &registry.url,
            &avro(version),
            avro_records,
        ));
        sent[1].extend(produce(
            dir.path(),
            &bootstrap,
            &proto_topic,
            &registry.url,
            &proto(version),
            proto_records,
        ));
    };
    let braid = Braid::start(&path, free_port());
    let mut sent: [Vec<(i32, i64, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
    send(
        &mut sent,
        1,
        [payments(1, 3_000, 1, false), payments(2, 3_000, 1, true)],
    );
    let check = |sent: &[Vec<(i32, i64, Vec<u8>)>; 2], run: Option<&str>| {
        for (source, topic, sent) in [
            ("pay_avro", &avro_topic, &sent[0]),
            ("pay_proto", &proto_topic, &sent[1]),
        ] {
            let produced = Produced::new(&config, source, &by_partition(sent));
            for shape in shapes(source) {
                complete_and_exact(&braid, &config, topic, &produced, &shape, run);
            }
        }
    };
    check(&sent, None);
    let lookups = registry.lookups();
    assert!(
        lookups <= 4,
        "schemas fetched once per process and id, not per message: {lookups}"
    );

    // The registry fails Braid's lookups while the producers move to version 2.
    registry.set_down(true);
    send(
        &mut sent,
        2,
        [payments(3, 2_000, 2, false), payments(4, 2_000, 2, true)],
    );
    braid_testkit::wait_for(
        "/readyz to name the registry",
        Duration::from_secs(30),
        || {
            let (status, body) = get(&format!("{}/readyz", braid.base));
            status == 503 && body.to_string().contains("schema registry")
        },
    );
    braid_testkit::wait_for("the wait in the metrics", Duration::from_secs(10), || {
        let mut response = ureq::get(&format!("{}/metrics", braid.base))
            .call()
            .unwrap();
        let metrics = response.body_mut().read_to_string().unwrap();
        metrics.contains("braid_consumer_waiting_for_registry 1")
    });
    // The outage lasts 5 s, then the registry answers again.
    std::thread::sleep(Duration::from_secs(5));
    registry.set_down(false);

    // Broken messages: a wrong magic byte, a cut header, an id the registry never gave, a
    // cut body, and (Protobuf) an index list naming no message.
    let known = &sent[0][0].2[..5];
    let mut cut = sent[0].last().unwrap().2.clone();
    cut.truncate(cut.len() - 3);
    let bad_avro = vec![
        json!({"partition": 0, "raw_hex": "01000000010203"}),
        json!({"partition": 1, "raw_hex": "0000"}),
        json!({"partition": 0, "raw_hex": "000000270f0a0b"}),
        json!({"partition": 1, "raw_hex": hex(&cut)}),
        json!({"partition": 0, "raw_hex": hex(&[known, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"].concat())}),
    ];
    let proto_known = &sent[1][0].2[..5];
    let bad_proto = vec![
        json!({"partition": 0, "raw_hex": "7b2274735f6d73223a317d"}),
        json!({"partition": 1, "raw_hex": "00000003e7000a01"}),
        json!({"partition": 0, "raw_hex": hex(&[proto_known, &[0x02, 0x12], b"\x0a\x01x"].concat())}),
        json!({"partition": 1, "raw_hex": hex(&[proto_known, &[0x02, 0x02], b"\x0a\x05ab"].concat())}),
    ];
    send(&mut sent, 2, [bad_avro, bad_proto]);

    // Old and new events alike, in the speed layer, then a batch run and the speed layer past it.
    check(&sent, None);
    let run = batch_run(&braid);
    check(&sent, Some(&run));
    let (status, body) = get(&format!("{}/readyz", braid.base));
    assert_eq!(status, 200, "{body}");

    // Exactly the broken messages are rejected, each with its reason.
    for (source, expected) in [
        (
            "pay_avro",
            vec![
                "bad_magic_byte",
                "avro_decode",
                "unknown_schema_id",
                "avro_decode",
                "avro_decode",
            ],
        ),
        (
            "pay_proto",
            vec![
                "bad_magic_byte",
                "unknown_schema_id",
                "proto_decode",
                "proto_decode",
            ],
        ),
    ] {
        let mut listed = Json::Null;
        braid_testkit::wait_for("the rejections listed", Duration::from_secs(30), || {
            listed = get(&format!("{}/v1/rejected/{source}?limit=100", braid.base)).1;
            listed["total"].as_u64() == Some(expected.len() as u64)
        });
        let mut reasons: Vec<&str> = listed["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["reason"]["reason"].as_str().unwrap_or_default())
            .collect();
        let mut expected = expected.clone();
        reasons.sort_unstable();
        expected.sort_unstable();
        assert_eq!(reasons, expected, "{listed}");
    }
    braid.stop();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
