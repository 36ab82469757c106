//! Braid's alert rules and Grafana dashboards against the real thing: a Prometheus server
//! (Debian's) started here with `deploy/prometheus/prometheus.yml` and `alerts.yml`, scraping a
//! running `braid dev`. Every metric a rule or panel names must exist with the labels it uses,
//! every panel's query must answer with series, and every rule must evaluate without error.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::dev::Dev;
use crate::common::tools::{root, system, yaml_documents};
use crate::common::{free_port, get, post};
use braid_testkit::wait_for;
use serde_json::Value as Json;

/// A Prometheus server on 127.0.0.1 with its own data dir, stopped on drop.
struct Prometheus {
    child: Child,
    base: String,
}

impl Prometheus {
    /// Starts Prometheus with Braid's config, its target and intervals set for a test.
    fn start(dir: &std::path::Path, braid_port: u16) -> Self {
        let config =
            std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).unwrap();
        for needle in [
            "scrape_interval: 15s",
            "evaluation_interval: 15s",
            "\"braid:8080\"",
        ] {
            assert!(config.contains(needle), "prometheus.yml lacks {needle}");
        }
        let config = config
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
            .replace("\"braid:8080\"", &format!("\"127.0.0.1:{braid_port}\""));
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        std::fs::copy(
            root().join("deploy/prometheus/alerts.yml"),
            dir.join("alerts.yml"),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(system("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A Prometheus API call: the `data` of a successful answer, or the error it gave.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Json, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut request = agent.get(format!("{}{path}", self.base));
        for (name, value) in params {
            request = request.query(*name, *value);
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        let body: Json = response.body_mut().read_json().map_err(|e| e.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    fn query(&self, expr: &str) -> Result<Vec<Json>, String> {
        self.api("/api/v1/query", &[("query", expr)])
            .map(|data| data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The label names of every series of `metric` seen in the last 10 minutes.
    fn labels_of(&self, metric: &str) -> BTreeSet<String> {
        let start = (chrono::Utc::now().timestamp() - 600).to_string();
        self.api("/api/v1/series", &[("match[]", metric), ("start", &start)])
            .unwrap_or_else(|e| panic!("series of {metric}: {e}"))
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s.as_object().unwrap().keys().cloned())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PromQL expression of a rule or panel, with Grafana's variables given test values.
struct Expression {
    origin: String,
    expr: String,
}

fn expressions() -> (Vec<Expression>, Vec<Expression>) {
    let rules = yaml_documents(
        "compose",
        &std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap(),
    );
    let mut alerts = Vec::new();
    for group in rules[0]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            alerts.push(Expression {
                origin: format!("alert {}", rule["alert"].as_str().unwrap()),
                expr: rule["expr"].as_str().unwrap().to_owned(),
            });
        }
    }
    let mut panels = Vec::new();
    for name in ["pipeline", "serving", "business"] {
        let path = root().join(format!("deploy/grafana/dashboards/braid-{name}.json"));
        let dashboard: Json =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "30s")
                    .replace("$instance", ".*");
                assert!(!expr.contains('$'), "unknown variable in {expr}");
                panels.push(Expression {
                    origin: format!("{name} dashboard, panel {:?}", panel["title"]),
                    expr,
                });
            }
        }
    }
    (alerts, panels)
}

/// The metrics an expression reads and the labels it groups, matches or joins on.
fn metrics_and_labels(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let metric = regex::Regex::new(r"\b(braid_[a-z0-9_]+|up\b)").unwrap();
    let grouping = regex::Regex::new(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)").unwrap();
    let matcher = regex::Regex::new(r#"([a-z_]+)\s*(?:=~|!~|!=|=)\s*""#).unwrap();
    let metrics = metric
        .captures_iter(expr)
        .map(|c| c[1].to_owned())
        .collect();
    let mut labels: BTreeSet<String> = grouping
        .captures_iter(expr)
        .flat_map(|c| {
            c[1].split(',')
                .map(|l| l.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect();
    labels.extend(matcher.captures_iter(expr).map(|c| c[1].to_owned()));
    (metrics, labels)
}

#[test]
fn rules_and_dashboards_match_what_a_running_braid_exports() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::example(
        dir.path(),
        400,
        &[
            ("BRAID__BATCH__INTERVAL", "1m"),
            ("BRAID__BATCH__FLUSH_INTERVAL", "1s"),
            ("BRAID__SPEED__CHECKPOINT_INTERVAL", "1s"),
        ],
    );
    let base = dev.base().to_owned();
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    wait_for("braid ready", Duration::from_secs(60), || {
        get(&format!("{base}/readyz")).0 == 200
    });
    // A batch run now (the scheduler's first is a minute away), so its metrics exist.
    let (status, run) = post(&format!("{base}/v1/batch/runs"), "{}");
    assert_eq!(status, 202, "{run}");
    let id = run["run_id"].as_str().unwrap().to_owned();
    wait_for("the batch run", Duration::from_secs(120), || {
        get(&format!("{base}/v1/batch/runs/{id}")).1["state"] == "succeeded"
    });
    // A refused request, so error series exist too.
    assert_eq!(get(&format!("{base}/v1/views/no_such_view")).0, 404);

    let prometheus_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prometheus_dir).unwrap();
    let prometheus = Prometheus::start(&prometheus_dir, port);
    wait_for("Prometheus scraping braid", Duration::from_secs(60), || {
        prometheus
            .query("count_over_time(up{job=\"braid\"}[1m]) >= 5")
            .is_ok_and(|r| r.len() == 1)
    });
    assert_eq!(
        prometheus.query("up{job=\"braid\"}").unwrap()[0]["value"][1],
        "1"
    );

    let (alerts, panels) = expressions();
    assert_eq!(alerts.len(), 12);
    // Every metric exists with every label the expression assumes.
    let mut problems = Vec::new();
    let mut labels_of = BTreeMap::new();
    for e in alerts.iter().chain(&panels) {
        let (metrics, labels) = metrics_and_labels(&e.expr);
        assert!(
            !metrics.is_empty(),
            "{}: no metric found in {}",
            e.origin,
            e.expr
        );
        let mut seen = BTreeSet::new();
        for metric in &metrics {
            let have = labels_of
                .entry(metric.clone())
                .or_insert_with(|| prometheus.labels_of(metric));
            if have.is_empty() {
                problems.push(format!("{}: braid exports no {metric}", e.origin));
            }
            seen.extend(have.iter().cloned());
        }
        for label in labels.difference(&seen) {
            problems.push(format!(
                "{}: no series of {metrics:?} has the label {label:?}",
                e.origin
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Every panel answers with series (rates need two scrapes in their window: polled). A query
    // Prometheus refuses will not get better: reported at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let failing = loop {
        let mut refused = false;
        let failing: Vec<String> = panels
            .iter()
            .filter_map(|p| match prometheus.query(&p.expr) {
                Ok(result) if !result.is_empty() => None,
                Ok(_) => Some(format!("{}: no series for {}", p.origin, p.expr)),
                Err(error) => {
                    refused = true;
                    Some(format!("{}: {error} in {}", p.origin, p.expr))
                }
            })
            .collect();
        if failing.is_empty() || refused || std::time::Instant::now() > deadline {
            break failing;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(failing.is_empty(), "{}", failing.join("\n"));

    // Every rule is loaded and evaluates without error.
    wait_for("the rules evaluated", Duration::from_secs(30), || {
        let groups = prometheus.api("/api/v1/rules", &[]).unwrap();
        let rules: Vec<&Json> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert_eq!(rules.len(), 12);
        for rule in &rules {
            assert_ne!(rule["health"], "err", "{rule}");
        }
        rules.iter().all(|r| r["health"] == "ok")
    });
    // Nothing is wrong with this Braid: no alert is firing.
    let firing = prometheus.api("/api/v1/alerts", &[]).unwrap();
    let firing: Vec<&Json> = firing["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(firing.is_empty(), "{firing:?}");
    drop(prometheus);
    dev.stop();
}
