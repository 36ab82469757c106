//! Helpers of the end-to-end tests: `braid run` as a child process, its HTTP API, and the
//! independent reference an answer must equal.

#![allow(dead_code)]

pub mod alerts;
pub mod dev;
pub mod tansu;
pub mod tools;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use braid_shared::Config;
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

pub use braid_testkit::oracle::{CARD_TOTALS, COUNTRY_HOURS, ONE_CARD, Produced, Shape, same};

/// Fails with the first difference when `answer` is not the reference over exactly the offsets
/// its provenance names (see [`braid_testkit::oracle::check_exact`]).
pub fn assert_exact(
    config: &Config,
    topic: &str,
    produced: &Produced,
    shape: &Shape,
    answer: &Json,
) {
    if let Err(difference) =
        braid_testkit::oracle::check_exact(config, topic, produced, shape, answer)
    {
        panic!("{difference}");
    }
}
