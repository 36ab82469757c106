//! Every file of `deploy/` checked by the tool that reads it for real: Prometheus's config and
//! rules by `promtool` (and the rules fired from synthetic series by `promtool test rules`),
//! the compose file by `docker-compose config`, the Kubernetes manifests by
//! `kubernetes-validate --strict`, and the Braid configs they carry by `braid check`. The live
//! checks (Prometheus scraping a running Braid, each dashboard query answered) are in
//! `tests/observe.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::common::tools::{root, run, run_failing, system, venv, yaml_documents};
use serde_json::{Value as Json, json};

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `braid check` of `config` with `env` on top; returns its output, requiring success.
fn braid_check(config: &Path, env: &BTreeMap<String, String>) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["check", "--config", config.to_str().unwrap()])
        .env_clear()
        .envs(env))
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    let promtool = system("promtool");
    let dir = root().join("deploy/prometheus");
    let out = run(Command::new(&promtool)
        .args(["check", "config", "prometheus.yml"])
        .current_dir(&dir));
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
    let out = run(Command::new(&promtool)
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir));
    assert!(out.contains("SUCCESS: 12 rules found"), "{out}");
    // Every alert fires from synthetic series (and stays quiet where it must).
    let out = run(Command::new(&promtool)
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_unit_test_and_the_unit_tests_can_fail() {
    let rules = read("deploy/prometheus/alerts.yml");
    let tests = read("deploy/prometheus/alerts_test.yml");
    let alerts: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 12, "{alerts:?}");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no promtool unit test"
        );
    }
    // The same tests against a rule with a changed threshold fail: they check the rules.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("alerts.yml"),
        rules.replace("> 0.05\n        for: 10m", "> 0.5\n        for: 10m"),
    )
    .unwrap();
    std::fs::write(dir.path().join("alerts_test.yml"), &tests).unwrap();
    let out = run_failing(
        Command::new(system("promtool"))
            .args(["test", "rules", "alerts_test.yml"])
            .current_dir(dir.path()),
    );
    assert!(out.contains("BraidRejectedEventRate"), "{out}");
}

#[test]
fn kubernetes_scrape_config_passes_promtool() {
    // Debian's Prometheus is built without Kubernetes discovery, so the pod discovery is
    // swapped for a static target; the relabelling and the rest are checked as written.
    let text = read("deploy/kubernetes/prometheus-scrape.yml");
    let discovery = "    kubernetes_sd_configs:\n      - role: pod\n";
    assert!(text.contains(discovery), "{text}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        text.replace(
            discovery,
            "    static_configs:\n      - targets: [\"braid:8080\"]\n",
        ),
    )
    .unwrap();
    std::fs::copy(
        root().join("deploy/prometheus/alerts.yml"),
        dir.path().join("alerts.yml"),
    )
    .unwrap();
    let out = run(Command::new(system("promtool"))
        .args(["check", "config", "prometheus.yml"])
        .current_dir(dir.path()));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The compose file as docker-compose resolves it (profiles included), as JSON.
fn compose_config(profile: Option<&str>) -> Json {
    let mut command = Command::new(venv("compose", "docker-compose"));
    command.args(["-f", "docker-compose.yml"]);
    if let Some(profile) = profile {
        command.args(["--profile", profile]);
    }
    let out = run(command.arg("config").current_dir(root().join("deploy")));
    yaml_documents("compose", &out).remove(0)
}

/// A service's volumes as (source, target), from docker-compose's `source:target[:mode]`.
fn mounts(service: &Json) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let mut parts = v.as_str().unwrap().split(':');
            let source = parts.next().unwrap().to_owned();
            (source, parts.next().unwrap_or_default().to_owned())
        })
        .collect()
}

#[test]
fn compose_file_is_valid_and_runs_braid_on_its_kafka_with_prometheus_and_grafana() {
    let config = compose_config(None);
    let services: BTreeSet<&str> = config["services"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        services,
        BTreeSet::from([
            "kafka",
            "kafka-init",
            "braid",
            "produce",
            "prometheus",
            "grafana"
        ])
    );
    // The generator runs only with `--profile demo`.
    assert_eq!(config["services"]["produce"]["profiles"], json!(["demo"]));
    let with_demo = compose_config(Some("demo"));
    let kafka = &config["services"]["kafka"];
    assert!(
        kafka["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka:")
    );
    assert_eq!(
        kafka["environment"]["KAFKA_PROCESS_ROLES"], "broker,controller",
        "KRaft mode"
    );
    // Braid and the generator: the example config with the compose environment passes
    // `braid check`, and names the compose Kafka.
    for service in ["braid", "produce"] {
        let service = &with_demo["services"][service];
        let env: BTreeMap<String, String> = service["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(env["BRAID__KAFKA__BROKERS"], "kafka:9092");
        let (source, _) = mounts(service)
            .into_iter()
            .find(|(_, target)| target == "/etc/braid/braid.toml")
            .expect("the config is mounted");
        let out = braid_check(Path::new(&source), &env);
        assert!(out.contains("config OK"), "{out}");
    }
    let build = &config["services"]["braid"]["build"];
    let context = Path::new(build["context"].as_str().unwrap());
    assert!(
        context
            .join(build["dockerfile"].as_str().unwrap())
            .is_file()
    );
    // Prometheus and Grafana get Braid's files.
    let mounted = |service: &str| -> Vec<String> {
        mounts(&config["services"][service])
            .into_iter()
            .map(|(source, _)| source)
            .collect()
    };
    assert!(
        mounted("prometheus")
            .iter()
            .any(|s| Path::new(s).join("alerts.yml").is_file())
    );
    assert!(
        mounted("grafana")
            .iter()
            .any(|s| Path::new(s).join("braid-pipeline.json").is_file())
    );
    assert!(
        mounted("grafana")
            .iter()
            .any(|s| Path::new(s).join("datasources/prometheus.yml").is_file())
    );
}

#[test]
fn compose_validation_catches_a_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let text = read("deploy/docker-compose.yml").replace("stop_grace_period", "stop_grace_perod");
    std::fs::write(dir.path().join("docker-compose.yml"), text).unwrap();
    let out = run_failing(
        Command::new(venv("compose", "docker-compose"))
            .args(["-f", "docker-compose.yml", "config", "-q"])
            .current_dir(dir.path()),
    );
    assert!(out.contains("stop_grace_perod"), "{out}");
}

#[test]
fn dockerfile_builds_with_a_new_enough_rust_and_runs_as_non_root() {
    let text = read("Dockerfile");
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "multi-stage: {stages:?}");
    let rust = stages[0]
        .strip_prefix("FROM rust:")
        .and_then(|t| t.split('-').next())
        .expect("the build stage uses the official Rust image");
    let manifest = read("Cargo.toml");
    let needed = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        version(rust) >= version(needed),
        "the image's Rust {rust} is older than rust-version {needed}"
    );
    assert!(stages[1].contains("-slim"), "{}", stages[1]);
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert_ne!(user.split(':').next(), Some("0"));
    assert_ne!(user.split(':').next(), Some("root"));
    assert!(text.contains("cargo build --release --locked --bin braid"));
}

#[test]
fn the_binary_needs_only_libraries_of_the_slim_runtime_image() {
    // The runtime stage is debian:bookworm-slim plus zlib1g and libstdc++6: every shared
    // library the braid binary loads must come from a package that image has (the build stage
    // is bookworm too), or be DuckDB's library, which the image copies from the build stage
    // where scripts/install-deps.sh put it.
    let runtime = ["libc6", "libgcc-s1", "zlib1g", "libstdc++6"];
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("zlib1g libstdc++6"));
    assert!(dockerfile.contains("RUN scripts/install-deps.sh"));
    assert!(dockerfile.contains("COPY --from=build /opt/braid /opt/braid"));
    assert!(dockerfile.contains("/etc/ld.so.conf.d/braid-duckdb.conf"));
    let mut duckdb = 0;
    let ldd = run(Command::new("ldd").arg(env!("CARGO_BIN_EXE_braid")));
    let mut libraries = 0;
    for path in ldd.lines().filter_map(|l| {
        l.split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(str::to_owned)
    }) {
        if path.starts_with("/opt/braid/duckdb-") && path.ends_with("/libduckdb.so") {
            duckdb += 1;
            continue;
        }
        // With a merged /usr, dpkg may know the library under /usr only.
        let known = Command::new("dpkg").arg("-S").arg(&path).output().unwrap();
        let path = if known.status.success() {
            path
        } else {
            std::fs::canonicalize(&path)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        let owner = run(Command::new("dpkg").arg("-S").arg(&path))
            .split(':')
            .next()
            .unwrap()
            .to_owned();
        assert!(
            runtime.contains(&owner.as_str()),
            "{path} comes from {owner}, which the runtime image lacks"
        );
        libraries += 1;
    }
    assert!(libraries >= 3, "{ldd}");
    assert_eq!(duckdb, 1, "{ldd}");
}

#[test]
fn kubernetes_manifests_pass_strict_validation_and_carry_a_valid_config() {
    let documents = strictly_valid(
        "deploy/kubernetes/braid.yaml",
        &[
            "ConfigMap",
            "Secret",
            "PersistentVolumeClaim",
            "Deployment",
            "Service",
        ],
    );
    let by_kind = |kind: &str| documents.iter().find(|d| d["kind"] == kind).unwrap();
    // The ConfigMap holds the example config as it is, so the two never drift apart.
    let toml = by_kind("ConfigMap")["data"]["braid.toml"].as_str().unwrap();
    assert_eq!(toml, read("deploy/config/example.toml"));
    let pod = &by_kind("Deployment")["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let env = container_env(container, &[by_kind("Secret")]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("braid.toml");
    std::fs::write(&config, toml).unwrap();
    let out = braid_check(&config, &env);
    assert!(out.contains("config OK"), "{out}");
    // Probes, the scrape annotations and the Service all use the port Braid listens on.
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(env["BRAID__SERVE__LISTEN"], format!("0.0.0.0:{port}"));
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"],
        port.to_string()
    );
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/path"],
        "/metrics"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        by_kind("Service")["spec"]["ports"][0]["port"].as_u64(),
        Some(port)
    );
}

/// The documents of a manifest file that `kubernetes-validate --strict` passes one by one,
/// required to be of `kinds`, in order.
fn strictly_valid(file: &str, kinds: &[&str]) -> Vec<Json> {
    let path = root().join(file);
    let out = run(
        Command::new(venv("kubernetes-validate", "kubernetes-validate"))
            .args(["--strict", path.to_str().unwrap()]),
    );
    let documents = yaml_documents("kubernetes-validate", &read(file));
    let found: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(found, kinds);
    assert_eq!(
        out.matches(" passed for resource ").count(),
        kinds.len(),
        "{out}"
    );
    documents
}

/// The pod name a `metadata.name` field reference resolves to here.
const POD_NAME: &str = "braid-speed-0";

/// A container's environment, secrets resolved from `secrets` and the pod's name from its
/// field reference.
fn container_env(container: &Json, secrets: &[&Json]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().unwrap() {
        let value = match var["value"].as_str() {
            Some(value) => value.to_owned(),
            // The pod's own name, as Kubernetes fills it in.
            None if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" => {
                POD_NAME.to_owned()
            }
            None => {
                let reference = &var["valueFrom"]["secretKeyRef"];
                let secret = secrets
                    .iter()
                    .find(|s| s["metadata"]["name"] == reference["name"])
                    .expect("the referenced Secret is in the file");
                secret["stringData"][reference["key"].as_str().unwrap()]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        };
        env.insert(var["name"].as_str().unwrap().to_owned(), value);
    }
    env
}

#[test]
fn kubernetes_tiers_pass_strict_validation_and_wire_serving_to_every_speed_replica() {
    let documents = strictly_valid(
        "deploy/kubernetes/tiers.yaml",
        &[
            "ConfigMap",
            "Secret",
            "Secret",
            "Service",
            "StatefulSet",
            "Deployment",
            "Service",
            "Deployment",
            "CronJob",
        ],
    );
    let named = |kind: &str, name: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let toml = named("ConfigMap", "braid-tiers-config")["data"]["braid.toml"]
        .as_str()
        .unwrap();
    assert_eq!(toml, read("deploy/config/example.toml"));
    let secret = named("Secret", "braid-tiers-api-keys");
    let s3 = named("Secret", "braid-tiers-s3");

    let speed = named("StatefulSet", "braid-speed");
    let serve = named("Deployment", "braid-serve");
    let batch = named("Deployment", "braid-batch");
    let cron = named("CronJob", "braid-recompute");
    let pods = [
        (&speed["spec"]["template"]["spec"], "speed"),
        (&serve["spec"]["template"]["spec"], "serve"),
        (&batch["spec"]["template"]["spec"], "batch"),
        (&cron["spec"]["jobTemplate"]["spec"]["template"]["spec"], ""),
    ];
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("braid.toml");
    std::fs::write(&config, toml).unwrap();
    let mut envs = Vec::new();
    for (pod, layers) in pods {
        let container = &pod["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        if layers.is_empty() {
            assert!(
                args.contains(&"batch") && !args.contains(&"--layers"),
                "{args:?}"
            );
        } else {
            let at = args.iter().position(|a| *a == "--layers").unwrap();
            assert_eq!(args[at + 1], layers);
        }
        // Every tier on the one bucket, with its credentials, and nothing shared on disk: the
        // storage dir is the pod's own cache. A config `braid check` accepts.
        let volumes = pod["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .all(|v| v.get("persistentVolumeClaim").is_none()),
            "{layers}: {volumes:?}"
        );
        let data = volumes.iter().find(|v| v["name"] == "data").unwrap();
        assert_eq!(data["emptyDir"], json!({}), "{layers}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let env = container_env(container, &[secret, s3]);
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
            assert!(env.contains_key(key), "{layers}: no {key}");
        }
        let out = braid_check(&config, &env);
        assert!(out.contains("config OK"), "{layers}: {out}");
        assert!(
            out.contains("storage: url=s3://braid-data/braid"),
            "{layers}: {out}"
        );
        envs.push((env, out));
    }

    // The serving tier asks every speed replica, by its stable name, on the port it listens on.
    let speed_container = &speed["spec"]["template"]["spec"]["containers"][0];
    let port = speed_container["ports"][0]["containerPort"]
        .as_u64()
        .unwrap();
    assert_eq!(envs[0].0["BRAID__SPEED__LISTEN"], format!("0.0.0.0:{port}"));
    // Speed replicas join their groups as static members named after their pods (a restarted
    // pod takes its partitions back at once); `braid check` above accepted the name.
    assert_eq!(envs[0].0["BRAID__KAFKA__INSTANCE_ID"], POD_NAME);
    let headless = named("Service", speed["spec"]["serviceName"].as_str().unwrap());
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["ports"][0]["port"].as_u64(), Some(port));
    let replicas = speed["spec"]["replicas"].as_u64().unwrap();
    let peers: Vec<String> = (0..replicas)
        .map(|i| format!("braid-speed-{i}.braid-speed:{port}"))
        .collect();
    assert!(
        envs[1].1.contains(&format!(
            "speed cells from the speed peers {}",
            peers.join(", ")
        )),
        "{}",
        envs[1].1
    );
    // The scheduler leaves scheduled runs to the CronJob; one CronJob run at a time.
    assert!(envs[2].1.contains("interval=off"), "{}", envs[2].1);
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    // The public Service selects the serving pods.
    let service = named("Service", "braid");
    assert_eq!(
        service["spec"]["selector"],
        serve["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            .as_str()
            .map(|n| json!({ "app.kubernetes.io/name": n }))
            .unwrap()
    );
}

/// The sharded batch manifests: Indexed Jobs whose pod I runs shard I of as many shards as
/// completions, on the run named by its Job's uid; their arguments, as Kubernetes expands them,
/// run every shard of one run and publish it.
#[test]
fn kubernetes_sharded_batch_runs_a_shard_per_completion_index_and_publishes() {
    let documents = strictly_valid("deploy/kubernetes/batch-sharded.yaml", &["CronJob", "Job"]);
    let tiers = yaml_documents("kubernetes-validate", &read("deploy/kubernetes/tiers.yaml"));
    let config_map = tiers.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let s3 = tiers
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "braid-tiers-s3")
        .unwrap();
    let toml = config_map["data"]["braid.toml"].as_str().unwrap();
    for document in &documents {
        let spec = match document["kind"].as_str() {
            Some("CronJob") => {
                assert_eq!(document["spec"]["concurrencyPolicy"], "Forbid");
                &document["spec"]["jobTemplate"]["spec"]
            }
            _ => &document["spec"],
        };
        let kind = document["kind"].as_str().unwrap();
        assert_eq!(spec["completionMode"], "Indexed", "{kind}");
        let shards = spec["completions"].as_u64().unwrap();
        assert!(shards > 1);
        assert_eq!(spec["parallelism"].as_u64(), Some(shards), "{kind}");
        let pod = &spec["template"]["spec"];
        let volumes = pod["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .all(|v| v.get("persistentVolumeClaim").is_none())
        );
        assert_eq!(
            volumes.iter().find(|v| v["name"] == "config").unwrap()["configMap"]["name"],
            config_map["metadata"]["name"]
        );
        let container = &pod["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
        assert_eq!(after("--shards"), shards.to_string(), "{kind}");
        assert_eq!(after("--shard"), "$(BRAID_SHARD)");
        assert_eq!(after("--run"), "$(BRAID_RUN)");
        let env = container["env"].as_array().unwrap();
        let field = |name: &str| {
            env.iter().find(|v| v["name"] == name).unwrap()["valueFrom"]["fieldRef"]["fieldPath"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            field("BRAID_SHARD"),
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        assert_eq!(
            field("BRAID_RUN"),
            "metadata.labels['batch.kubernetes.io/controller-uid']"
        );
        let plain: Vec<&Json> = env
            .iter()
            .filter(|v| v["valueFrom"].get("fieldRef").is_none())
            .collect();
        let resolved = container_env(&json!({ "env": plain }), &[s3]);
        for key in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "BRAID__STORAGE__URL",
        ] {
            assert!(resolved.contains_key(key), "{kind}: no {key}");
        }

        // Every pod's arguments as Kubernetes expands them, on a local copy of the config
        // (no bucket here): all exit 0 and the last one publishes the run.
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("braid.toml");
        std::fs::write(&config, toml).unwrap();
        let uid = "6f1c2d3e-0a1b-4a4b-9c9d-123456789abc";
        let mut last = Json::Null;
        for index in 0..shards {
            let expanded: Vec<String> = args
                .iter()
                .map(|a| match *a {
                    "$(BRAID_SHARD)" => index.to_string(),
                    "$(BRAID_RUN)" => uid.to_owned(),
                    "/etc/braid/braid.toml" => config.display().to_string(),
                    other => other.to_owned(),
                })
                .collect();
            let output = Command::new(env!("CARGO_BIN_EXE_braid"))
                .args(&expanded)
                .env("BRAID__STORAGE__DIR", dir.path().join("data"))
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{expanded:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            last = serde_json::from_slice(&output.stdout).unwrap();
        }
        assert_eq!(last["outcome"], "merged", "{last}");
        assert_eq!(last["run"], uid);
        assert_eq!(last["record"]["state"], "succeeded", "{last}");
        assert_eq!(last["record"]["shards"].as_u64(), Some(shards));
    }
}

#[test]
fn kubernetes_validation_catches_a_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("braid.yaml");
    std::fs::write(
        &path,
        read("deploy/kubernetes/braid.yaml").replace("readinessProbe", "readynessProbe"),
    )
    .unwrap();
    let out = run_failing(
        Command::new(venv("kubernetes-validate", "kubernetes-validate"))
            .args(["--strict", path.to_str().unwrap()]),
    );
    assert!(out.contains("readynessProbe"), "{out}");
}

#[test]
fn grafana_dashboards_use_the_provisioned_data_source() {
    let datasources = yaml_documents(
        "compose",
        &read("deploy/grafana/provisioning/datasources/prometheus.yml"),
    );
    let uid = datasources[0]["datasources"][0]["uid"].as_str().unwrap();
    let mut uids = BTreeSet::new();
    let mut panels = 0;
    for name in ["pipeline", "serving", "business"] {
        let path = format!("deploy/grafana/dashboards/braid-{name}.json");
        let dashboard: Json = serde_json::from_str(&read(&path)).unwrap();
        assert!(uids.insert(dashboard["uid"].as_str().unwrap().to_owned()));
        for panel in dashboard["panels"].as_array().unwrap() {
            panels += 1;
            assert_eq!(
                panel["datasource"]["uid"], uid,
                "{path}: {}",
                panel["title"]
            );
            for target in panel["targets"].as_array().unwrap() {
                assert_eq!(target["datasource"]["uid"], uid);
                assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
            }
        }
    }
    assert!(panels >= 20, "{panels} panels");
    let providers = yaml_documents(
        "compose",
        &read("deploy/grafana/provisioning/dashboards/braid.yml"),
    );
    assert_eq!(
        providers[0]["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
}
