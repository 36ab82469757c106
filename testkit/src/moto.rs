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
        Self::try_start().unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`Moto::start`], or why the server could not be started.
    pub fn try_start() -> Result<Self, String> {
        let binary = tools_dir().join("moto").join("bin").join("moto_server");
        if !binary.is_file() {
            return Err(format!(
                "{} is missing: run scripts/install-deps.sh --tests",
                binary.display()
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for moto: {e}"))?
            .port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("moto_server does not start: {e}"))?;
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(format!("moto's S3 server did not listen on {port} in 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(moto)
    }

    /// Creates `bucket` (moto takes an unsigned bucket creation).
    pub fn create_bucket(&self, bucket: &str) {
        self.try_create_bucket(bucket)
            .unwrap_or_else(|why| panic!("{why}"));
    }

    /// [`Moto::create_bucket`], or why it failed.
    pub fn try_create_bucket(&self, bucket: &str) -> Result<(), String> {
        let response = ureq::put(&format!("{}/{bucket}", self.endpoint))
            .send_empty()
            .map_err(|e| format!("moto does not create bucket {bucket}: {e}"))?;
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(format!("moto answered {status} creating bucket {bucket}")),
        }
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
