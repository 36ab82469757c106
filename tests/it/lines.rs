//! Log lines as sources: syslog written by util-linux `logger` (RFC 5424, with structured
//! data), logfmt and web access lines read by a regex, through both layers and HTTP, equal to
//! the oracle; bad lines rejected with their format's reason.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use braid_shared::Config;
use braid_testkit::{by_partition, cluster, unique};
use rand::{Rng as _, SeedableRng as _};

use crate::common::{Braid, Produced, Shape, free_port, get};
use crate::formats::{PARTITIONS, batch_run, complete_and_exact};

const START_MS: i64 = 1_790_000_000_000;

fn sources(syslog: &str, logfmt: &str, access: &str) -> String {
    format!(
        r#"
[[source]]
name = "syslog"
topic = "{syslog}"
format = "syslog"
event_time = "timestamp"

[[view]]
name = "by_app"
source = "syslog"
group_by = ["app", "severity", "sd.order_32473.kind"]
granularity = "1m"
[view.metrics]
lines = "count"
hosts = "approx_distinct(host)"

[[source]]
name = "logfmt"
topic = "{logfmt}"
format = "logfmt"
event_time = "ts"
time_format = "%Y-%m-%d %H:%M:%S%.3f"
time_zone = "Europe/Paris"

[[view]]
name = "by_level"
source = "logfmt"
group_by = ["level", "http_status"]
granularity = "1m"
[view.metrics]
lines = "count"
duration = "sum(duration_ms)"
slowest = "max(duration_ms)"

[[source]]
name = "access"
topic = "{access}"
format = "regex"
pattern = '^(?P<ip>\S+) \S+ \S+ \[(?P<ts>[^\]]+)\] "(?P<method>\w+) (?P<path>\S+) [^"]*" (?P<status>\d{{3}}) (?P<bytes>\d+)$'
event_time = "ts"
time_format = "%d/%b/%Y:%H:%M:%S %z"

[[view]]
name = "by_status"
source = "access"
group_by = ["status", "method"]
granularity = "1m"
[view.metrics]
requests = "count"
bytes = "sum(bytes)"
paths = "top_k(path, 3)"
"#
    )
}

/// Lines as `logger` writes them to a syslog socket, each given a time inside the oracle's
/// window (logger stamps the time it runs).
fn logger_lines(rng: &mut rand::rngs::StdRng, count: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut lines = Vec::new();
    for batch in 0..count / 50 {
        let app = format!("app{}", batch % 4);
        let priority =
            ["local4.notice", "user.err", "auth.crit", "daemon.info"][rng.random_range(0..4)];
        let kind = ["card", "wire", "cash"][rng.random_range(0..3)];
        let mut child = std::process::Command::new(crate::common::tools::system("logger"))
            .args([
                "-u",
                socket_path.to_str().unwrap(),
                "--rfc5424",
                "-t",
                &app,
                "-p",
                priority,
            ])
            .args([
                "--sd-id",
                "order@32473",
                "--sd-param",
                &format!("kind=\"{kind}\""),
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let text: String = (0..50).map(|i| format!("paid {i}\n")).collect();
        // Written and closed before reading: logger sends as the socket's short queue drains.
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, text.as_bytes()).unwrap();
        drop(stdin);
        let mut buffer = [0u8; 4096];
        for _ in 0..50 {
            let n = socket.recv(&mut buffer).expect("a line from logger");
            let line = String::from_utf8_lossy(&buffer[..n]).into_owned();
            // `<PRI>1 TIMESTAMP HOST ...`: the timestamp replaced, the rest as logger wrote it.
            let mut parts: Vec<&str> = line.splitn(3, ' ').collect();
            let ms = START_MS + rng.random_range(-600_000..600_000);
            let time = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            parts[1] = &time;
            let host = format!("h{}", rng.random_range(0..5));
            let rest = parts[2].split_once(' ').map(|(_, rest)| rest).unwrap();
            lines.push(format!("{} {} {host} {rest}", parts[0], parts[1]));
        }
        assert!(child.wait().unwrap().success());
    }
    lines
}

fn logfmt_line(rng: &mut rand::rngs::StdRng, i: usize) -> String {
    let ms = START_MS + rng.random_range(-600_000..600_000);
    let paris = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .with_timezone(&chrono_tz::Europe::Paris);
    let level = ["info", "warn", "error"][rng.random_range(0..3)];
    let status = [200, 404, 503][rng.random_range(0..3)];
    format!(
        r#"ts="{}" level={level} http.status={status} duration_ms={}.{} msg="request {i} done" cached"#,
        paris.format("%Y-%m-%d %H:%M:%S%.3f"),
        rng.random_range(0..900),
        rng.random_range(0..10)
    )
}

fn access_line(rng: &mut rand::rngs::StdRng) -> String {
    let ms = START_MS + rng.random_range(-600_000..600_000);
    let time = chrono::DateTime::from_timestamp_millis(ms / 1000 * 1000)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::west_opt(7 * 3600).unwrap());
    format!(
        r#"10.0.0.{} - - [{}] "{} /p{} HTTP/1.1" {} {}"#,
        rng.random_range(1..20),
        time.format("%d/%b/%Y:%H:%M:%S %z"),
        ["GET", "POST"][rng.random_range(0..2)],
        rng.random_range(0..6),
        [200, 301, 404][rng.random_range(0..3)],
        rng.random_range(0..10_000)
    )
}

fn produced(
    rng: &mut rand::rngs::StdRng,
    lines: Vec<String>,
    bad: &[&str],
) -> Vec<braid_testkit::Produced> {
    let mut all: Vec<Vec<u8>> = lines.into_iter().map(String::into_bytes).collect();
    for line in bad {
        let at = rng.random_range(0..all.len());
        all.insert(at, line.as_bytes().to_vec());
    }
    all.into_iter()
        .map(|payload| braid_testkit::Produced {
            partition: rng.random_range(0..PARTITIONS),
            payload,
        })
        .collect()
}

fn shape(view: &'static str) -> Shape {
    Shape {
        view,
        params: "",
        keep: None,
        step_ms: Some(300_000),
        filters: &[],
    }
}

#[test]
fn syslog_logfmt_and_regex_lines_answer_exactly_in_both_layers() {
    let cluster = cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    let topics = [unique("syslog"), unique("logfmt"), unique("access")];
    for topic in &topics {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = braid_testkit::config(&bootstrap, &topics[0], &unique("group"), dir.path(), "");
    let base = std::fs::read_to_string(&path).unwrap();
    let text = format!(
        "{}{}",
        &base[..base.find("[[source]]").unwrap()],
        sources(&topics[0], &topics[1], &topics[2])
    );
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml(&text).unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(37);
    let syslog = produced(
        &mut rng,
        logger_lines(&mut rand::rngs::StdRng::seed_from_u64(1), 1_000),
        &[
            "<999>1 2026-09-21T12:00:00Z h app - - - bad priority",
            "not syslog at all",
        ],
    );
    let logfmt_lines = (0..3_000).map(|i| logfmt_line(&mut rng, i)).collect();
    let logfmt = produced(
        &mut rng,
        logfmt_lines,
        &[
            r#"ts="2026-09-21 12:00:00.000 level=warn"#,
            "ts=noon level=x",
        ],
    );
    let access_lines = (0..3_000).map(|_| access_line(&mut rng)).collect();
    let access = produced(&mut rng, access_lines, &["GET / HTTP/1.1", ""]);

    let braid = Braid::start(&path, free_port());
    let producer = braid_testkit::producer(&bootstrap);
    let cases = [
        (
            "syslog",
            &topics[0],
            &syslog,
            "by_app",
            ["syslog_parse", "syslog_parse"],
        ),
        (
            "logfmt",
            &topics[1],
            &logfmt,
            "by_level",
            ["logfmt_parse", "invalid_event_time"],
        ),
        (
            "access",
            &topics[2],
            &access,
            "by_status",
            ["regex_no_match", "regex_no_match"],
        ),
    ];
    for (_, topic, messages, _, _) in &cases {
        braid_testkit::produce(&producer, topic, messages);
    }
    let mut run = None;
    for round in 0..2 {
        for (source, topic, messages, view, _) in &cases {
            let partitions = by_partition(messages, PARTITIONS);
            let produced = Produced::new(&config, source, &partitions);
            complete_and_exact(
                &braid,
                &config,
                topic,
                &produced,
                &shape(view),
                run.as_deref(),
            );
        }
        if round == 0 {
            run = Some(batch_run(&braid));
        }
    }
    for (source, _, _, _, reasons) in &cases {
        let listed = get(&format!("{}/v1/rejected/{source}", braid.base)).1;
        let mut found: Vec<&str> = listed["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["reason"]["reason"].as_str().unwrap_or_default())
            .collect();
        found.sort_unstable();
        let mut expected = reasons.to_vec();
        expected.sort_unstable();
        assert_eq!(found, expected, "{listed}");
    }
    braid.stop();
}
