//! The API through `router(state).oneshot(request)` with an in-memory speed layer, and the
//! server's connection limits over real sockets.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use braid_serving::{AppState, Backends, Server, router};
use braid_shared::coverage::SpeedCells;
use braid_shared::{
    CellQuery, Config, Coverage, Decoder, Event, PartitionCells, PartitionStatus, SpeedReader,
    TopicPartition, ViewState,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const CONFIG: &str = r#"
[storage]
dir = "DIR"

[serve]
max_rows = 50
max_body_bytes = 1024
API_KEYS

[[source]]
name = "payments"
topic = "payments"
event_time = "ts"
[source.fields]
card = "string"
country = "string"
amount = "int"
ts = "int"

[[view]]
name = "spend"
source = "payments"
group_by = ["card", "country"]
granularity = "1m"
[view.metrics]
tx = "count"
amount = "sum(amount)"
cards = "approx_distinct(card)"
"#;

/// An in-memory speed layer: events by partition, offset = index.
struct FakeSpeed {
    config: Arc<Config>,
    partitions: Vec<Vec<Event>>,
}

impl FakeSpeed {
    /// Each partition's cells apart, as a speed instance's endpoint answers them.
    fn read_each(
        &self,
        view: &str,
        query: &CellQuery,
        coverage: &Coverage,
    ) -> braid_shared::Result<Vec<PartitionCells>> {
        let def = self.config.view(view).unwrap();
        let status = self.status();
        Ok(self
            .partitions
            .iter()
            .enumerate()
            .map(|(p, events)| {
                let tp = TopicPartition::new("payments", p as i32);
                let from = coverage.of(&tp) as usize;
                let mut applied = ViewState::new(Arc::clone(def));
                applied.apply(&events[from.min(events.len())..]);
                let mut state = ViewState::new(Arc::clone(def));
                state.merge_matching(&applied, query).unwrap();
                PartitionCells {
                    status: status[&tp],
                    tp,
                    state,
                }
            })
            .collect())
    }
}

impl SpeedReader for FakeSpeed {
    fn status(&self) -> BTreeMap<TopicPartition, PartitionStatus> {
        (0..self.partitions.len())
            .map(|p| {
                let status = PartitionStatus {
                    position: self.partitions[p].len() as i64,
                    lag_messages: Some(0),
                    last_message_ms: None,
                };
                (TopicPartition::new("payments", p as i32), status)
            })
            .collect()
    }

    fn read(
        &self,
        view: &str,
        query: &CellQuery,
        coverage: &Coverage,
    ) -> braid_shared::Result<SpeedCells> {
        let def = self.config.view(view).unwrap();
        let parts = self.read_each(view, query, coverage)?;
        SpeedCells::merged(def, parts, Vec::new())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    config: Arc<Config>,
    state: AppState,
}

fn fixture(keys: &[&str], events: &[(i32, Value)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keys = if keys.is_empty() {
        String::new()
    } else {
        format!("api_keys = {keys:?}")
    };
    let text = CONFIG
        .replace("DIR", dir.path().to_str().unwrap())
        .replace("API_KEYS", &keys);
    let config = Arc::new(Config::from_toml(&text).unwrap());
    let decoder = Decoder::new(config.source("payments").unwrap());
    let mut partitions = vec![Vec::new(), Vec::new()];
    for (p, event) in events {
        let bytes = serde_json::to_vec(event).unwrap();
        partitions[*p as usize].push(decoder.decode(&bytes).unwrap());
    }
    let speed = FakeSpeed {
        config: Arc::clone(&config),
        partitions,
    };
    let backends = Backends {
        speed: Some(Arc::new(speed)),
        ..Backends::default()
    };
    let storage = braid_store::open(&config.storage).unwrap();
    let state = AppState::new(Arc::clone(&config), storage, backends);
    Fixture {
        _dir: dir,
        config,
        state,
    }
}

const MIN: i64 = 60_000;
const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % (60 * MIN);

fn payment(card: &str, country: &str, amount: i64, minute: i64) -> Value {
    json!({"card": card, "country": country, "amount": amount, "ts": T0 + minute * MIN + 5})
}

fn events() -> Vec<(i32, Value)> {
    vec![
        (0, payment("a", "DE", 10, 0)),
        (1, payment("a", "DE", 5, 1)),
        (0, payment("b", "DE", 7, 1)),
        (1, payment("c", "FR", 100, 2)),
        // Late: arrives last, belongs to minute 0.
        (0, payment("c", "FR", 1, 0)),
        (1, payment("a", "DE", 3, 7)),
    ]
}

async fn call(state: &AppState, method: Method, uri: &str, body: Body) -> (StatusCode, Value) {
    call_with(state, Request::builder().method(method).uri(uri), body).await
}

async fn call_with(
    state: &AppState,
    request: axum::http::request::Builder,
    body: Body,
) -> (StatusCode, Value) {
    let response = router(state.clone())
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, Value) {
    call(state, Method::GET, uri, Body::empty()).await
}

fn range(from_minute: i64, to_minute: i64) -> String {
    format!(
        "from={}&to={}",
        T0 + from_minute * MIN,
        T0 + to_minute * MIN
    )
}

#[tokio::test]
async fn answers_merge_regroup_order_and_cut() {
    let f = fixture(&[], &events());
    // Every group over the whole range: one row each, the late event included.
    let (status, body) = get(&f.state, &format!("/v1/views/spend?{}", range(0, 10))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["rows"].as_array().unwrap();
    let summary: Vec<(String, String, u64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["card"].as_str().unwrap().to_owned(),
                r["country"].as_str().unwrap().to_owned(),
                r["tx"].as_u64().unwrap(),
                r["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a".into(), "DE".into(), 3, 18),
            ("b".into(), "DE".into(), 1, 7),
            ("c".into(), "FR".into(), 2, 101),
        ]
    );
    assert!(rows.iter().all(|r| r["bucket"] == body["from"]));
    let provenance = &body["provenance"];
    assert_eq!(provenance["batch"], Value::Null);
    assert_eq!(
        provenance["offsets"],
        json!({"payments/0": 3, "payments/1": 3})
    );
    assert_eq!(provenance["exact"], false);
    assert!(provenance["error_bounds"]["cards"].is_object());

    // Re-bucketed by 5 minutes, grouped by country only, a filter, then ordered and cut.
    let uri = format!("/v1/views/spend?{}&step=5m&group_by=country", range(0, 10));
    let (_, body) = get(&f.state, &uri).await;
    let rows: Vec<(String, String, u64)> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["bucket"].as_str().unwrap().to_owned(),
                r["country"].as_str().unwrap().to_owned(),
                r["tx"].as_u64().unwrap(),
            )
        })
        .collect();
    let at = |minute: i64| braid_shared_time(T0 + minute * MIN);
    assert_eq!(
        rows,
        vec![
            (at(0), "DE".into(), 3),
            (at(0), "FR".into(), 2),
            (at(5), "DE".into(), 1),
        ]
    );
    assert!(rows.iter().all(|r| !r.0.is_empty()));
    let (_, body) = get(
        &f.state,
        &format!("/v1/views/spend?{}&country=DE&group_by=", range(0, 10)),
    )
    .await;
    assert_eq!(body["rows"].as_array().unwrap().len(), 1);
    assert_eq!(body["rows"][0]["tx"], 4);
    assert_eq!(body["rows"][0]["amount"], 25);
    assert_eq!(body["rows"][0]["cards"], 2);
    let (_, body) = get(
        &f.state,
        &format!("/v1/views/spend?{}&order_by=amount&limit=1", range(0, 10)),
    )
    .await;
    assert_eq!(body["total_rows"], 3);
    assert_eq!(body["rows"].as_array().unwrap().len(), 1);
    assert_eq!(body["rows"][0]["card"], "c");
    let (_, body) = get(
        &f.state,
        &format!(
            "/v1/views/spend?{}&order_by=amount:asc&limit=1",
            range(0, 10)
        ),
    )
    .await;
    assert_eq!(body["rows"][0]["card"], "b");
    // Half-open range: minute 7 is outside [0, 7).
    let (_, body) = get(
        &f.state,
        &format!("/v1/views/spend?{}&card=a&group_by=", range(0, 7)),
    )
    .await;
    assert_eq!(body["rows"][0]["tx"], 2);
}

/// A point query (every group-by field filtered) folds the key's cells as it visits them; its
/// rows and provenance must be those of the same key in an answer over every key, which merges
/// cells into a state first.
#[tokio::test]
async fn point_answers_equal_the_rows_of_every_key() {
    let f = fixture(&[], &events());
    for shape in [
        "",
        "&step=5m",
        "&step=1m",
        "&group_by=country",
        "&group_by=",
    ] {
        for (card, country) in [("a", "DE"), ("c", "FR"), ("b", "DE"), ("a", "FR")] {
            let (status, all) =
                get(&f.state, &format!("/v1/views/spend?{}{shape}", range(0, 7))).await;
            assert_eq!(status, StatusCode::OK, "{all}");
            let uri = format!(
                "/v1/views/spend?{}{shape}&card={card}&country={country}",
                range(0, 7)
            );
            let (status, point) = get(&f.state, &uri).await;
            assert_eq!(status, StatusCode::OK, "{point}");
            let kept =
                |row: &&Value, field: &str, value: &str| row.get(field).is_none_or(|v| v == value);
            // Rows of every key, restricted to this key (a field merged away is not compared;
            // those shapes are checked against the key's own events below).
            let expected: Vec<&Value> = all["rows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|row| kept(row, "card", card) && kept(row, "country", country))
                .collect();
            let got: Vec<&Value> = point["rows"].as_array().unwrap().iter().collect();
            if shape == "&group_by=country" || shape == "&group_by=" {
                // Merged away, every key's rows fold together: recount this key's events.
                let tx: u64 = events()
                    .iter()
                    .filter(|(_, e)| e["card"] == card && e["country"] == country)
                    .filter(|(_, e)| e["ts"].as_i64().unwrap() < T0 + 7 * MIN)
                    .count() as u64;
                let counted: u64 = got.iter().map(|r| r["tx"].as_u64().unwrap()).sum();
                assert_eq!(counted, tx, "{uri}: {point}");
            } else {
                assert_eq!(got, expected, "{uri}");
            }
            assert_eq!(point["provenance"], all["provenance"], "{uri}");
            assert_eq!(point["total_rows"], got.len(), "{uri}");
        }
    }
}

fn braid_shared_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn every_error_is_json_with_a_code_naming_what_was_wrong() {
    let many: Vec<(i32, Value)> = (0..60)
        .map(|i| (0, payment(&format!("card-{i}"), "US", 1, 0)))
        .collect();
    let f = fixture(&[], &many);
    let cases: Vec<(Method, String, Body, StatusCode, &str, &str)> = vec![
        (
            Method::GET,
            "/v1/views/nope?from=now-1h&to=now".into(),
            Body::empty(),
            StatusCode::NOT_FOUND,
            "unknown_view",
            "nope",
        ),
        (
            Method::GET,
            "/v1/views/spend?from=nonsense&to=now".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "from:",
        ),
        (
            Method::GET,
            "/v1/views/spend?from=now&to=now-1h".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "must be before to",
        ),
        (
            Method::GET,
            "/v1/views/spend?from=now-1h&to=now&step=90s".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "granularity",
        ),
        (
            Method::GET,
            "/v1/views/spend?from=now-1h&to=now&amount=3".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "amount:",
        ),
        (
            Method::GET,
            format!("/v1/views/spend?{}", range(0, 10)),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "too_many_rows",
            "60 rows",
        ),
        (
            Method::GET,
            "/v1/views/spend?from=%ZZ&to=now".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "from:",
        ),
        (
            Method::GET,
            "/v1/nothing".into(),
            Body::empty(),
            StatusCode::NOT_FOUND,
            "not_found",
            "endpoint",
        ),
        (
            Method::DELETE,
            "/v1/views".into(),
            Body::empty(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method",
        ),
        (
            Method::POST,
            "/v1/batch/runs".into(),
            Body::from("{\"full\": \"yes\"}"),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "full",
        ),
        (
            Method::POST,
            "/v1/batch/runs".into(),
            Body::from("{\"fast\": true}"),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "fast",
        ),
        (
            Method::POST,
            "/v1/batch/runs".into(),
            Body::from(vec![b' '; 4096]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "too large",
        ),
        (
            Method::POST,
            "/v1/batch/runs".into(),
            Body::empty(),
            StatusCode::SERVICE_UNAVAILABLE,
            "batch_unavailable",
            "no batch layer",
        ),
        (
            Method::GET,
            "/v1/batch/runs/run-404".into(),
            Body::empty(),
            StatusCode::NOT_FOUND,
            "unknown_run",
            "run-404",
        ),
        (
            Method::GET,
            "/v1/batch/runs/..%2F..%2Fetc".into(),
            Body::empty(),
            StatusCode::NOT_FOUND,
            "unknown_run",
            "etc",
        ),
        (
            Method::GET,
            "/v1/batch/runs?limit=0".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "limit:",
        ),
        (
            Method::GET,
            "/v1/batch/runs?since=1".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "since:",
        ),
        (
            Method::GET,
            "/v1/rejected/payments?reason=bad_vibes".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "one of oversized, not_json",
        ),
        (
            Method::GET,
            "/v1/rejected/payments?cursor=zz".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "cursor",
        ),
        (
            Method::GET,
            format!("/v1/rejected/payments?cursor={}", "ab".repeat(3000)),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "cursor",
        ),
        (
            Method::GET,
            "/v1/rejected/payments?page=2".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "page",
        ),
        (
            Method::GET,
            "/v1/rejected/nope".into(),
            Body::empty(),
            StatusCode::NOT_FOUND,
            "unknown_source",
            "nope",
        ),
        (
            Method::GET,
            "/metrics".into(),
            Body::empty(),
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "recorder",
        ),
    ];
    for (method, uri, body, status, code, needle) in cases {
        let (got, answer) = call(&f.state, method.clone(), &uri, body).await;
        assert_eq!(got, status, "{method} {uri}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{method} {uri}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{method} {uri}: {message:?} lacks {needle:?}"
        );
    }
    // The limit lets a large answer through, cut.
    let (status, body) = get(
        &f.state,
        &format!("/v1/views/spend?{}&limit=5", range(0, 10)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total_rows"], 60);
    assert_eq!(body["rows"].as_array().unwrap().len(), 5);
    assert_eq!(f.config.serve.max_rows, 50);
}

/// Ids and names a client makes up (very long, control characters, path-like) are refused as
/// unknown at the edge: never a 500, never the server's data directory in the message.
#[tokio::test]
async fn fraud_scoring_without_a_fraud_section_is_not_found() {
    let f = fixture(&[], &events());
    let (status, body) = call(
        &f.state,
        Method::POST,
        "/v1/fraud/score",
        Body::from(r#"{"card": "a", "ts": 1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "fraud_not_configured");
    // Trends need no [fraud]: a range with no events has no keys.
    let (status, body) = get(
        &f.state,
        "/v1/trends/spend?metric=tx&window=1m&baseline=5m&at=1000000",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["trends"], json!([]));
}

#[tokio::test]
async fn made_up_ids_are_unknown_and_never_reveal_server_paths() {
    let f = fixture(&[], &events());
    let dir = f.config.storage.dir.display().to_string();
    let long = "a".repeat(5000);
    let cases = [
        (format!("/v1/batch/runs/{long}"), "unknown_run"),
        ("/v1/batch/runs/run%0A%1B%5B31m".to_owned(), "unknown_run"),
        (
            "/v1/batch/runs/..%2F..%2F..%2Fetc%2Fpasswd".to_owned(),
            "unknown_run",
        ),
        (format!("/v1/views/{long}?from=0&to=1"), "unknown_view"),
        (format!("/v1/rejected/{long}"), "unknown_source"),
    ];
    for (uri, code) in cases {
        let (status, body) = get(&f.state, &uri).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{}: {body}",
            &uri[..40.min(uri.len())]
        );
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains(&dir), "{message}");
        assert!(
            message.len() < 300,
            "the message echoes the whole id: {} bytes",
            message.len()
        );
    }
}

#[tokio::test]
async fn api_keys_guard_every_data_endpoint() {
    let f = fixture(&["k-123456", "second-key"], &events());
    let uri = format!("/v1/views/spend?{}", range(0, 10));
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("k-123456"),
        Some("Bearer k-1234567"),
        Some("Bearer "),
    ] {
        let mut request = Request::builder().uri(&uri);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let (status, body) = call_with(&f.state, request, Body::empty()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    for path in [
        "/v1/views",
        "/v1/status",
        "/v1/batch/runs",
        "/v1/rejected/payments",
        "/v1/trends/spend?metric=tx&window=1m&baseline=5m",
        "/openapi.json",
    ] {
        let (status, _) = get(&f.state, path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _) = call(
        &f.state,
        Method::POST,
        "/v1/fraud/score",
        Body::from(r#"{"card": "a", "ts": 1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "POST /v1/fraud/score");
    for key in ["k-123456", "second-key"] {
        let request = Request::builder()
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        let (status, body) = call_with(&f.state, request, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["rows"].as_array().unwrap().len(), 3);
    }
    assert_eq!(get(&f.state, "/healthz").await.0, StatusCode::OK);
    // What holds no data needs no key: probes, metrics (no recorder in this test: 503), the
    // page and its static files.
    for (path, expected) in [
        ("/readyz", StatusCode::SERVICE_UNAVAILABLE),
        ("/metrics", StatusCode::SERVICE_UNAVAILABLE),
        ("/", StatusCode::OK),
        ("/assets/uPlot.iife.min.js", StatusCode::OK),
        ("/assets/uPlot.LICENSE", StatusCode::OK),
        ("/assets/nope.js", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(get(&f.state, path).await.0, expected, "{path}");
    }
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let f = fixture(&[], &events());
    let (status, page) = get(&f.state, "/").await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_str().unwrap();
    assert!(page.contains(r#"<script src="/assets/uPlot.iife.min.js"></script>"#));
    assert!(page.contains(r#"href="/assets/uPlot.min.css""#));
    for (asset, content_type, needle) in [
        ("uPlot.iife.min.js", "text/javascript", "var uPlot="),
        ("uPlot.min.css", "text/css", ".uplot"),
        ("uPlot.LICENSE", "text/plain", "The MIT License"),
    ] {
        let response = router(f.state.clone())
            .oneshot(
                Request::builder()
                    .uri(format!("/assets/{asset}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let header = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(header.starts_with(content_type), "{asset}: {header}");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains(needle), "{asset}");
    }
    // Unknown, overlong and path-like names are a JSON 404 naming no internal path.
    let long = "a".repeat(5000);
    for name in ["nope.js", long.as_str(), "..%2FCargo.toml", "%00"] {
        let (status, body) = get(&f.state, &format!("/assets/{name}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
        assert_eq!(body["error"]["code"], "unknown_asset", "{name}");
        assert!(body.to_string().len() < 400, "{body}");
    }
}

#[tokio::test]
async fn status_views_and_openapi_describe_the_service() {
    let f = fixture(&[], &events());
    let (status, body) = get(&f.state, "/v1/views").await;
    assert_eq!(status, StatusCode::OK);
    let view = &body["views"][0];
    assert_eq!(view["name"], "spend");
    assert_eq!(view["granularity"], "1m");
    assert_eq!(view["metrics"]["amount"], "sum(amount)");
    assert_eq!(view["freshness"]["speed"]["payments/1"]["position"], 3);
    let (status, body) = get(&f.state, "/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["speed"]["running"], true);
    assert_eq!(body["batch"]["running"], false);
    let (_, body) = get(&f.state, "/v1/rejected/payments").await;
    assert_eq!(body["total"], 0);
    let (status, doc) = get(&f.state, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/views",
        "/v1/views/{view}",
        "/v1/batch/runs",
        "/v1/batch/runs/{id}",
        "/v1/status",
        "/v1/rejected/{source}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let params: Vec<&str> = doc["paths"]["/v1/views/{view}"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "view", "from", "to", "step", "group_by", "order_by", "limit",
    ] {
        assert!(params.contains(&name), "{name} not documented: {params:?}");
    }
    let (status, page) = get(&f.state, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("/v1/views"));
    // Before any snapshot is read the server is not ready.
    let (status, body) = get(&f.state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["waiting_for"][0]
            .as_str()
            .unwrap()
            .contains("snapshot")
    );
    f.state.snapshot().refresh().await;
    assert_eq!(get(&f.state, "/readyz").await.0, StatusCode::OK);
}

/// Reads from `stream` until it is closed; fails after `deadline`.
fn closed_within(stream: &mut std::net::TcpStream, deadline: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(deadline)).unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(e) => panic!("connection still open after {:?}: {e}", started.elapsed()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_concurrency_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\ndir = {:?}\n[serve]\nlisten = \"127.0.0.1:0\"\nheader_timeout = \"300ms\"\nrequest_timeout = \"700ms\"\nmax_concurrency = 1\n{}",
        dir.path().to_str().unwrap(),
        &CONFIG[CONFIG.find("[[source]]").unwrap()..]
    );
    let config = Arc::new(Config::from_toml(&text).unwrap());
    let cancel = CancellationToken::new();
    let storage = braid_store::open(&config.storage).unwrap();
    let listener = braid_serving::bind(config.serve.listen).await.unwrap();
    let server = Server::start(
        config,
        storage,
        Backends::default(),
        listener,
        cancel.clone(),
    )
    .await
    .unwrap();
    let addr = server.addr();
    tokio::task::spawn_blocking(move || {
        // A client that never finishes its headers is disconnected.
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /v1/views HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let started = Instant::now();
        closed_within(&mut slow, Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(3));

        // A request whose body never comes holds the one slot ...
        let mut holder = std::net::TcpStream::connect(addr).unwrap();
        holder
            .write_all(b"POST /v1/batch/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // ... so another is refused at once with 503, as JSON.
        let mut other = std::net::TcpStream::connect(addr).unwrap();
        other
            .write_all(b"GET /v1/views HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let answer = String::from_utf8(closed_within(&mut other, Duration::from_secs(5))).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("\"overloaded\""), "{answer}");
        // The held request times out with 503 and frees the slot.
        holder
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 4096];
        let n = holder.read(&mut buffer).unwrap();
        let answer = String::from_utf8_lossy(&buffer[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        let mut after = std::net::TcpStream::connect(addr).unwrap();
        after
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let answer = String::from_utf8(closed_within(&mut after, Duration::from_secs(5))).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await
    .unwrap();
    cancel.cancel();
    server.join().await.unwrap();
}

#[tokio::test]
async fn without_a_speed_layer_answers_hold_the_snapshot_only() {
    let dir = tempfile::tempdir().unwrap();
    let text = CONFIG
        .replace("DIR", dir.path().to_str().unwrap())
        .replace("API_KEYS", "");
    let config = Arc::new(Config::from_toml(&text).unwrap());
    let storage = braid_store::open(&config.storage).unwrap();
    let state = AppState::new(config, storage, Backends::default());
    let (status, body) = get(&state, &format!("/v1/views/spend?{}", range(0, 10))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"], json!([]));
    assert_eq!(body["provenance"]["batch"], Value::Null);
    assert_eq!(body["provenance"]["speed"], Value::Null);
    assert_eq!(body["provenance"]["offsets"], json!({}));
    let (_, status) = get(&state, "/v1/status").await;
    assert_eq!(status["speed"]["running"], false);
    assert_eq!(status["speed"]["partitions"], json!({}));
}
