//! The tansu broker (installed by `scripts/install-deps.sh --tansu`) as a child process of a
//! test, and topics on it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tansu broker as a child process, storing in `tansu.db` of its working dir (tansu 0.6
/// mangles absolute SQLite paths).
pub struct Tansu {
    child: Child,
}

impl Tansu {
    pub fn start(dir: &Path, port: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .unwrap();
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start tansu ({e}); scripts/install-deps.sh --tansu installs it")
            });
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "tansu did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates `topic` with `partitions` partitions on the broker at `bootstrap`.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    braid_kafka::create_topic(bootstrap, topic, partitions, Duration::from_secs(10)).unwrap();
}
