//! The outside tools the deploy and observability tests run, as `scripts/install-deps.sh
//! --tests` installs them: Debian's `prometheus`, `promtool` and `chromium` on the PATH, and the
//! Python validators in virtualenvs under `$BRAID_TOOLS_DIR` (default `~/.cache/braid-tools`).
//! A missing tool fails the test with the command that installs it; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tools_dir() -> PathBuf {
    std::env::var_os("BRAID_TOOLS_DIR").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/braid-tools"),
        PathBuf::from,
    )
}

/// A command on the PATH.
pub fn system(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: run scripts/install-deps.sh --tests"))
}

/// `bin/<name>` of the virtualenv `venv`.
pub fn venv(venv: &str, name: &str) -> PathBuf {
    let path = tools_dir().join(venv).join("bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-deps.sh --tests",
        path.display()
    );
    path
}

/// Runs `command`, requires success, returns its standard output.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `command`, requires failure, returns standard output and error together.
pub fn run_failing(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        !output.status.success(),
        "{command:?} succeeded where it must fail:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every document of a YAML text as JSON, read by the PyYAML of the virtualenv `venv`.
pub fn yaml_documents(venv_name: &str, yaml: &str) -> Vec<Json> {
    let mut child = Command::new(venv(venv_name, "python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "not YAML:\n{yaml}");
    match serde_json::from_slice(&output.stdout).unwrap() {
        Json::Array(documents) => documents.into_iter().filter(|d| !d.is_null()).collect(),
        other => panic!("not a list of documents: {other}"),
    }
}
