//! Helpers of the end-to-end tests: `braid run` as a child process, its HTTP API, and the
//! independent reference an answer must equal.

#![allow(dead_code)]

pub mod alerts;
pub mod dev;
pub mod tansu;
pub mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_shared::aggregate::MetricState;
use braid_shared::{Config, Decoder, Event, Value, ViewState};
use serde_json::Value as Json;

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `braid run` (all layers) as a child process, its log in the storage dir.
pub struct Braid {
    child: Child,
    config: PathBuf,
    pub base: String,
    log: PathBuf,
    starts: usize,
    /// Extra environment of the process (`AWS_*` for object storage).
    env: Vec<(String, String)>,
}

impl Braid {
    /// Writes `port` into the config at `path` and starts `braid run`.
    pub fn start(path: &Path, port: u16) -> Self {
        Self::start_with_env(path, port, &[])
    }

    /// [`Braid::start`] with `env` added to the process's environment (restarts keep it).
    pub fn start_with_env(path: &Path, port: u16, env: &[(String, String)]) -> Self {
        let text = std::fs::read_to_string(path).unwrap().replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        std::fs::write(path, text).unwrap();
        let log = path.with_file_name("braid.log");
        let mut braid = Self {
            child: spawn(path, &log, env),
            config: path.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            log,
            starts: 1,
            env: env.to_vec(),
        };
        braid.wait_ready();
        braid
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "braid exited with {status} while starting:\n{}",
                    self.log_tail()
                );
            }
            if get(&format!("{}/readyz", self.base)).0 == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "braid was not ready in time:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, then a fresh process on the same config and port.
    pub fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.starts += 1;
        self.child = spawn(&self.config, &self.log, &self.env);
        self.wait_ready();
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "braid did not exit:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM; asserts a clean exit.
    pub fn stop(mut self) {
        let status = terminate(&mut self.child);
        assert_eq!(status.code(), Some(0), "{}", self.log_tail());
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = (text.len().saturating_sub(6000)..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for Braid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM to `child`; its exit status, which must come within 30 s.
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "braid did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(config: &Path, log: &Path, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("BRAID_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET: status and JSON body (status 0 when nothing answers).
pub fn get(url: &str) -> (u16, Json) {
    match agent().get(url).call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response.body_mut().read_json().unwrap_or(Json::Null);
            (status, body)
        }
        Err(_) => (0, Json::Null),
    }
}

pub fn post(url: &str, body: &str) -> (u16, Json) {
    match agent()
        .post(url)
        .header("content-type", "application/json")
        .send(body)
    {
        Ok(mut response) => {
            let status = response.status().as_u16();
            (
                status,
                response.body_mut().read_json().unwrap_or(Json::Null),
            )
        }
        Err(_) => (0, Json::Null),
    }
}

/// One query the tests ask again and again.
pub struct Shape {
    pub view: &'static str,
    /// Extra parameters: filters, `group_by`.
    pub params: &'static str,
    /// Group-by fields kept (`None`: all of the view's).
    pub keep: Option<&'static [&'static str]>,
    pub step_ms: Option<i64>,
    /// Required group values (the filters of `params`).
    pub filters: &'static [(&'static str, &'static str)],
}

/// Every country, per hour.
pub const COUNTRY_HOURS: Shape = Shape {
    view: "country_hour",
    params: "",
    keep: None,
    step_ms: Some(3_600_000),
    filters: &[],
};

/// Every card merged away: one total per bucket.
pub const CARD_TOTALS: Shape = Shape {
    view: "card_minute",
    params: "&group_by=",
    keep: Some(&[]),
    step_ms: None,
    filters: &[],
};

/// One card, its minutes re-bucketed to 10 minutes: a point query (every group-by field
/// filtered), answered by folding the key's cells as they are visited.
pub const ONE_CARD: Shape = Shape {
    view: "card_minute",
    params: "&card_id=card-7",
    keep: None,
    step_ms: Some(600_000),
    filters: &[("card_id", "card-7")],
};

pub const FROM_MS: i64 = 1_789_900_000_000;
pub const TO_MS: i64 = 1_790_100_000_000;

impl Shape {
    pub fn url(&self, base: &str) -> String {
        let step = self
            .step_ms
            .map(|ms| format!("&step={}s", ms / 1000))
            .unwrap_or_default();
        format!(
            "{base}/v1/views/{}?from={FROM_MS}&to={TO_MS}{step}{}",
            self.view, self.params
        )
    }
}

/// The messages of each partition in offset order, decoded once.
pub struct Produced {
    pub partitions: Vec<Vec<Option<Event>>>,
}

impl Produced {
    pub fn new(config: &Config, source: &str, partitions: &[Vec<Vec<u8>>]) -> Self {
        let decoder = Decoder::new(config.source(source).unwrap());
        Self {
            partitions: partitions
                .iter()
                .map(|p| p.iter().map(|m| decoder.decode(m).ok()).collect())
                .collect(),
        }
    }

    pub fn len(&self, partition: usize) -> i64 {
        self.partitions[partition].len() as i64
    }

    pub fn rejected(&self) -> usize {
        self.partitions
            .iter()
            .flatten()
            .filter(|e| e.is_none())
            .count()
    }
}

/// Checks an answer against the reference over exactly the offsets its provenance names:
/// a plain fold of the produced events, regrouped as the query asks.
pub fn assert_exact(
    config: &Config,
    topic: &str,
    produced: &Produced,
    shape: &Shape,
    answer: &Json,
) {
    let offsets = &answer["provenance"]["offsets"];
    let view = Arc::clone(config.view(shape.view).unwrap());
    let mut events = Vec::new();
    for (p, messages) in produced.partitions.iter().enumerate() {
        let upto = offsets[format!("{topic}/{p}")].as_i64().unwrap_or(0);
        assert!(
            upto <= messages.len() as i64,
            "answer claims offset {upto} of partition {p}, only {} were produced",
            messages.len()
        );
        events.extend(messages[..upto as usize].iter().flatten().cloned());
    }
    let reference = ViewState::recompute(Arc::clone(&view), &events);
    let expected = regroup(&reference, shape);
    let got = answer["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {answer}"));
    assert_eq!(
        got.len(),
        expected.len(),
        "{}: {} rows, expected {} (offsets {offsets})",
        shape.view,
        got.len(),
        expected.len()
    );
    for (got, expected) in got.iter().zip(&expected) {
        if let Err(difference) = same(got, expected, "") {
            panic!(
                "{} {}: {difference}\n got      {got}\n expected {expected}\n offsets {offsets}",
                shape.view, shape.params
            );
        }
    }
}

/// The reference's rows as the API shapes them.
fn regroup(state: &ViewState, shape: &Shape) -> Vec<Json> {
    let view = state.view();
    let kept: Vec<usize> = match shape.keep {
        None => (0..view.group_by.len()).collect(),
        Some(names) => view
            .group_by
            .iter()
            .enumerate()
            .filter(|(_, f)| names.contains(&f.name.as_str()))
            .map(|(i, _)| i)
            .collect(),
    };
    let mut groups: BTreeMap<(i64, Vec<Value>), Vec<MetricState>> = BTreeMap::new();
    for (key, states) in state.cells() {
        if key.bucket_ms < FROM_MS || key.bucket_ms >= TO_MS {
            continue;
        }
        let wanted = shape.filters.iter().all(|(field, value)| {
            let i = view.group_by.iter().position(|f| f.name == *field).unwrap();
            key.group.0[i] == Value::Str((*value).into())
        });
        if !wanted {
            continue;
        }
        let bucket = shape.step_ms.map_or(FROM_MS, |step| {
            key.bucket_ms - key.bucket_ms.rem_euclid(step)
        });
        let group = kept.iter().map(|&i| key.group.0[i].clone()).collect();
        match groups.entry((bucket, group)) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(states.to_vec());
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                for (into, from) in slot.get_mut().iter_mut().zip(states) {
                    into.merge(from).unwrap();
                }
            }
        }
    }
    groups
        .into_iter()
        .map(|((bucket, group), states)| {
            let mut row = serde_json::Map::new();
            row.insert(
                "bucket".into(),
                chrono::DateTime::from_timestamp_millis(bucket)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into(),
            );
            for (&i, value) in kept.iter().zip(&group) {
                row.insert(view.group_by[i].name.clone(), value.to_json());
            }
            for (metric, state) in view.metrics.iter().zip(&states) {
                row.insert(metric.name.clone(), state.finalize(&metric.expr));
            }
            Json::Object(row)
        })
        .collect()
}

/// Equal JSON, with floats to 1e-9 relative.
pub fn same(got: &Json, expected: &Json, at: &str) -> Result<(), String> {
    match (got, expected) {
        (Json::Number(a), Json::Number(b)) => {
            if a == b {
                return Ok(());
            }
            let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            let ok = (a.is_f64() || b.is_f64())
                && (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-300);
            if ok {
                Ok(())
            } else {
                Err(format!("{at}: {a} != {b}"))
            }
        }
        (Json::Object(a), Json::Object(b)) => {
            if a.len() != b.len() {
                return Err(format!("{at}: fields {:?} != {:?}", a.keys(), b.keys()));
            }
            for (key, value) in b {
                same(
                    a.get(key).unwrap_or(&Json::Null),
                    value,
                    &format!("{at}.{key}"),
                )?;
            }
            Ok(())
        }
        (Json::Array(a), Json::Array(b)) => {
            if a.len() != b.len() {
                return Err(format!("{at}: {} items != {}", a.len(), b.len()));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                same(x, y, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (a, b) if a == b => Ok(()),
        (a, b) => Err(format!("{at}: {a} != {b}")),
    }
}
