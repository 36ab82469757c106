//! `braid bench speed` runs end to end on small sizes and reports every measurement. (What it
//! measures is for people to read; this only checks the command works.)

use std::process::Command;

#[test]
fn bench_speed_reports_every_measurement() {
    let output = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args([
            "bench",
            "speed",
            "--events",
            "3000",
            "--end-to-end-events",
            "3000",
        ])
        .env("BRAID_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "raw serde_json::Value parse:",
        "decode + apply, one core:",
        "with a concurrent reader:",
        "reads during ingest:",
        "end to end from embedded broker:",
        "memory per live count+sum cell:",
        "memory per live cell, all views:",
    ] {
        let found = stdout.lines().find(|l| l.trim_start().starts_with(line));
        let value = found.and_then(|l| l.trim_start()[line.len()..].split_whitespace().next());
        let number: f64 = value
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line} missing in\n{stdout}"));
        assert!(number > 0.0, "{line} reported {number}");
    }
}

#[test]
fn bench_speed_refuses_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[kafka]\nbrokers = \"\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["bench", "speed", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("kafka.brokers"));
}
