//! moto's S3 server, started by a test on 127.0.0.1 as `scripts/install-deps.sh --tests`
//! installs it (a virtualenv under `$BRAID_TOOLS_DIR`, default `~/.cache/braid-tools`), and
//! stopped when dropped. Each test makes its own bucket.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running moto S3 server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

/// The S3 options a client of this server needs (object_store's configuration keys).
pub const REGION: &str = "us-east-1";

impl Moto {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let binary = tools_dir().join("moto").join("bin").join("moto_server");
        assert!(
            binary.is_file(),
            "{} is missing: run scripts/install-deps.sh --tests",
            binary.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        crate::wait_for("moto's S3 server", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        moto
    }

    /// Creates `bucket` (moto takes an unsigned bucket creation).
    pub fn create_bucket(&self, bucket: &str) {
        let response = ureq::put(&format!("{}/{bucket}", self.endpoint))
            .send_empty()
            .expect("moto creates the bucket");
        assert_eq!(response.status(), 200);
    }

    /// object_store S3 options for this server.
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint.clone()),
            ("aws_allow_http", "true".to_owned()),
            ("aws_region", REGION.to_owned()),
            ("aws_access_key_id", "braid-test".to_owned()),
            ("aws_secret_access_key", "braid-test".to_owned()),
        ]
    }
}

impl Moto {
    /// The `AWS_*` environment of a Braid process that stores on this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "braid-test"),
            ("AWS_SECRET_ACCESS_KEY", "braid-test"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tools_dir() -> PathBuf {
    std::env::var_os("BRAID_TOOLS_DIR").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/braid-tools"),
        PathBuf::from,
    )
}
