//! `braid check` as a user runs it: exit 0 and the resolved views for good configs, exit 2 and a
//! message naming the problem for broken ones.

use std::path::Path;
use std::process::{Command, Output};

fn braid(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_braid"));
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("braid runs")
}

fn check_file(dir: &Path, name: &str, toml: &str) -> Output {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    braid(&["check", "--config", path.to_str().unwrap()], &[])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn example_config_passes_and_lists_its_views() {
    let output = braid(&["check", "--config", "deploy/config/example.toml"], &[]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    for fragment in [
        "card_spend",
        "merchant_stats",
        "country_totals",
        "quantile(amount, 0.99)",
        "top_k(merchant_id, 5)",
        "config OK",
    ] {
        assert!(
            stdout.contains(fragment),
            "missing {fragment:?} in\n{stdout}"
        );
    }
    // Without --config, the built-in example is checked.
    let builtin = braid(&["check"], &[]);
    assert_eq!(builtin.status.code(), Some(0));
    assert_eq!(text(&builtin.stdout), stdout);
}

#[test]
fn environment_overrides_reach_the_check() {
    let output = braid(
        &["check", "--config", "deploy/config/example.toml"],
        &[
            ("BRAID__KAFKA__GROUP_ID", "audit"),
            ("BRAID__SERVE__LISTEN", "0.0.0.0:9000"),
        ],
    );
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout.contains("group_id=audit") && stdout.contains("listen=0.0.0.0:9000"),
        "{stdout}"
    );

    let output = braid(&["check"], &[("BRAID__BATCH__INTERVAL", "sometimes")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("batch.interval"));

    let output = braid(
        &["check"],
        &[
            ("BRAID__SERVE__SQL_TIMEOUT", "3s"),
            ("BRAID__SERVE__SQL_CONCURRENCY", "4"),
        ],
    );
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("SQL: 4 at once, interrupted after 3s"),
        "{stdout}"
    );
    for (key, value, named) in [
        ("BRAID__SERVE__SQL_TIMEOUT", "0s", "serve.sql_timeout"),
        ("BRAID__SERVE__SQL_TIMEOUT", "2h", "serve.sql_timeout"),
        (
            "BRAID__SERVE__SQL_CONCURRENCY",
            "0",
            "serve.sql_concurrency",
        ),
        (
            "BRAID__SERVE__SQL_CONCURRENCY",
            "65",
            "serve.sql_concurrency",
        ),
    ] {
        let output = braid(&["check"], &[(key, value)]);
        assert_eq!(output.status.code(), Some(2), "{key}={value}");
        assert!(
            text(&output.stderr).contains(named),
            "{key}={value}: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn broken_configs_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let example = include_str!("../../deploy/config/example.toml");
    let cases = [
        (
            "typo.toml",
            example.replace("group_id = ", "groupid = "),
            vec!["kafka.groupid", "unknown field"],
        ),
        (
            "source.toml",
            example.replace(
                "source = \"payments\"\ngroup_by = [\"merchant_id\"]",
                "source = \"paymnts\"\ngroup_by = [\"merchant_id\"]",
            ),
            vec!["view[merchant_stats].source", "\"paymnts\""],
        ),
        (
            "metric.toml",
            example.replace(
                "p99_amount = \"quantile(amount, 0.99)\"",
                "p99_amount = \"quantile(amount, 99)\"",
            ),
            vec!["p99_amount", "between 0 and 1"],
        ),
        (
            "field.toml",
            example.replace("sum(amount)", "sum(amonut)"),
            vec!["\"amonut\"", "does not declare"],
        ),
        (
            "type.toml",
            example.replace("max(amount)", "max(country)"),
            vec!["max(country)", "numeric"],
        ),
        (
            "granularity.toml",
            example.replace("granularity = \"1m\"", "granularity = \"7s\""),
            vec!["view[card_spend].granularity", "\"7s\""],
        ),
        (
            "reset.toml",
            example.replace(
                "group_id = \"braid\"\n",
                "group_id = \"braid\"\n\n[kafka.config]\n\"auto.offset.reset\" = \"earliest\"\n",
            ),
            vec!["kafka.config.\"auto.offset.reset\"", "never a skip"],
        ),
        (
            "url.toml",
            example.replace(
                "dir = \"./braid-data\"",
                "dir = \"./braid-data\"\nurl = \"https://bucket/x\"",
            ),
            vec![
                "storage.url",
                "\"https://bucket/x\" is not an s3://bucket/prefix URL",
            ],
        ),
        (
            "syntax.toml",
            "[kafka\n".to_owned(),
            vec!["TOML parse error", "syntax.toml"],
        ),
    ];
    for (name, toml, fragments) in cases {
        let output = check_file(dir.path(), name, &toml);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: stderr {stderr}");
        assert!(
            output.stdout.is_empty(),
            "{name}: printed a report for a broken config"
        );
        for fragment in fragments {
            assert!(
                stderr.contains(fragment),
                "{name}: {fragment:?} missing in\n{stderr}"
            );
        }
    }
    let missing = braid(&["check", "--config", "/nonexistent/braid.toml"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("/nonexistent/braid.toml"));
}

#[test]
fn usage_errors_exit_2_and_help_lists_only_working_commands() {
    assert_eq!(braid(&["chek"], &[]).status.code(), Some(2));
    assert_eq!(braid(&["check", "--bogus"], &[]).status.code(), Some(2));
    let help = text(&braid(&["--help"], &[]).stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "check", "run", "dev", "produce", "batch", "torture", "bench", "help"
        ]
    );
}

#[test]
fn run_and_produce_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("braid.toml");
    // The example names the embedded broker: only `braid dev` runs one.
    std::fs::write(&path, include_str!("../../deploy/config/example.toml")).unwrap();
    let config = path.to_str().unwrap();
    let run = braid(&["run", "--config", config], &[]);
    assert_eq!(run.status.code(), Some(2));
    assert!(text(&run.stderr).contains("braid dev"));
    let produce = braid(
        &["produce", "--config", config, "--source", "payments"],
        &[],
    );
    assert_eq!(produce.status.code(), Some(2));
    assert!(text(&produce.stderr).contains("needs a broker address"));
    let unknown = braid(&["produce", "--config", config, "--source", "clicks"], &[]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("\"clicks\" is not a source"));
    let late = braid(
        &[
            "produce",
            "--config",
            config,
            "--source",
            "payments",
            "--late-share",
            "1.5",
        ],
        &[],
    );
    assert_eq!(late.status.code(), Some(2));
    assert!(text(&late.stderr).contains("--late-share"));
    let layers = braid(&["run", "--config", config, "--layers", "speed,cache"], &[]);
    assert_eq!(layers.status.code(), Some(2));
    assert!(text(&layers.stderr).contains("cache"));
}

/// `braid check --storage` on a local folder and on an S3 bucket (moto's server): every
/// requirement met, and nothing left behind; on a bucket that does not exist, each failed
/// check is named and the exit code is 1.
#[test]
fn storage_check_runs_the_conformance_checks_against_the_configured_storage() {
    let example = include_str!("../../deploy/config/example.toml");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let local = example.replace(
        "dir = \"./braid-data\"",
        &format!("dir = \"{}\"", data.display()),
    );
    let path = dir.path().join("local.toml");
    std::fs::write(&path, &local).unwrap();
    let output = braid(
        &["check", "--storage", "--config", path.to_str().unwrap()],
        &[],
    );
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert_eq!(stdout.matches("\n  ok    ").count(), 7, "{stdout}");
    assert!(stdout.contains("a zombie writer is fenced"), "{stdout}");
    assert!(stdout.contains("storage OK"), "{stdout}");
    // Nothing left behind, not even the scratch folders.
    let left: Vec<_> = std::fs::read_dir(&data).map_or(Vec::new(), |d| d.flatten().collect());
    assert!(left.is_empty(), "{left:?}");

    let moto = braid_testkit::moto::Moto::start();
    let bucket = braid_testkit::unique("braid").to_lowercase();
    moto.create_bucket(&bucket);
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (url, code) in [
        (format!("s3://{bucket}/check"), 0),
        (format!("s3://{bucket}-missing/check"), 1),
    ] {
        let path = dir.path().join("s3.toml");
        std::fs::write(
            &path,
            local.replace("[storage]\n", &format!("[storage]\nurl = \"{url}\"\n")),
        )
        .unwrap();
        let output = braid(
            &["check", "--storage", "--config", path.to_str().unwrap()],
            &env,
        );
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(code), "{url}: {stdout}");
        assert!(stdout.contains(&format!("storage {url}:")), "{stdout}");
        if code == 0 {
            assert!(stdout.contains("storage OK"), "{stdout}");
        } else {
            assert!(stdout.contains("  FAIL  create once"), "{stdout}");
            assert!(stdout.contains("storage FAILED 7 of 7 checks"), "{stdout}");
        }
    }
}
