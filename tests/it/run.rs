//! `braid run` as an operator runs it: against a broker, the speed and batch layers start, the
//! archive and a scheduled snapshot appear, and SIGTERM stops everything cleanly (exit 0).

use std::process::{Command, Stdio};
use std::time::Duration;

use braid_testkit::{cluster, payments, produce, producer, unique, wait_for};

#[test]
fn run_archives_publishes_snapshots_and_stops_on_sigterm() {
    let cluster = cluster(1);
    let topic = unique("payments");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, config) = braid_testkit::config(
        &cluster.bootstrap_servers(),
        &topic,
        &unique("group"),
        dir.path(),
        "",
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("interval = \"off\"", "interval = \"1s\"");
    std::fs::write(&path, text).unwrap();
    let messages = payments(61, 1_000, 2);
    produce(&producer(&cluster.bootstrap_servers()), &topic, &messages);

    let mut child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let storage = config.storage.dir.clone();
    let pointer = storage.join("batch/CURRENT.json");
    wait_for(
        "a scheduled snapshot covering the archive",
        Duration::from_secs(60),
        || {
            std::fs::read(&pointer)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|p| {
                    let covered: i64 = p["coverage"]
                        .as_object()
                        .map(|c| c.values().filter_map(|v| v.as_i64()).sum())
                        .unwrap_or(0);
                    covered >= 800
                })
        },
    );
    // The speed layer joins its group on its own schedule: a snapshot may be published before
    // it has applied (and checkpointed) its first events.
    let checkpoints = storage.join(format!("speed/checkpoints/{topic}"));
    wait_for("a speed-layer checkpoint", Duration::from_secs(30), || {
        checkpoints.exists()
    });

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "braid run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
