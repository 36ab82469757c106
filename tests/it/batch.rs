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

/// Shards started together on one run: each exits 0, one merges and publishes (on an empty
/// archive every shard has nothing to read, and the snapshot is empty), the others wait or
/// see it merged.
#[test]
fn shards_started_together_publish_one_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());
    let path = path.to_str().unwrap();
    let children: Vec<std::process::Child> = (0..3)
        .map(|shard| {
            Command::new(env!("CARGO_BIN_EXE_braid"))
                .args(["batch", "--config", path, "--shards", "3", "--run", "job-1"])
                .args(["--shard", &shard.to_string()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut merged = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let outcome: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(outcome["run"], "job-1");
        match outcome["outcome"].as_str() {
            Some("merged") => {
                assert_eq!(outcome["record"]["state"], "succeeded", "{outcome}");
                merged.push(outcome["record"]["id"].clone());
            }
            Some("waiting") => assert!(!outcome["waiting_for"].as_array().unwrap().is_empty()),
            _ => panic!("{outcome}"),
        }
    }
    merged.dedup();
    assert_eq!(merged.len(), 1, "{merged:?}");
    let pointer = dir.path().join("data/batch/CURRENT.json");
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pointer).unwrap()).unwrap();
    assert_eq!(pointer["run_id"], merged[0]);

    // --merge on the merged run prints its record again.
    let output = braid(&["batch", "--config", path, "--merge", "--run", "job-1"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let outcome: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["record"]["id"], merged[0]);
}

#[test]
fn bad_shard_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());
    let path = path.to_str().unwrap();
    for (args, says) in [
        (vec!["--shards", "3"], "--shards needs --shard I"),
        (
            vec!["--shards", "3", "--shard", "3"],
            "--shard 3 is out of range: shards are 0 to 2",
        ),
        (vec!["--shard", "1"], "give --shards N too"),
        (vec!["--run", "x"], "give --shards N too"),
        (vec!["--merge"], "--merge needs the run"),
        (
            vec!["--shards", "0", "--shard", "0"],
            "0 is not in 1..=4096",
        ),
        (
            vec!["--merge", "--shard", "1", "--run", "x"],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["batch", "--config", path];
        all.extend(&args);
        let output = braid(&all);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // A run that was never started, and a name that is no storage key: exit 1, named.
    let output = braid(&["batch", "--config", path, "--merge", "--run", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("no sharded run \"nope\" was started"),
        "{}",
        text(&output.stderr)
    );
    let long = format!("../{}", "x".repeat(5000));
    let output = braid(&[
        "batch", "--config", path, "--shards", "2", "--shard", "0", "--run", &long,
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("run name") && stderr.len() < 400,
        "{stderr}"
    );
    assert!(!dir.path().join("data/batch/sharded").exists());
}
