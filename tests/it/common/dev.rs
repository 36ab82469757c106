//! `braid dev` as a child process: the addresses it prints, and a clean stop.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `braid dev`.
pub struct Dev {
    child: Child,
    /// What it printed before it was ready.
    pub printed: Vec<String>,
    /// `http://127.0.0.1:<port>/`, the dashboard.
    pub url: String,
    /// The embedded broker's bootstrap address.
    pub broker: String,
}

impl Dev {
    /// Starts `braid dev` with `args` on `port`, its log in `log` (or dropped); `env` adds
    /// `BRAID__*` overrides. Returns once it printed its addresses.
    pub fn start(args: &[&str], port: u16, env: &[(&str, String)], log: Option<&Path>) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_braid"))
            .arg("dev")
            .args(args)
            .env("BRAID__SERVE__LISTEN", format!("127.0.0.1:{port}"))
            .env("BRAID_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut printed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !printed.iter().any(|l: &String| l.contains("broker")) {
            let left = deadline.saturating_duration_since(Instant::now());
            printed.push(
                lines
                    .recv_timeout(left)
                    .expect("braid dev printed its addresses"),
            );
        }
        let broker = printed
            .iter()
            .find(|l| l.trim_start().starts_with("broker"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_owned();
        Self {
            child,
            printed,
            url: format!("http://127.0.0.1:{port}/"),
            broker,
        }
    }

    /// `braid dev` on the example config (`deploy/config/example.toml`) with `rate` generated
    /// events/s, storage under `dir/data`, its log in `dir/braid.log`; `env` adds overrides.
    pub fn example(dir: &Path, rate: u64, env: &[(&str, &str)]) -> Self {
        let config = super::tools::root().join("deploy/config/example.toml");
        let mut vars = vec![(
            "BRAID__STORAGE__DIR",
            dir.join("data").display().to_string(),
        )];
        vars.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Self::start(
            &[
                "--config",
                config.to_str().unwrap(),
                "--rate",
                &rate.to_string(),
            ],
            super::free_port(),
            &vars,
            Some(&dir.join("braid.log")),
        )
    }

    /// `http://127.0.0.1:<port>`, the API's base.
    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// SIGTERM; asserts a clean exit within 30 s.
    pub fn stop(mut self) {
        assert_eq!(super::terminate(&mut self.child).code(), Some(0));
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
