//! Event decoding: typed values, every rejection reason, and no panic on any input.

use braid_shared::{Config, Decoder, Event, RejectReason, Value};
use proptest::prelude::*;

const CONFIG: &str = r#"
[[source]]
name = "payments"
topic = "payments"
event_time = "ts"
event_id = "tx_id"
max_event_bytes = 512
[source.fields]
tx_id = "string"
card_id = "string"
amount = "float"
qty = "int"
flag = "bool"
ts = "string"

[[source]]
name = "loose"
topic = "loose"
event_time = "t"

[[view]]
name = "by_key"
source = "loose"
group_by = ["key"]
granularity = "1s"
[view.metrics]
total = "sum(n)"
"#;

fn decoders() -> (Decoder, Decoder, braid_shared::Config) {
    let config = Config::from_toml(CONFIG).unwrap();
    let strict = Decoder::new(config.source("payments").unwrap());
    let loose = Decoder::new(config.source("loose").unwrap());
    (strict, loose, config)
}

fn value<'a>(
    config: &Config,
    event: &'a braid_shared::Event,
    source: &str,
    field: &str,
) -> &'a Value {
    &event.values[config.source(source).unwrap().slot(field).unwrap()]
}

#[test]
fn decodes_typed_fields_and_both_time_forms() {
    let (strict, loose, config) = decoders();
    let event = strict
        .decode(br#"{"tx_id":"t1","card_id":"c\u00e9","amount":12,"qty":3,"flag":true,"ts":"2026-11-21T10:00:00.250+01:00","extra":{"deep":[1,2,{"x":null}]}}"#)
        .unwrap();
    assert_eq!(event.time_ms, 1_795_251_600_250);
    assert_eq!(
        value(&config, &event, "payments", "card_id"),
        &Value::Str("cé".into())
    );
    // Declared float widens integers.
    assert_eq!(
        value(&config, &event, "payments", "amount"),
        &Value::Float(12.0)
    );
    assert_eq!(value(&config, &event, "payments", "qty"), &Value::Int(3));
    assert_eq!(
        value(&config, &event, "payments", "flag"),
        &Value::Bool(true)
    );
    // The event-time field keeps its raw form as a field too.
    assert_eq!(
        value(&config, &event, "payments", "ts"),
        &Value::Str("2026-11-21T10:00:00.250+01:00".into())
    );

    let event = loose
        .decode(br#"{"t": 1700000000123, "key": 7, "n": -2.5}"#)
        .unwrap();
    assert_eq!(event.time_ms, 1_700_000_000_123);
    assert_eq!(value(&config, &event, "loose", "key"), &Value::Int(7));
    assert_eq!(value(&config, &event, "loose", "n"), &Value::Float(-2.5));

    // Missing and null fields are null, not errors.
    let event = loose.decode(br#"{"t": 0, "n": null}"#).unwrap();
    assert_eq!(value(&config, &event, "loose", "key"), &Value::Null);
    assert_eq!(value(&config, &event, "loose", "n"), &Value::Null);
}

#[test]
fn every_failure_has_its_reason() {
    let (strict, loose, _) = decoders();
    let code = |decoder: &Decoder, bytes: &[u8]| decoder.decode(bytes).unwrap_err().code();
    assert_eq!(code(&strict, &[b' '; 600]), "oversized");
    assert_eq!(code(&strict, b""), "not_json");
    assert_eq!(code(&strict, b"{\"ts\": "), "not_json");
    assert_eq!(code(&strict, b"\xff\xfe{}"), "not_json");
    assert_eq!(
        code(
            &strict,
            b"{\"ts\":\"2026-01-01T00:00:00Z\",\"card_id\":\"\xff\"}"
        ),
        "not_json"
    );
    assert_eq!(
        code(&strict, br#"{"ts":"2026-01-01T00:00:00Z"} trailing"#),
        "not_json"
    );
    assert_eq!(
        code(&strict, br#"{"ts":"2026-01-01T00:00:00Z"}{"ts":1}"#),
        "not_json"
    );
    assert_eq!(code(&strict, b"{\"a\": NaN}"), "not_json");
    assert_eq!(code(&strict, b"{\"amount\": 1e999}"), "not_json");
    assert_eq!(code(&strict, b"[1, 2]"), "not_an_object");
    assert_eq!(code(&strict, b"\"text\""), "not_an_object");
    assert_eq!(code(&strict, b"null"), "not_an_object");
    assert_eq!(code(&strict, br#"{"amount": 1}"#), "missing_event_time");
    assert_eq!(code(&strict, br#"{"ts": null}"#), "missing_event_time");
    assert_eq!(
        code(&strict, br#"{"ts": "yesterday"}"#),
        "invalid_event_time"
    );
    assert_eq!(
        code(&strict, br#"{"ts": "2026-13-45T99:00:00Z"}"#),
        "invalid_event_time"
    );
    assert_eq!(
        code(&strict, br#"{"ts": "1969-12-31T23:59:59Z"}"#),
        "invalid_event_time"
    );
    assert_eq!(code(&strict, br#"{"ts": 1.5}"#), "invalid_event_time");
    assert_eq!(code(&strict, br#"{"ts": -1}"#), "invalid_event_time");
    assert_eq!(
        code(&strict, br#"{"ts": 99999999999999999}"#),
        "invalid_event_time"
    );
    assert_eq!(
        code(&strict, br#"{"ts": {"$date": 1}}"#),
        "invalid_event_time"
    );
    let ok_ts = r#""ts":"2026-01-01T00:00:00Z""#;
    for (field, bad) in [
        ("amount", "\"12.50\""),
        ("amount", "true"),
        ("qty", "1.5"),
        ("card_id", "42"),
        ("flag", "\"yes\""),
        ("card_id", "{\"a\":1}"),
        ("amount", "[1]"),
    ] {
        let bytes = format!("{{{ok_ts},\"{field}\":{bad}}}");
        match strict.decode(bytes.as_bytes()) {
            Err(RejectReason::WrongType { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{bytes}: expected wrong_type, got {other:?}"),
        }
    }
    // Undeclared numeric fields must be numbers; group keys may be any scalar but not objects.
    assert_eq!(code(&loose, br#"{"t": 1, "n": "3"}"#), "wrong_type");
    assert_eq!(code(&loose, br#"{"t": 1, "key": [1]}"#), "wrong_type");
    assert_eq!(
        code(
            &strict,
            format!("{{{ok_ts},\"amount\":1,\"amount\":2}}").as_bytes()
        ),
        "duplicate_field"
    );
    assert_eq!(code(&strict, br#"{"ts": 1, "ts": 2}"#), "duplicate_field");
}

#[test]
fn reasons_explain_themselves() {
    let (strict, _, _) = decoders();
    let reason = strict
        .decode(br#"{"ts":"2026-01-01T00:00:00Z","amount":"12.50"}"#)
        .unwrap_err();
    assert_eq!(
        reason.to_string(),
        "field `amount` is string \"12.50\" but a number is required"
    );
    let reason = strict.decode(br#"{"ts":"noon"}"#).unwrap_err();
    assert!(
        reason.to_string().contains("`ts`") && reason.to_string().contains("\"noon\""),
        "{reason}"
    );
    let long = format!(r#"{{"ts":"{}"}}"#, "9".repeat(300));
    let reason = strict.decode(long.as_bytes()).unwrap_err().to_string();
    assert!(reason.len() < 300, "reason quotes too much: {reason}");
    // Reasons serialize with a stable tag, for the rejected-events store.
    let json = serde_json::to_value(RejectReason::NotAnObject {
        found: "array".into(),
    })
    .unwrap();
    assert_eq!(json["reason"], "not_an_object");
}

/// A source of 70 fields: the decoder tracks the fields it has seen beyond its first 64 too.
#[test]
fn duplicates_are_found_among_many_fields() {
    let fields: String = (0..70).map(|i| format!("f{i} = \"int\"\n")).collect();
    let config = Config::from_toml(&format!(
        "[[source]]\nname = \"wide\"\ntopic = \"wide\"\nevent_time = \"t\"\n[source.fields]\nt = \"int\"\n{fields}"
    ))
    .unwrap();
    let source = config.source("wide").unwrap();
    let decoder = Decoder::new(source);
    let event = decoder.decode(br#"{"t": 5, "f0": 1, "f69": 69}"#).unwrap();
    assert_eq!(event.values[source.slot("f69").unwrap()], Value::Int(69));
    assert_eq!(event.values[source.slot("f0").unwrap()], Value::Int(1));
    for body in [
        r#"{"t": 5, "f69": 1, "f69": 2}"#,
        r#"{"t": 5, "f0": 1, "f0": 2}"#,
    ] {
        let reason = decoder.decode(body.as_bytes()).unwrap_err();
        assert_eq!(reason.code(), "duplicate_field", "{body}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A decoder keeping some fields' values accepts and rejects exactly what the full decoder
    /// does, for the same reasons, and keeps those values; decoding into a reused event leaves
    /// nothing of the event before.
    #[test]
    fn a_decoder_keeping_some_fields_decides_as_the_full_one(
        keys in proptest::collection::vec(prop_oneof![
            Just("ts".to_owned()), Just("amount".to_owned()), Just("qty".to_owned()),
            Just("flag".to_owned()), Just("card_id".to_owned()), Just("tx_id".to_owned()),
            "[a-z]{0,3}"], 0..7),
        values in proptest::collection::vec(prop_oneof![
            Just("null".to_owned()), Just("true".to_owned()), Just("[]".to_owned()), Just("{}".to_owned()),
            any::<i64>().prop_map(|i| i.to_string()), any::<f64>().prop_map(|f| f.to_string()),
            Just("\"2026-01-01T00:00:00Z\"".to_owned()), "\"[ -~]{0,30}\""], 0..7),
    ) {
        let (strict, _, config) = decoders();
        let source = config.source("payments").unwrap();
        let kept = [source.slot("amount").unwrap(), source.slot("card_id").unwrap()];
        let partial = Decoder::keeping(source, |slot| kept.contains(&slot));
        let body: Vec<String> = keys.iter().zip(values.iter()).map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let text = format!("{{{}}}", body.join(","));
        let mut reused = strict
            .decode(br#"{"ts":1,"tx_id":"a-long-transaction-id-of-many-bytes","card_id":"c","amount":2.5,"qty":1,"flag":true}"#)
            .unwrap();
        let full = strict.decode(text.as_bytes());
        let into = partial.decode_into(text.as_bytes(), &mut reused);
        match (full, into) {
            (Ok(full), Ok(())) => {
                prop_assert_eq!(reused.time_ms, full.time_ms);
                for (slot, (theirs, ours)) in full.values.iter().zip(&reused.values).enumerate() {
                    if kept.contains(&slot) {
                        prop_assert_eq!(ours, theirs);
                    } else {
                        prop_assert_eq!(ours, &Value::Null);
                    }
                }
            }
            (Err(full), Err(ours)) => prop_assert_eq!(ours, full),
            (full, ours) => prop_assert!(false, "{text}: full {full:?}, keeping {ours:?}"),
        }
        let mut fresh = Event::default();
        prop_assert_eq!(
            partial.decode_into(text.as_bytes(), &mut fresh).map(|()| fresh),
            partial.decode(text.as_bytes())
        );
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let (strict, loose, _) = decoders();
        let _ = strict.decode(&bytes);
        let _ = loose.decode(&bytes);
    }

    #[test]
    fn never_panics_on_json_shaped_text(
        keys in proptest::collection::vec(prop_oneof![
            Just("ts".to_owned()), Just("t".to_owned()), Just("amount".to_owned()),
            Just("key".to_owned()), Just("n".to_owned()), Just("card_id".to_owned()), "[a-z\\\\\"]{0,4}"], 0..6),
        values in proptest::collection::vec(prop_oneof![
            Just("null".to_owned()), Just("true".to_owned()), Just("[]".to_owned()), Just("{}".to_owned()),
            any::<i64>().prop_map(|i| i.to_string()), any::<f64>().prop_map(|f| f.to_string()),
            Just("\"2026-01-01T00:00:00Z\"".to_owned()), "\"[ -~]{0,12}\"", "[-0-9eE.+]{1,8}"], 0..6),
    ) {
        let (strict, loose, _) = decoders();
        let body: Vec<String> = keys.iter().zip(values.iter()).map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let text = format!("{{{}}}", body.join(","));
        for decoder in [&strict, &loose] {
            if let Ok(event) = decoder.decode(text.as_bytes()) {
                prop_assert!(event.time_ms >= 0);
            }
        }
    }
}

const NESTED: &str = r#"
[[source]]
name = "orders"
topic = "orders"
event_time = "meta.ts"
event_id = "meta.id"

[[view]]
name = "by_card"
source = "orders"
group_by = ["card.id", "items[1].sku"]
granularity = "1m"
[view.metrics]
total = "sum(amount.value)"
first = "max(items[0].qty)"
"#;

/// Paths reach into objects and arrays; what they do not name is skipped, however deep.
#[test]
fn paths_read_nested_objects_and_array_elements() {
    let config = Config::from_toml(NESTED).unwrap();
    let source = config.source("orders").unwrap();
    let decoder = Decoder::new(source);
    let slot = |name: &str| source.slot(name).unwrap();
    let event = decoder
        .decode(
            br#"{"meta":{"id":"o-1","ts":1000,"trace":{"a":[1,{"b":2}]}},
                 "card":{"id":"c-1","brand":"visa"},
                 "amount":{"value":12.5,"currency":"EUR"},
                 "items":[{"sku":"a","qty":2},{"sku":"b","qty":1},{"sku":"c"}]}"#,
        )
        .unwrap();
    assert_eq!(event.time_ms, 1000);
    assert_eq!(event.values[slot("meta.id")], Value::Str("o-1".into()));
    assert_eq!(event.values[slot("card.id")], Value::Str("c-1".into()));
    assert_eq!(event.values[slot("amount.value")], Value::Float(12.5));
    assert_eq!(event.values[slot("items[0].qty")], Value::Int(2));
    assert_eq!(event.values[slot("items[1].sku")], Value::Str("b".into()));

    // Absent, null, or a scalar or array where an object was expected: the field is null.
    let event = decoder
        .decode(br#"{"meta":{"ts":5},"card":"c-2","amount":null,"items":{"0":1}}"#)
        .unwrap();
    for name in [
        "meta.id",
        "card.id",
        "amount.value",
        "items[0].qty",
        "items[1].sku",
    ] {
        assert_eq!(event.values[slot(name)], Value::Null, "{name}");
    }
    let event = decoder
        .decode(br#"{"meta":{"ts":5},"items":[{"qty":3}]}"#)
        .unwrap();
    assert_eq!(event.values[slot("items[0].qty")], Value::Int(3));
    assert_eq!(event.values[slot("items[1].sku")], Value::Null);
}

#[test]
fn nested_failures_name_the_whole_path() {
    let config = Config::from_toml(NESTED).unwrap();
    let decoder = Decoder::new(config.source("orders").unwrap());
    for (body, code, names) in [
        (r#"{"meta":{"id":"x"}}"#, "missing_event_time", "meta.ts"),
        (
            r#"{"meta":{"ts":"yesterday"}}"#,
            "invalid_event_time",
            "meta.ts",
        ),
        (
            r#"{"meta":{"ts":1},"amount":{"value":"12"}}"#,
            "wrong_type",
            "amount.value",
        ),
        (
            r#"{"meta":{"ts":1},"card":{"id":{"x":1}}}"#,
            "wrong_type",
            "card.id",
        ),
        (
            r#"{"meta":{"ts":1},"card":{"id":"a","id":"b"}}"#,
            "duplicate_field",
            "card.id",
        ),
        (
            r#"{"meta":{"ts":1},"card":{"id":"a"},"card":{"id":"b"}}"#,
            "duplicate_field",
            "card.id",
        ),
        (r#"{"meta":{"ts":1,"ts":2}}"#, "duplicate_field", "meta.ts"),
        (
            r#"{"meta":{"ts":1},"items":[{"qty":1},{"sku":"a"}"#,
            "not_json",
            "",
        ),
    ] {
        let reason = decoder.decode(body.as_bytes()).unwrap_err();
        assert_eq!(reason.code(), code, "{body}: {reason}");
        assert!(reason.to_string().contains(names), "{body}: {reason}");
    }
    // Deep nesting nothing reads is skipped without recursion; where a path reads it, it is a
    // value of the wrong type.
    let deep = |at: &str| {
        format!(
            r#"{{"meta":{{"ts":1}},"{at}":{}1{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
    };
    assert_eq!(decoder.decode(deep("x").as_bytes()).unwrap().time_ms, 1);
    assert!(decoder.decode(deep("card").as_bytes()).is_ok());
    let reason = decoder.decode(deep("amount").as_bytes());
    assert!(reason.is_ok(), "{reason:?}");
}
