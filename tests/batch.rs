//! `braid batch` and `braid run` as an operator runs them: exit codes and what they print.

use std::process::{Command, Output};

fn braid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .output()
        .expect("braid runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("braid.toml");
    let toml = std::fs::read_to_string("deploy/config/example.toml")
        .unwrap()
        .replace(
            "dir = \"./braid-data\"",
            &format!("dir = \"{}\"", dir.join("data").display()),
        );
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn batch_on_an_empty_archive_publishes_an_empty_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());
    let output = braid(&["batch", "--config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(record["state"], "succeeded");
    assert_eq!(record["trigger"], "command");
    assert_eq!(record["views"]["card_spend"]["mode"], "full");
    let pointer = dir.path().join("data/batch/CURRENT.json");
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pointer).unwrap()).unwrap();
    assert_eq!(pointer["run_id"], record["id"]);

    // --full again; the history keeps both.
    let output = braid(&["batch", "--config", path.to_str().unwrap(), "--full"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let history = std::fs::read_dir(dir.path().join("data/batch/history"))
        .unwrap()
        .count();
    assert_eq!(history, 2);
}

#[test]
fn bad_config_or_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[batch]\nkeep_snapshots = 0\nflush_rows = 0\n").unwrap();
    let output = braid(&["batch", "--config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("batch.keep_snapshots: must be at least 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("batch.flush_rows: 0 is outside"),
        "{stderr}"
    );

    let output = braid(&["batch"]);
    assert_eq!(output.status.code(), Some(2), "--config is required");
    let missing = braid(&["batch", "--config", "/nonexistent/braid.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("/nonexistent/braid.toml"));

    let good = config(dir.path());
    let output = braid(&[
        "run",
        "--config",
        good.to_str().unwrap(),
        "--layers",
        "batch,nope",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("nope"),
        "{}",
        text(&output.stderr)
    );
}
