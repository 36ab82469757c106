//! The torture suite's fixed share of every CI run: a dozen seeded scenarios (`braid torture`
//! with its workload, processes and fault schedule per seed) on librdkafka's mock cluster,
//! each checked against the oracle and for liveness. A failure prints the seed and its
//! schedule; `braid torture --seed N` replays it.

use std::process::Command;

use serde_json::Value as Json;

/// The CI share: seeds chosen once, never changed to make a failure go away.
const FIRST_SEED: u64 = 9_000;
const SCENARIOS: u64 = 12;

#[test]
fn a_dozen_seeded_fault_scenarios_answer_exactly_and_recover() {
    let (first, scenarios) = (FIRST_SEED.to_string(), SCENARIOS.to_string());
    let (report, summary) = torture(&["--first", &first, "--scenarios", &scenarios]);
    assert_eq!(summary["scenarios"], SCENARIOS, "{report}");
    assert_eq!(summary["passed"], SCENARIOS, "{report}");
    assert!(summary["failed"].as_array().unwrap().is_empty(), "{report}");
    // Every scenario's answers were really compared, and faults really struck.
    assert!(
        summary["answers_checked"].as_u64().unwrap() >= SCENARIOS * 20,
        "{report}"
    );
    assert!(
        summary["rows_checked"].as_u64().unwrap() > summary["answers_checked"].as_u64().unwrap(),
        "{report}"
    );
    let faults: u64 = summary["faults"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(faults >= SCENARIOS * 2, "{report}");
    assert_eq!(summary["recovery"]["count"], SCENARIOS, "{report}");
}

/// Seeds that found bugs, kept as regression tests: 100001 (after a crash and a broker outage,
/// the restarted archiver's group join waited minutes for a coordinator that never answered)
/// and 100005 (a serving process asked a hung broker for the topic's partitions on every query
/// and answered nothing for a minute), and 100264 (a sharded run swept by a newer one failed
/// its merge with a missing file, not as abandoned). They found them when an outage took the mock broker
/// down; outages now stall it instead (see `torture/src/run.rs`), the same faults to a client.
#[test]
fn the_seeds_that_found_bugs_pass() {
    let (report, _) = torture(&["--seeds", "100001,100005,100264"]);
    assert!(report.contains("3 scenarios from seed 100001"), "{report}");
    assert!(report.contains("3 passed, 0 failed"), "{report}");
}

/// Seeds that left partitions held by no live instance on a tansu broker for the rest of the
/// run while the layers shared them through Kafka consumer groups (200006: a speed instance
/// killed and another paused; 200008: a single `braid run` killed twice): with partition
/// leases, the restarted process takes its partitions back at once.
#[test]
fn tansu_seeds_whose_partitions_went_unowned_recover() {
    let (report, summary) = torture(&["--seeds", "200006,200008", "--tansu-share", "1"]);
    assert!(report.contains("2 passed, 0 failed"), "{report}");
    // The kills struck, and every partition was owned and caught up again after them.
    let kills = summary["faults"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(kind, _)| kind.contains("kill"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum::<u64>();
    assert!(kills >= 2, "{report}");
    assert_eq!(summary["recovery"]["count"], 2, "{report}");
}

/// Payments written in Avro (9103) and Protobuf (9105) through a schema registry, a second
/// schema version mid-stream, and registry outages that each process waits out (nothing
/// rejected for them): every answer exact, every process caught up after.
#[test]
fn registry_format_seeds_wait_out_registry_outages() {
    let (report, summary) = torture(&["--seeds", "9103,9105", "--registry-share", "1"]);
    assert!(report.contains("2 passed, 0 failed"), "{report}");
    for format in ["format: Avro (registry)", "format: Protobuf (registry)"] {
        assert_eq!(summary["settings"][format], 1, "{report}");
    }
    assert!(
        summary["faults"]["schema registry outage"].as_u64() >= Some(3),
        "{report}"
    );
}

/// Runs `braid torture` with `args`, two scenarios at a time, in a folder of its own; asserts
/// that it passed. Its report (what it printed) and its summary.
fn torture(args: &[&str]) -> (String, Json) {
    let dir = tempfile::tempdir().unwrap();
    let summary_path = dir.path().join("summary.json");
    let output = Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("torture")
        .args(args)
        .args(["--jobs", "2", "--dir"])
        .arg(dir.path().join("scenarios"))
        .arg("--summary")
        .arg(&summary_path)
        .output()
        .unwrap();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    let summary = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    (report, summary)
}

/// A seed is a scenario: the same seed draws the same workload and schedule, so a failure
/// replays; the sweep's summary names each fault kind it struck with.
#[test]
fn a_seed_replays_its_scenario() {
    use braid_torture::scenario::{Scenario, Shares};
    let (a, b) = (
        Scenario::draw(77, &Shares::default()),
        Scenario::draw(77, &Shares::default()),
    );
    assert_eq!(a.to_string(), b.to_string());
    assert_eq!(a.schedule, b.schedule);
    assert!(
        a.messages
            .iter()
            .zip(&b.messages)
            .all(|(x, y)| x.payload == y.payload && x.partition == y.partition)
    );
    assert_ne!(
        Scenario::draw(78, &Shares::default()).to_string(),
        a.to_string()
    );
}
