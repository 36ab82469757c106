//! Configuration: the example resolves, overrides apply, and each broken config fails with a
//! message naming the key and the bad value.

use braid_shared::config::Interval;
use braid_shared::view::FieldKind;
use braid_shared::{Config, Error, MetricExpr};

const EXAMPLE: &str = include_str!("../../deploy/config/example.toml");

const MINIMAL: &str = r#"
[[source]]
name = "payments"
topic = "payments"
event_time = "ts"

[[view]]
name = "per_card"
source = "payments"
group_by = ["card_id"]
granularity = "1m"
[view.metrics]
tx = "count"
amount = "sum(amount)"
top = "top_k(merchant_id, 3)"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn error_text(toml: &str) -> String {
    match Config::from_toml(toml) {
        Ok(_) => panic!("config should be rejected:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn example_resolves_with_every_metric_kind() {
    let config = Config::from_toml(EXAMPLE).unwrap();
    assert!(config.kafka.is_embedded());
    assert_eq!(config.views.len(), 3);
    let kinds: std::collections::BTreeSet<String> = config
        .views
        .iter()
        .flat_map(|v| {
            v.metrics
                .iter()
                .map(|m| m.expr.to_string().split('(').next().unwrap().to_owned())
        })
        .collect();
    for kind in [
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "approx_distinct",
        "quantile",
        "top_k",
    ] {
        assert!(kinds.contains(kind), "example lacks {kind}");
    }
    let card = config.view("card_spend").unwrap();
    assert_eq!(card.granularity_ms, 60_000);
    let source = config.source("payments").unwrap();
    assert_eq!(card.group_by[0].slot, source.slot("card_id").unwrap());
}

#[test]
fn defaults_fill_missing_sections_and_fields_are_inferred() {
    let config = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(config.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(config.kafka.group_id, "braid");
    assert_eq!(config.serve.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        config.batch.interval,
        Interval(Some(std::time::Duration::from_secs(900)))
    );
    let source = config.source("payments").unwrap();
    assert!(!source.schema_declared);
    let kind = |name: &str| source.fields[source.slot(name).unwrap()].kind;
    assert_eq!(kind("amount"), FieldKind::Number);
    assert_eq!(kind("card_id"), FieldKind::Scalar);
    assert_eq!(kind("merchant_id"), FieldKind::Scalar);
    let view = config.view("per_card").unwrap();
    let top = view.metrics.iter().find(|m| m.name == "top").unwrap();
    assert_eq!(
        top.expr,
        MetricExpr::TopK {
            field: "merchant_id".into(),
            k: 3
        }
    );
}

#[test]
fn environment_overrides_apply_and_are_checked() {
    let config = Config::from_toml_with_env(
        MINIMAL,
        env(&[
            ("BRAID__KAFKA__BROKERS", "k1:9092,k2:9093"),
            ("BRAID__SERVE__API_KEYS", "[alpha, beta]"),
            ("BRAID__BATCH__INTERVAL", "off"),
            ("BRAID_UNRELATED", "ignored"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(config.kafka.brokers, "k1:9092,k2:9093");
    assert_eq!(config.serve.api_keys, vec!["alpha", "beta"]);
    assert_eq!(config.batch.interval, Interval::off());

    let err = Config::from_toml_with_env(MINIMAL, env(&[("BRAID__SERVE__LISTEN", "localhost")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("serve.listen") && err.contains("\"localhost\"") && err.contains("BRAID__"),
        "{err}"
    );

    let err = Config::from_toml_with_env(MINIMAL, env(&[("BRAID__KAFKA__BROKERZ", "x:1")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kafka.brokerz") && err.contains("unknown field"),
        "{err}"
    );

    let err = Config::from_toml_with_env(MINIMAL, env(&[("BRAID__KAFKA__BROKERS", "nope")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kafka.brokers") && err.contains("\"nope\""),
        "{err}"
    );
}

#[test]
fn kafka_passthrough_settings_are_kept_but_managed_keys_are_refused() {
    let toml = format!(
        "[kafka.config]\n\"fetch.max.bytes\" = 1048576\n\"client.rack\" = \"eu-1\"\n{MINIMAL}"
    );
    let config = Config::from_toml(&toml).unwrap();
    assert_eq!(
        config.kafka.config["fetch.max.bytes"].to_string(),
        "1048576"
    );
    assert_eq!(config.kafka.config["client.rack"].to_string(), "eu-1");

    let toml = format!("[kafka.config]\n\"enable.auto.commit\" = true\n{MINIMAL}");
    let err = error_text(&toml);
    assert!(
        err.contains("kafka.config.\"enable.auto.commit\"") && err.contains("managed"),
        "{err}"
    );
}

#[test]
fn consumers_pause_a_full_fetch_queue_briefly_unless_the_config_says_otherwise() {
    let setting = |config: &Config, key: &str| -> Vec<String> {
        config
            .kafka
            .consumer_settings("g")
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect()
    };
    let config = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(setting(&config, "fetch.queue.backoff.ms"), ["10"]);
    assert_eq!(setting(&config, "statistics.interval.ms"), ["1000"]);
    let toml = format!("[kafka.config]\n\"fetch.queue.backoff.ms\" = 250\n{MINIMAL}");
    let config = Config::from_toml(&toml).unwrap();
    assert_eq!(setting(&config, "fetch.queue.backoff.ms"), ["250"]);
}

/// Each case: a broken config, and the fragments its error must contain.
#[test]
fn broken_configs_name_the_problem() {
    let source = "[[source]]\nname = \"payments\"\ntopic = \"payments\"\nevent_time = \"ts\"\n";
    let declared = format!(
        "{source}[source.fields]\namount = \"float\"\ncard_id = \"string\"\nts = \"string\"\n"
    );
    let view = |body: &str| format!("[[view]]\nname = \"v\"\nsource = \"payments\"\n{body}");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            "not toml at all [".to_owned(),
            vec!["TOML parse error", "line 1"],
        ),
        (
            format!("{source}[unknown_section]\nx = 1\n"),
            vec!["unknown field", "unknown_section"],
        ),
        (
            format!("{source}typo = 1\n"),
            vec!["source", "unknown field", "typo"],
        ),
        (
            "[kafka]\nbrokers = \"\"\n".to_owned() + source,
            vec!["kafka.brokers", "empty"],
        ),
        (
            "[kafka]\nbrokers = \"host:99999\"\n".to_owned() + source,
            vec!["kafka.brokers", "\"host:99999\""],
        ),
        (
            "[kafka]\ngroup_id = \"  \"\n".to_owned() + source,
            vec!["kafka.group_id", "empty"],
        ),
        (
            "[kafka]\ninstance_id = \"pod 0\"\n".to_owned() + source,
            vec!["kafka.instance_id", "letters, digits"],
        ),
        (
            "[kafka]\ninstance_id = \"\"\n".to_owned() + source,
            vec!["kafka.instance_id", "1 to 249"],
        ),
        (
            "[kafka.config]\n\"group.instance.id\" = \"x\"\n".to_owned() + source,
            vec!["group.instance.id", "kafka.instance_id instead"],
        ),
        (
            "[batch]\ninterval = \"10ms\"\n".to_owned() + source,
            vec!["batch.interval", "shorter than 1s"],
        ),
        (
            "[batch]\ninterval = \"soon\"\n".to_owned() + source,
            vec!["batch.interval", "\"soon\""],
        ),
        (
            "[serve]\nlisten = \"8080\"\n".to_owned() + source,
            vec!["serve.listen", "\"8080\""],
        ),
        (
            "[serve]\napi_keys = [\"\"]\n".to_owned() + source,
            vec!["serve.api_keys[0]", "empty"],
        ),
        (
            "[storage]\ndir = \"\"\n".to_owned() + source,
            vec!["storage.dir", "empty"],
        ),
        (
            "[kafka]\nbrokers = \"a:1\"\n".to_owned(),
            vec!["source", "at least one"],
        ),
        (
            source.replace("topic = \"payments\"", "topic = \"\""),
            vec!["source[payments].topic", "empty"],
        ),
        (
            source.replace("topic = \"payments\"", "topic = \"bad topic!\""),
            vec!["source[payments].topic", "\"bad topic!\""],
        ),
        (
            source.replace("name = \"payments\"", "name = \"my payments\""),
            vec!["source[0].name", "\"my payments\""],
        ),
        (
            source.replace("event_time = \"ts\"", "event_time = \"\""),
            vec!["source[payments].event_time", "empty"],
        ),
        (
            source.replace("format = \"json\"", "") + "format = \"parquet\"\n",
            vec!["format", "parquet", "avro", "protobuf", "syslog"],
        ),
        (
            source.replace("format = \"json\"", "") + "format = \"avro\"\n",
            vec!["source[payments].schema_file", "[schema_registry]"],
        ),
        (
            format!("{source}max_event_bytes = 0\n"),
            vec!["max_event_bytes", "0"],
        ),
        (
            format!("{source}{source}"),
            vec!["source[payments].name", "duplicate source name"],
        ),
        (
            format!("{source}event_id = \"id\"\n[source.fields]\nts = \"string\"\n"),
            vec!["event_id", "\"id\"", "not declared"],
        ),
        (
            format!("{source}[source.fields]\nts = \"bool\"\n"),
            vec!["fields.ts", "string or int"],
        ),
        (
            format!("{source}[source.fields]\nx = \"decimal\"\n"),
            vec!["unknown variant", "decimal"],
        ),
        (
            format!(
                "{source}{}",
                view("granularity = \"1m\"\n[view.metrics]\nn = \"count\"\n")
                    .replace("source = \"payments\"", "source = \"clicks\"")
            ),
            vec!["view[v].source", "unknown source \"clicks\"", "payments"],
        ),
        (
            format!(
                "{source}{}",
                view("granularity = \"7m\"\n[view.metrics]\nn = \"count\"\n")
            ),
            vec!["view[v].granularity", "\"7m\"", "divides a day"],
        ),
        (
            format!(
                "{source}{}",
                view("granularity = \"2d\"\n[view.metrics]\nn = \"count\"\n")
            ),
            vec!["view[v].granularity", "\"2d\"", "1s..1d"],
        ),
        (
            format!(
                "{source}{}",
                view("granularity = \"1500ms\"\n[view.metrics]\nn = \"count\"\n")
            ),
            vec!["view[v].granularity", "whole number of seconds"],
        ),
        (
            format!(
                "{source}{}",
                view("granularity = \"fast\"\n[view.metrics]\nn = \"count\"\n")
            ),
            vec!["view[v].granularity", "\"fast\""],
        ),
        (
            format!("{source}{}", view("granularity = \"1m\"\n")),
            vec!["view[v].metrics", "no metrics"],
        ),
        (
            format!(
                "{source}{}",
                view("granularity = \"1m\"\n[view.metrics]\nn = \"median(amount)\"\n")
            ),
            vec![
                "view[v].metrics.n",
                "unknown metric function `median`",
                "column 1",
            ],
        ),
        (
            format!(
                "{source}{}",
                view("granularity = \"1m\"\n[view.metrics]\nn = \"quantile(amount, 2)\"\n")
            ),
            vec!["view[v].metrics.n", "between 0 and 1", "column 18"],
        ),
        (
            format!(
                "{source}{}",
                view("granularity = \"1m\"\n[view.metrics]\nn = \"top_k(m, 0)\"\n")
            ),
            vec!["view[v].metrics.n", "top_k needs a whole number"],
        ),
        (
            format!(
                "{source}{}",
                view("granularity = \"1m\"\n[view.metrics]\n\"bad name\" = \"count\"\n")
            ),
            vec!["view[v].metrics.bad name", "invalid metric name"],
        ),
        (
            format!(
                "{source}{}",
                view(
                    "granularity = \"1m\"\ngroup_by = [\"card\", \"card\"]\n[view.metrics]\nn = \"count\"\n"
                )
            ),
            vec!["view[v].group_by", "\"card\" is listed twice"],
        ),
        (
            format!(
                "{source}{}",
                view(
                    "granularity = \"1m\"\ngroup_by = [\"card\"]\n[view.metrics]\ncard = \"count\"\n"
                )
            ),
            vec!["view[v].metrics.card", "clashes"],
        ),
        (
            format!(
                "{source}{}",
                view(
                    "granularity = \"1m\"\ngroup_by = [\"bucket\"]\n[view.metrics]\nn = \"count\"\n"
                )
            ),
            vec!["view[v].group_by", "\"bucket\"", "clashes"],
        ),
        (
            format!(
                "{source}{}{}",
                view("granularity = \"1m\"\n[view.metrics]\nn = \"count\"\n"),
                view("granularity = \"1h\"\n[view.metrics]\nn = \"count\"\n")
            ),
            vec!["view[v].name", "duplicate view name"],
        ),
        (
            format!(
                "{declared}{}",
                view("granularity = \"1m\"\n[view.metrics]\nn = \"sum(amont)\"\n")
            ),
            vec!["view[v].metrics.n", "\"amont\"", "does not declare"],
        ),
        (
            format!(
                "{declared}{}",
                view("granularity = \"1m\"\n[view.metrics]\nn = \"avg(card_id)\"\n")
            ),
            vec!["view[v].metrics.n", "numeric", "\"card_id\"", "String"],
        ),
        (
            format!(
                "{declared}{}",
                view(
                    "granularity = \"1m\"\ngroup_by = [\"country\"]\n[view.metrics]\nn = \"count\"\n"
                )
            ),
            vec!["view[v].group_by", "\"country\"", "not declared"],
        ),
        (
            format!(
                "{source}{}",
                view("granularity = 60\n[view.metrics]\nn = \"count\"\n")
            ),
            vec!["granularity", "invalid type"],
        ),
    ];
    for (toml, fragments) in cases {
        let err = error_text(&toml);
        for fragment in fragments {
            assert!(
                err.contains(fragment),
                "error for\n{toml}\nlacks {fragment:?}:\n{err}"
            );
        }
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let toml = r#"
[[source]]
name = "payments"
topic = ""
event_time = "ts"
[[view]]
name = "a"
source = "nope"
granularity = "7m"
[view.metrics]
x = "sum("
"#;
    match Config::from_toml(toml) {
        Err(Error::ConfigInvalid(issues)) => {
            let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
            assert_eq!(
                keys,
                [
                    "source[payments].topic",
                    "view[a].source",
                    "view[a].granularity",
                    "view[a].metrics.x"
                ]
            );
        }
        other => panic!("expected every issue listed, got {other:?}"),
    }
}

#[test]
fn storage_urls_name_a_bucket_and_a_clean_prefix() {
    use braid_shared::config::parse_storage_url;
    assert_eq!(parse_storage_url("s3://b").unwrap(), ("b", ""));
    assert_eq!(parse_storage_url("s3://b/").unwrap(), ("b", ""));
    assert_eq!(parse_storage_url("s3://b/x/y/").unwrap(), ("b", "x/y"));
    for bad in [
        "b/x",
        "s3://",
        "s3:///x",
        "s3://b/x/../y",
        "file:///tmp",
        "s3://b/x//y",
        "s3://b/x\u{1}",
    ] {
        assert!(parse_storage_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn speed_peers_are_host_port_or_http_urls() {
    let with = |peers: &str| format!("[serve]\nspeed_peers = {peers}\n{MINIMAL}");
    let config = Config::from_toml(&with(
        r#"["speed-0:8081", "http://speed-1.speed:8081", "http://10.0.0.7:7001/"]"#,
    ))
    .unwrap();
    assert_eq!(
        config.serve.speed_peers,
        ["speed-0:8081", "speed-1.speed:8081", "10.0.0.7:7001"]
    );
    for bad in [
        r#"["https://speed-0:8081"]"#,
        r#"["http://speed-0"]"#,
        r#"["speed-0:0"]"#,
        r#"["http://speed-0:8081/internal"]"#,
        r#"["speed-0:8081\n"]"#,
    ] {
        let err = Config::from_toml(&with(bad)).unwrap_err().to_string();
        assert!(
            err.contains("serve.speed_peers[0]") && err.contains("http://host:port"),
            "{bad}: {err}"
        );
    }
}

/// A stable instance name makes the layers' consumers static group members; without one they
/// are dynamic; either way a dead member is noticed after 6 s unless the config says otherwise.
#[test]
fn instance_id_makes_static_members_and_the_session_timeout_defaults_to_six_seconds() {
    let settings = |text: &str| -> std::collections::BTreeMap<String, String> {
        Config::from_toml(&format!("{text}{MINIMAL}"))
            .unwrap()
            .kafka
            .consumer_settings("g")
            .into_iter()
            .collect()
    };
    let dynamic = settings("");
    assert_eq!(dynamic.get("group.instance.id"), None);
    assert_eq!(dynamic["session.timeout.ms"], "6000");
    assert_eq!(dynamic["heartbeat.interval.ms"], "1000");
    assert_eq!(dynamic["max.poll.interval.ms"], "30000");
    assert_eq!(dynamic["socket.timeout.ms"], "10000");
    let static_member = settings(
        "[kafka]\ninstance_id = \"braid-speed-0\"\n[kafka.config]\n\"session.timeout.ms\" = 10000\n",
    );
    assert_eq!(static_member["group.instance.id"], "braid-speed-0");
    assert_eq!(static_member["session.timeout.ms"], "10000");
}

/// Paths name nested fields everywhere; a broken path, or a field inside another, is named.
#[test]
fn field_paths_are_checked() {
    let config = Config::from_toml(
        r#"
[[source]]
name = "orders"
topic = "orders"
event_time = "meta.ts"
[[view]]
name = "v"
source = "orders"
group_by = ["card.id"]
granularity = "1m"
[view.metrics]
total = "sum(amount.value)"
"#,
    )
    .unwrap();
    let source = config.source("orders").unwrap();
    assert!(source.slot("card.id").is_some() && source.slot("amount.value").is_some());

    for (fragment, says) in [
        (
            r#"group_by = ["card..id"]"#,
            r#"invalid field path "card..id""#,
        ),
        (
            r#"group_by = ["items[x]"]"#,
            r#"invalid field path "items[x]""#,
        ),
        (
            r#"group_by = ["card", "card.id"]"#,
            r#"field "card" holds field "card.id""#,
        ),
        (
            r#"group_by = ["meta"]"#,
            r#"field "meta" holds field "meta.ts""#,
        ),
    ] {
        let text = format!(
            "[[source]]\nname = \"orders\"\ntopic = \"orders\"\nevent_time = \"meta.ts\"\n\
             [[view]]\nname = \"v\"\nsource = \"orders\"\n{fragment}\ngranularity = \"1m\"\n\
             [view.metrics]\nn = \"count\"\n"
        );
        let error = Config::from_toml(&text).unwrap_err().to_string();
        assert!(error.contains(says), "{fragment}: {error}");
    }
    let error =
        Config::from_toml("[[source]]\nname = \"o\"\ntopic = \"o\"\nevent_time = \"meta.\"\n")
            .unwrap_err()
            .to_string();
    assert!(
        error.contains("source[o].event_time") && error.contains("invalid field path"),
        "{error}"
    );
    let error = Config::from_toml(
        "[[source]]\nname = \"o\"\ntopic = \"o\"\nevent_time = \"t\"\n[[view]]\nname = \"v\"\nsource = \"o\"\ngranularity = \"1m\"\n[view.metrics]\nn = \"sum(amount.)\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("view[v].metrics.n"), "{error}");
}
