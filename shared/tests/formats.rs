//! Avro, Protobuf and log-line sources: field paths over each format's values, logical and
//! well-known types, typed captures, each bad-input kind rejected with its reason, and
//! `braid check`'s findings on format settings and paths missing from a schema.

use std::collections::HashMap;
use std::path::PathBuf;

use apache_avro::types::Value as Avro;
use braid_shared::format::ProtoSchema;
use braid_shared::{Config, Decoder, Event, Value};
use prost_reflect::{DynamicMessage, ReflectMessage, Value as Proto};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/formats")
}

fn config(text: &str) -> Config {
    Config::from_toml_in(text, &dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn problems(text: &str) -> String {
    Config::from_toml_in(text, &dir()).unwrap_err().to_string()
}

/// The value of `field` in `event` of the config's only source.
fn get<'a>(config: &Config, event: &'a Event, field: &str) -> &'a Value {
    let slot = config.sources[0]
        .slot(field)
        .unwrap_or_else(|| panic!("no field {field}"));
    &event.values[slot]
}

fn text(s: &str) -> Value {
    Value::Str(s.into())
}

const AVRO: &str = r#"
[[source]]
name = "payments"
topic = "payments"
format = "avro"
schema_file = "payment.avsc"
event_time = "ts"
event_id = "tx_id"

[[view]]
name = "by_card"
source = "payments"
group_by = ["card.id", "card.brand", "amount.currency", "tags.region", "booked", "previous.id", "note"]
granularity = "1h"
[view.metrics]
amount = "sum(amount.value)"
qty = "sum(items[1].qty)"
first = "top_k(items[0].sku, 3)"
seen = "max(seen_us)"
"#;

fn avro_payment(note: Option<&str>, previous: bool) -> Avro {
    let card = |id: &str, brand: u32| {
        Avro::Record(vec![
            ("id".into(), Avro::String(id.into())),
            (
                "brand".into(),
                Avro::Enum(brand, ["VISA", "MASTERCARD"][brand as usize].into()),
            ),
        ])
    };
    let item = |sku: &str, qty: i32| {
        Avro::Record(vec![
            ("sku".into(), Avro::String(sku.into())),
            ("qty".into(), Avro::Int(qty)),
        ])
    };
    Avro::Record(vec![
        ("tx_id".into(), Avro::String("t-1".into())),
        ("ts".into(), Avro::TimestampMillis(1_790_000_000_123)),
        ("card".into(), card("c-1", 1)),
        (
            "amount".into(),
            Avro::Record(vec![
                // 1234 hundredths, two's complement big-endian.
                ("value".into(), Avro::Decimal(vec![0x04u8, 0xd2].into())),
                ("currency".into(), Avro::String("EUR".into())),
            ]),
        ),
        (
            "note".into(),
            match note {
                None => Avro::Union(0, Box::new(Avro::Null)),
                Some(n) => Avro::Union(1, Box::new(Avro::String(n.into()))),
            },
        ),
        (
            "items".into(),
            Avro::Array(vec![item("sku-a", 2), item("sku-b", 5)]),
        ),
        (
            "tags".into(),
            Avro::Map(HashMap::from([(
                "region".to_owned(),
                Avro::String("eu".into()),
            )])),
        ),
        ("booked".into(), Avro::Date(20_000)),
        (
            "seen_us".into(),
            Avro::TimestampMicros(1_790_000_000_123_456),
        ),
        (
            "previous".into(),
            if previous {
                Avro::Union(1, Box::new(card("c-0", 0)))
            } else {
                Avro::Union(0, Box::new(Avro::Null))
            },
        ),
    ])
}

fn avro_bytes(value: Avro) -> Vec<u8> {
    let text = std::fs::read_to_string(dir().join("payment.avsc")).unwrap();
    let schema = apache_avro::Schema::parse_str(&text).unwrap();
    apache_avro::to_avro_datum(&schema, value).unwrap()
}

#[test]
fn avro_paths_read_records_unions_enums_maps_arrays_and_logical_types() {
    let config = config(AVRO);
    let decoder = Decoder::new(&config.sources[0]);
    let event = decoder
        .decode(&avro_bytes(avro_payment(Some("gift"), true)))
        .unwrap();
    assert_eq!(event.time_ms, 1_790_000_000_123);
    assert_eq!(get(&config, &event, "card.id"), &text("c-1"));
    assert_eq!(get(&config, &event, "card.brand"), &text("MASTERCARD"));
    assert_eq!(get(&config, &event, "amount.value"), &Value::Float(12.34));
    assert_eq!(get(&config, &event, "amount.currency"), &text("EUR"));
    assert_eq!(get(&config, &event, "tags.region"), &text("eu"));
    assert_eq!(get(&config, &event, "items[0].sku"), &text("sku-a"));
    assert_eq!(get(&config, &event, "items[1].qty"), &Value::Int(5));
    assert_eq!(get(&config, &event, "booked"), &text("2024-10-04"));
    // Microseconds read as milliseconds, like every time.
    assert_eq!(
        get(&config, &event, "seen_us"),
        &Value::Int(1_790_000_000_123)
    );
    assert_eq!(get(&config, &event, "previous.id"), &text("c-0"));
    assert_eq!(get(&config, &event, "note"), &text("gift"));
    assert_eq!(get(&config, &event, "tx_id"), &text("t-1"));

    // Optional values absent: null, not a rejection.
    let event = decoder
        .decode(&avro_bytes(avro_payment(None, false)))
        .unwrap();
    assert_eq!(get(&config, &event, "note"), &Value::Null);
    assert_eq!(get(&config, &event, "previous.id"), &Value::Null);
}

#[test]
fn broken_avro_is_rejected_as_avro_decode() {
    let config = config(AVRO);
    let decoder = Decoder::new(&config.sources[0]);
    let bytes = avro_bytes(avro_payment(Some("gift"), true));
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        let reason = decoder.decode(&bytes[..cut]).unwrap_err();
        assert_eq!(reason.code(), "avro_decode", "cut at {cut}: {reason}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let reason = decoder.decode(&longer).unwrap_err();
    assert_eq!(reason.code(), "avro_decode");
    assert!(reason.to_string().contains("1 bytes follow"), "{reason}");
    // A string length far beyond the message: refused, not allocated.
    let reason = decoder
        .decode(&[0xfe, 0xff, 0xff, 0xff, 0x0f, b'x'])
        .unwrap_err();
    assert_eq!(reason.code(), "avro_decode");
    // Every prefix and every byte flip: an event or a reason, never a panic.
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0xa5;
        let _ = decoder.decode(&flipped);
        let _ = decoder.decode(&bytes[..i]);
    }
}

const PROTO: &str = r#"
[[source]]
name = "payments"
topic = "payments"
format = "protobuf"
schema_file = "payment.proto"
message = "shop.Payment"
event_time = "ts"
event_id = "tx_id"

[[view]]
name = "by_card"
source = "payments"
group_by = ["card.id", "card.brand", "tags.region", "note", "items[1].sku"]
granularity = "1h"
[view.metrics]
amount = "sum(amount)"
qty = "sum(qty)"
limit = "max(limit)"
first = "top_k(items[0].sku, 3)"
"#;

fn proto_payment(note: Option<&str>, with_limit: bool) -> Vec<u8> {
    use prost_reflect::prost::Message as _;
    let schema = ProtoSchema::load(&dir().join("payment.proto")).unwrap();
    let payment = schema.message("shop.Payment").unwrap();
    let pool = payment.parent_pool().clone();
    let mut message = DynamicMessage::new(payment.clone());
    message.set_field_by_name("tx_id", Proto::String("t-1".into()));
    let mut ts = DynamicMessage::new(
        pool.get_message_by_name("google.protobuf.Timestamp")
            .unwrap(),
    );
    ts.set_field_by_name("seconds", Proto::I64(1_790_000_000));
    ts.set_field_by_name("nanos", Proto::I32(123_456_789));
    message.set_field_by_name("ts", Proto::Message(ts));
    let mut card = DynamicMessage::new(pool.get_message_by_name("shop.Card").unwrap());
    card.set_field_by_name("id", Proto::String("c-1".into()));
    card.set_field_by_name("brand", Proto::EnumNumber(2));
    message.set_field_by_name("card", Proto::Message(card));
    message.set_field_by_name("amount", Proto::F64(12.5));
    if let Some(note) = note {
        message.set_field_by_name("note", Proto::String(note.into()));
    }
    let item_type = pool.get_message_by_name("shop.Payment.Item").unwrap();
    let items = ["sku-a", "sku-b"]
        .iter()
        .map(|sku| {
            let mut item = DynamicMessage::new(item_type.clone());
            item.set_field_by_name("sku", Proto::String((*sku).into()));
            Proto::Message(item)
        })
        .collect();
    message.set_field_by_name("items", Proto::List(items));
    message.set_field_by_name(
        "tags",
        Proto::Map(HashMap::from([(
            prost_reflect::MapKey::String("region".into()),
            Proto::String("eu".into()),
        )])),
    );
    if with_limit {
        let mut limit = DynamicMessage::new(
            pool.get_message_by_name("google.protobuf.Int64Value")
                .unwrap(),
        );
        limit.set_field_by_name("value", Proto::I64(500));
        message.set_field_by_name("limit", Proto::Message(limit));
    }
    assert_eq!(message.descriptor().full_name(), "shop.Payment");
    message.encode_to_vec()
}

#[test]
fn protobuf_paths_read_messages_enums_maps_repeated_and_well_known_types() {
    let config = config(PROTO);
    let decoder = Decoder::new(&config.sources[0]);
    let event = decoder.decode(&proto_payment(Some("gift"), true)).unwrap();
    // A Timestamp is epoch milliseconds.
    assert_eq!(event.time_ms, 1_790_000_000_123);
    assert_eq!(get(&config, &event, "card.id"), &text("c-1"));
    assert_eq!(get(&config, &event, "card.brand"), &text("MASTERCARD"));
    assert_eq!(get(&config, &event, "amount"), &Value::Float(12.5));
    assert_eq!(get(&config, &event, "tags.region"), &text("eu"));
    assert_eq!(get(&config, &event, "items[1].sku"), &text("sku-b"));
    assert_eq!(get(&config, &event, "items[0].sku"), &text("sku-a"));
    assert_eq!(get(&config, &event, "note"), &text("gift"));
    // A wrapper reads as the value it wraps.
    assert_eq!(get(&config, &event, "limit"), &Value::Int(500));
    // A proto3 scalar without presence reads as its default.
    assert_eq!(get(&config, &event, "qty"), &Value::Int(0));

    // Unset optional and message fields are null.
    let event = decoder.decode(&proto_payment(None, false)).unwrap();
    assert_eq!(get(&config, &event, "note"), &Value::Null);
    assert_eq!(get(&config, &event, "limit"), &Value::Null);
}

#[test]
fn broken_protobuf_is_rejected_as_proto_decode() {
    let config = config(PROTO);
    let decoder = Decoder::new(&config.sources[0]);
    let bytes = proto_payment(Some("gift"), true);
    let reason = decoder.decode(&bytes[..bytes.len() - 3]).unwrap_err();
    assert_eq!(reason.code(), "proto_decode", "{reason}");
    let reason = decoder.decode(&[0xff, 0xff, 0xff]).unwrap_err();
    assert_eq!(reason.code(), "proto_decode", "{reason}");
    // An empty message decodes (every field unset) but has no event time.
    assert_eq!(
        decoder.decode(&[]).unwrap_err().code(),
        "missing_event_time"
    );
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x5a;
        let _ = decoder.decode(&flipped);
        let _ = decoder.decode(&bytes[..i]);
    }
}

const SYSLOG: &str = r#"
[[source]]
name = "logs"
topic = "logs"
format = "syslog"
event_time = "timestamp"

[[view]]
name = "by_app"
source = "logs"
group_by = ["app", "host", "severity", "facility", "sd.exampleSDID_32473.eventSource"]
granularity = "1m"
[view.metrics]
lines = "count()"
pri = "max(priority)"
pid = "max(procid)"
"#;

#[test]
fn syslog_lines_of_both_rfcs_read_their_parts() {
    let config = config(SYSLOG);
    let decoder = Decoder::new(&config.sources[0]);
    let line = br#"<165>1 2026-10-11T22:14:15.003Z mymachine.example.com evntslog 4242 ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event"#;
    let event = decoder.decode(line).unwrap();
    assert_eq!(event.time_ms, 1_791_756_855_003);
    assert_eq!(get(&config, &event, "app"), &text("evntslog"));
    assert_eq!(get(&config, &event, "host"), &text("mymachine.example.com"));
    assert_eq!(get(&config, &event, "severity"), &text("notice"));
    assert_eq!(get(&config, &event, "facility"), &text("local4"));
    assert_eq!(get(&config, &event, "priority"), &Value::Int(165));
    assert_eq!(get(&config, &event, "procid"), &Value::Int(4242));
    assert_eq!(
        get(&config, &event, "sd.exampleSDID_32473.eventSource"),
        &text("Application")
    );

    // RFC 3164: no year (the current one), no zone (UTC unless time_zone says).
    let event = decoder
        .decode(
            b"<34>Oct 11 22:14:15 mymachine su[77]: 'su root' failed for lonvick on /dev/pts/8\n",
        )
        .unwrap();
    assert_eq!(get(&config, &event, "app"), &text("su"));
    assert_eq!(get(&config, &event, "severity"), &text("crit"));
    assert_eq!(get(&config, &event, "facility"), &text("auth"));
    let time = chrono::DateTime::from_timestamp_millis(event.time_ms).unwrap();
    assert_eq!(time.format("%m-%d %H:%M:%S").to_string(), "10-11 22:14:15");

    for (line, why) in [
        (
            &b"<999>1 2026-10-11T22:14:15Z host app - - - bad priority"[..],
            "priority",
        ),
        (b"<13a>Oct 11 22:14:15 host app: x", "priority"),
        (b"no priority at all", "priority"),
        (b"\xff\xfe", "UTF-8"),
    ] {
        let reason = decoder.decode(line).unwrap_err();
        assert_eq!(reason.code(), "syslog_parse", "{reason}");
        assert!(reason.to_string().contains(why), "{reason}");
    }
}

const LOGFMT: &str = r#"
[[source]]
name = "logs"
topic = "logs"
format = "logfmt"
event_time = "ts"
time_format = "%Y-%m-%d %H:%M:%S"
time_zone = "Europe/Paris"
[source.fields]
ts = "string"
level = "string"
"http.status" = "int"
duration_ms = "float"
cached = "bool"
"#;

#[test]
fn logfmt_pairs_convert_to_declared_types() {
    // Keys with dots are written with `_` in paths.
    let config = config(&LOGFMT.replace("\"http.status\"", "http_status"));
    let decoder = Decoder::new(&config.sources[0]);
    let event = decoder
        .decode(br#"ts="2026-07-01 12:00:00" level=warn http.status=503 duration_ms=12.5 cached msg="upstream \"slow\"""#)
        .unwrap();
    // Noon in Paris in summer is 10:00 UTC.
    assert_eq!(event.time_ms, 1_782_900_000_000);
    assert_eq!(get(&config, &event, "level"), &text("warn"));
    assert_eq!(get(&config, &event, "http_status"), &Value::Int(503));
    assert_eq!(get(&config, &event, "duration_ms"), &Value::Float(12.5));
    // A key without a value is a flag.
    assert_eq!(get(&config, &event, "cached"), &Value::Bool(true));

    let reason = decoder
        .decode(br#"ts="2026-07-01 12:00:00" http.status=teapot"#)
        .unwrap_err();
    assert_eq!(reason.code(), "wrong_type", "{reason}");
    let reason = decoder
        .decode(br#"ts="2026-07-01 12:00:00 level=warn"#)
        .unwrap_err();
    assert_eq!(reason.code(), "logfmt_parse", "{reason}");
    let reason = decoder.decode(b"   ").unwrap_err();
    assert_eq!(reason.code(), "logfmt_parse", "{reason}");
    let reason = decoder.decode(b"ts=yesterday").unwrap_err();
    assert_eq!(reason.code(), "invalid_event_time", "{reason}");
    assert!(reason.to_string().contains("time_format"), "{reason}");
    let reason = decoder.decode(b"level=x\x07 ts=1").unwrap_err();
    assert_eq!(reason.code(), "logfmt_parse", "{reason}");
}

const REGEX: &str = r#"
[[source]]
name = "access"
topic = "access"
format = "regex"
pattern = '^(?P<ip>\S+) \S+ \S+ \[(?P<ts>[^\]]+)\] "(?P<method>\w+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-)$'
event_time = "ts"
time_format = "%d/%b/%Y:%H:%M:%S %z"

[[view]]
name = "by_status"
source = "access"
group_by = ["status", "method"]
granularity = "1m"
[view.metrics]
bytes = "sum(bytes)"
"#;

#[test]
fn regex_captures_are_fields_with_their_time_layout() {
    let config = config(REGEX);
    let decoder = Decoder::new(&config.sources[0]);
    let event = decoder
        .decode(br#"127.0.0.1 - frank [10/Oct/2026:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#)
        .unwrap();
    assert_eq!(event.time_ms, 1_791_665_736_000);
    // Captured text reads as the kind the view needs: a number for sum, text for a key.
    assert_eq!(get(&config, &event, "bytes"), &Value::Int(2326));
    assert_eq!(get(&config, &event, "status"), &text("200"));
    assert_eq!(get(&config, &event, "method"), &text("GET"));

    let reason = decoder.decode(b"garbage line").unwrap_err();
    assert_eq!(reason.code(), "regex_no_match", "{reason}");
    assert!(reason.to_string().contains("garbage line"), "{reason}");
    let reason = decoder
        .decode(br#"127.0.0.1 - frank [10/Oct/2026:13:55:36 -0700] "GET / HTTP/1.0" 200 -"#)
        .unwrap_err();
    assert_eq!(reason.code(), "wrong_type", "{reason}");
    let long = format!("{}x", "a".repeat(100_000));
    let reason = decoder.decode(long.as_bytes()).unwrap_err();
    assert!(
        reason.to_string().len() < 400,
        "quoted in full: {}",
        reason.to_string().len()
    );
}

#[test]
fn check_names_paths_missing_from_a_schema_and_bad_format_settings() {
    let bad_path = AVRO.replace("\"card.id\"", "\"card.number\"");
    let found = problems(&bad_path);
    assert!(found.contains("\"card.number\""), "{found}");
    assert!(found.contains("near: id, brand"), "{found}");

    let bad_time = AVRO.replace("event_time = \"ts\"", "event_time = \"amount.when\"");
    let found = problems(&bad_time);
    assert!(
        found.contains("event_time") && found.contains("near: value, currency"),
        "{found}"
    );

    let found = problems(&PROTO.replace("\"tags.region\"", "\"card.number\""));
    assert!(
        found.contains("\"card.number\"") && found.contains("near: id, brand"),
        "{found}"
    );
    let found = problems(&PROTO.replace("shop.Payment\"", "shop.Paymnet\""));
    assert!(
        found.contains("shop.Paymnet") && found.contains("shop.Payment, shop.Payment.Item"),
        "{found}"
    );
    let found = problems(&PROTO.replace("message = \"shop.Payment\"\n", ""));
    assert!(
        found.contains("message") && found.contains("shop.Card"),
        "{found}"
    );
    let found = problems(&PROTO.replace("payment.proto", "missing.proto"));
    assert!(
        found.contains("schema_file") && found.contains("missing.proto"),
        "{found}"
    );
    assert!(
        !found.contains(env!("CARGO_MANIFEST_DIR")),
        "an internal path: {found}"
    );

    let found = problems(&AVRO.replace("schema_file = \"payment.avsc\"\n", ""));
    assert!(
        found.contains("schema_file") && found.contains("[schema_registry]"),
        "{found}"
    );
    let found = problems(&AVRO.replace("payment.avsc", "payment.proto"));
    assert!(found.contains("schema_file"), "{found}");

    let found = problems(&REGEX.replace("(?P<ip>\\S+)", "(?P<ip>\\S+"));
    assert!(
        found.contains("pattern") && found.contains("not a valid regex"),
        "{found}"
    );
    let found = problems(&SYSLOG.replace(
        "format = \"syslog\"",
        "format = \"syslog\"\npattern = \"x\"",
    ));
    assert!(
        found.contains("pattern") && found.contains("is not read by format \"syslog\""),
        "{found}"
    );
    let found = problems(&LOGFMT.replace("Europe/Paris", "Mars/Olympus"));
    assert!(
        found.contains("time_zone") && found.contains("Mars/Olympus"),
        "{found}"
    );
    let found = problems(&LOGFMT.replace("%Y-%m-%d %H:%M:%S", "%Y-%Q"));
    assert!(found.contains("time_format"), "{found}");
    let found = problems(&format!(
        "[schema_registry]\nurl = \"registry:8081\"\n{}",
        AVRO.replace("schema_file = \"payment.avsc\"\n", "")
    ));
    assert!(found.contains("schema_registry.url"), "{found}");
    let found = problems(&format!(
        "[schema_registry]\nurl = \"http://registry:8081\"\nusername_env = \"BRAID_TEST_NO_SUCH_VAR\"\n{}",
        AVRO.replace("schema_file = \"payment.avsc\"\n", "")
    ));
    assert!(
        found.contains("BRAID_TEST_NO_SUCH_VAR") && found.contains("password_env"),
        "{found}"
    );
}
