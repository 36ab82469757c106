//! `braid bench speed`, `braid bench batch` (beside DuckDB), `braid bench serve` (pinned, then through two speed peers) and `braid bench fraud` run end to end on
//! small sizes and report every measurement. (What they measure is for people to read; these
//! check the commands work, and that the fraud bench times exactly the alerts its bursts must
//! raise.)

use std::process::Command;

/// Runs `braid bench <args>`, which must succeed; its report.
fn bench(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("bench")
        .args(args)
        .env("BRAID_LOG", "error")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn bench_speed_reports_every_measurement() {
    // A peers folder without the scripts: each stream peer is named with why it did not run.
    let no_peers = tempfile::tempdir().unwrap();
    let stdout = bench(&[
        "speed",
        "--events",
        "3000",
        "--end-to-end-events",
        "3000",
        "--stream-peers",
        no_peers.path().to_str().unwrap(),
    ]);
    for peer in ["pathway", "bytewax"] {
        let line = format!("peer {peer}: did not run: no ");
        assert!(stdout.contains(&line), "{line} missing in\n{stdout}");
    }
    for line in [
        "raw serde_json::Value parse:",
        "decode + apply, one core:",
        "with a concurrent reader:",
        "reads during ingest:",
        "raw librdkafka consume, same topic:",
        "end to end from the broker:",
        "memory per live count+sum cell:",
    ] {
        let number = reported(&stdout, line);
        assert!(number > 0.0, "{line} reported {number}");
    }
    // At this size the views' state may fit in memory freed earlier: then it says so.
    let line = "memory per live cell, all views:";
    let measured = stdout
        .lines()
        .find(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("{line} missing in\n{stdout}"));
    assert!(
        measured.contains(" bytes (") || measured.contains("not measured: the "),
        "{measured}"
    );
    if measured.contains(" bytes (") {
        assert!(reported(&stdout, line) > 0.0, "{measured}");
    }
}

#[test]
fn bench_speed_formats_report_braid_beside_each_reference() {
    for (format, names) in [
        ("avro", &["avro"][..]),
        ("protobuf", &["protobuf"][..]),
        ("json-nested", &["json flat", "json nested"][..]),
    ] {
        let stdout = bench(&["speed", "--format", format, "--events", "3000"]);
        for name in names {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(name) && l.contains("reference")),
                "{name} missing in\n{stdout}"
            );
        }
        for line in ["decode alone", "decode + apply"] {
            assert!(reported(&stdout, line) > 0.0, "{line} in\n{stdout}");
        }
    }
}

/// The number a report line starting with `line` (after indentation) gives first.
fn reported(stdout: &str, line: &str) -> f64 {
    let found = stdout.lines().find(|l| l.trim_start().starts_with(line));
    let value = found.and_then(|l| l.trim_start()[line.len()..].split_whitespace().next());
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line} missing in\n{stdout}"))
}

#[test]
fn bench_batch_reports_braid_and_duckdb_over_the_same_files() {
    let stdout = bench(&["batch", "--events", "20000"]);
    for line in [
        "braid full recompute (all metrics, sketches included):",
        "exact aggregates only (count/sum/min/max/avg):",
        "with its own sketches too (approx_count_distinct, approx_quantile, approx_top_k):",
        "braid full recompute of the exact metrics only (sketches left out):",
        "braid incremental recompute of 200 new events (1%):",
    ] {
        let seconds = reported(&stdout, line);
        assert!(seconds > 0.0, "{line} reported {seconds}");
    }
    // Every view computed, with cells.
    for view in ["card_spend", "merchant_stats", "country_totals"] {
        let line = format!("{view}:");
        let cells = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&line) && l.ends_with(" cells"))
            .and_then(|l| l.rsplit(", ").next())
            .and_then(|c| c.trim_end_matches(" cells").parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{view}'s cells missing in\n{stdout}"));
        assert!(cells > 0, "{view}: {cells} cells");
    }
}

/// `--brokers`: the end-to-end run, its plain consumer and Braid on the stream peers' workload
/// read a topic the bench creates on a real broker (tansu, which creates no topic on use).
#[test]
fn bench_speed_runs_end_to_end_on_a_real_broker() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::free_port();
    let tansu = crate::common::tansu::Tansu::start(dir.path(), port);
    let no_peers = tempfile::tempdir().unwrap();
    let stdout = bench(&[
        "speed",
        "--events",
        "2000",
        "--end-to-end-events",
        "5000",
        "--brokers",
        &format!("127.0.0.1:{port}"),
        "--stream-peers",
        no_peers.path().to_str().unwrap(),
    ]);
    tansu.stop();
    for line in [
        "raw librdkafka consume, same topic:",
        "end to end from the broker:",
        "per card 1-minute count + sum:",
    ] {
        let number = reported(&stdout, line);
        assert!(number > 0.0, "{line} reported {number}");
    }
    assert!(stdout.contains("(5000 events)"), "{stdout}");
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

#[test]
fn bench_fraud_times_every_alert_of_its_bursts() {
    let stdout = bench(&[
        "fraud",
        "--events",
        "20000",
        "--rounds",
        "1",
        "--bursts",
        "3",
        "--rate",
        "100",
        "--seconds",
        "1",
        "--ingest-rate",
        "200",
    ]);
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("{start} missing in\n{stdout}"))
            .to_owned()
    };
    let throughput =
        line("speed layer end to end, 20000 events keyed by card_id over 2 partitions");
    assert!(
        throughput.contains("events/s scoring every event"),
        "{throughput}"
    );
    // The generator's fraud-like bursts alert in the throughput run too.
    let raised: usize = throughput
        .split(" alerts raised")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no alert count in {throughput}"));
    assert!(raised > 0, "{throughput}");
    // The example's rules alert from the 8th payment of a burst on: 5 of each burst's 12.
    for start in [
        "produced -> alert logged",
        "produced -> alert on the event stream",
    ] {
        let timed = line(start);
        assert!(timed.contains("over 15 (0 failed)"), "{timed}");
    }
    let score = line("POST /v1/fraud/score, 100 requests/s");
    assert!(score.contains("over 100 (0 failed)"), "{score}");
}

#[test]
fn bench_serve_pinned_reports_percentiles_of_every_query_kind_in_process_and_through_peers() {
    let stdout = bench(&[
        "serve",
        "--history",
        "3000",
        "--rate",
        "200",
        "--seconds",
        "1",
        "--ingest-rate",
        "100",
        "--freshness-samples",
        "5",
        "--pin",
        "--peers",
    ]);
    assert!(
        stdout.contains("pinned: the API's runtime alone on core"),
        "{stdout}"
    );
    for (start, count) in [
        ("point query (one card, 1 h), 200 requests/s", 200),
        (
            "range query (8 countries x 3 hours, sketches), 20 requests/s",
            20,
        ),
        ("POST /v1/fraud/score (one card), 20 requests/s", 20),
        (
            "point query (one card, 1 h) through 2 speed peers over HTTP, 200 requests/s",
            200,
        ),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("{start} missing in\n{stdout}"));
        assert!(line.contains(" p99.9 "), "{line}");
        assert!(line.contains(&format!("over {count} (0 failed)")), "{line}");
    }
    assert!(stdout.contains("freshness (produce -> visible in a merged answer)"));
    assert!(
        stdout.contains("added by the speed peers over HTTP: p50 "),
        "{stdout}"
    );
}

#[test]
fn bench_fraud_needs_a_fraud_section() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.toml");
    let example = include_str!("../../deploy/config/example.toml");
    let plain = &example[..example.find("[fraud]").unwrap()];
    std::fs::write(&path, plain).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["bench", "fraud", "--config", path.to_str().unwrap()])
        .env("BRAID_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no [fraud] section"), "{stderr}");
}

#[test]
fn bench_audit_reports_every_endpoint_and_checks_its_answers() {
    let stdout = bench(&[
        "audit",
        "--events",
        "40000",
        "--spacing-ms",
        "5000",
        "--requests",
        "5",
    ]);
    for line in [
        "lineage of one cell: p50 ",
        "page of 1,000 events, following the cursor (5000 listed): p50 ",
        "page of one key's events over a day (filter pushed into the scan): p50 ",
        "as-of answer over one day, recomputed from the archive: p50 ",
        "top 10 country by tx over a day: SQL over view_country_totals p50 ",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(line)),
            "{line} missing in\n{stdout}"
        );
    }
    assert!(stdout.contains("(0 failed)"), "{stdout}");
    assert!(!stdout.contains("failed:"), "{stdout}");
    assert!(
        stdout.contains("rows equal to the live answer: true"),
        "{stdout}"
    );
    assert!(stdout.contains("same top value: true"), "{stdout}");
}
