//! The audit trail, end to end with `braid run` on librdkafka's mock cluster: a cell's lineage
//! names exactly the archive files and offset ranges (and the speed layer's ranges) whose events
//! fold into its value, whether the cell is fed by the speed layer only, by the batch layer only
//! or by both, across a snapshot swap and after the archive compacted the files it names.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{Braid, free_port, get, post, same};
use braid_shared::{Config, Event, Value, ViewState};
use braid_testkit::{by_partition, fixture, payments, producer, wait_for};
use serde_json::Value as Json;

const PARTITIONS: i32 = 3;
const MINUTE: i64 = 60_000;

/// Every message produced so far, per partition in offset order, decoded.
struct Log {
    partitions: Vec<Vec<Option<Event>>>,
}

impl Log {
    fn new() -> Self {
        Self {
            partitions: vec![Vec::new(); PARTITIONS as usize],
        }
    }

    fn push(&mut self, config: &Config, messages: &[braid_testkit::Produced]) {
        let decoder = braid_shared::Decoder::new(config.source("payments").unwrap());
        for (p, payloads) in by_partition(messages, PARTITIONS).iter().enumerate() {
            self.partitions[p].extend(payloads.iter().map(|m| decoder.decode(m).ok()));
        }
    }

    fn event(&self, partition: i32, offset: i64) -> Option<&Event> {
        self.partitions[partition as usize][offset as usize].as_ref()
    }

    /// The offsets in `[from, to)` of `partition` holding an event of the cell.
    fn cell_offsets(&self, cell: &Cell, partition: i32, from: i64, to: i64) -> Vec<(i32, i64)> {
        (from..to)
            .filter(|&o| self.event(partition, o).is_some_and(|e| cell.holds(e)))
            .map(|o| (partition, o))
            .collect()
    }
}

/// One cell of `card_minute`.
struct Cell {
    card: String,
    bucket: i64,
    slot: usize,
}

impl Cell {
    fn holds(&self, event: &Event) -> bool {
        event.time_ms >= self.bucket
            && event.time_ms < self.bucket + MINUTE
            && event.values.get(self.slot) == Some(&Value::Str(self.card.as_str().into()))
    }

    fn url(&self, base: &str) -> String {
        format!(
            "{base}/v1/lineage/card_minute?bucket={}&card_id={}",
            self.bucket, self.card
        )
    }
}

fn partition_of(name: &str) -> i32 {
    name.rsplit_once('/').unwrap().1.parse().unwrap()
}

/// The offsets of `partition` in `[from, to)` that `file` holds for the cell, read from the
/// Parquet file itself.
fn file_offsets(dir: &std::path::Path, file: &Json, cell: &Cell) -> BTreeSet<(i32, i64)> {
    use polars::prelude::*;
    let path = dir.join(file["path"].as_str().unwrap());
    let partition = partition_of(file["partition"].as_str().unwrap());
    let (from, to) = (file["from"].as_i64().unwrap(), file["to"].as_i64().unwrap());
    let df = ParquetReader::new(std::fs::File::open(&path).unwrap())
        .finish()
        .unwrap();
    let partitions = df.column("_partition").unwrap().i32().unwrap().clone();
    let offsets = df.column("_offset").unwrap().i64().unwrap().clone();
    let times = df.column("_event_time").unwrap().i64().unwrap().clone();
    let cards = df.column("card_id").unwrap().str().unwrap().clone();
    (0..df.height())
        .filter(|&row| {
            let offset = offsets.get(row).unwrap();
            let time = times.get(row).unwrap();
            partitions.get(row) == Some(partition)
                && (from..to).contains(&offset)
                && (cell.bucket..cell.bucket + MINUTE).contains(&time)
                // An undeclared field is archived as its JSON literal.
                && cards.get(row) == Some(format!("{:?}", cell.card).as_str())
        })
        .map(|row| (partition, offsets.get(row).unwrap()))
        .collect()
}

/// Checks a lineage answer: every listed file holds exactly the cell's events of its range,
/// the layers' and the speed layer's ranges do not overlap, and folding the cell's events of
/// exactly those ranges gives the value. Returns the answer.
fn check(base: &str, dir: &std::path::Path, config: &Config, log: &Log, cell: &Cell) -> Json {
    let (status, lineage) = get(&cell.url(base));
    assert_eq!(status, 200, "{lineage}");
    let mut offsets: BTreeSet<(i32, i64)> = BTreeSet::new();
    let mut ranges: Vec<(i32, i64, i64)> = Vec::new();
    if let Some(layers) = lineage["batch"]["layers"].as_array() {
        for layer in layers {
            let mut from_files = BTreeSet::new();
            for file in layer["files"].as_array().unwrap() {
                from_files.extend(file_offsets(dir, file, cell));
            }
            // The layer's ranges, re-read from the produced log: the files hold every event of
            // the cell in them.
            let mut expected = BTreeSet::new();
            for (name, to) in layer["to"].as_object().unwrap() {
                let from = layer["from"][name].as_i64().unwrap_or(0);
                let (p, to) = (partition_of(name), to.as_i64().unwrap());
                ranges.push((p, from, to));
                expected.extend(log.cell_offsets(cell, p, from, to));
            }
            assert_eq!(from_files, expected, "layer {}: {lineage}", layer["run_id"]);
            offsets.extend(from_files);
        }
    }
    for range in lineage["speed"]["ranges"].as_array().unwrap() {
        let p = partition_of(range["partition"].as_str().unwrap());
        let (from, to) = (
            range["from"].as_i64().unwrap(),
            range["to"].as_i64().unwrap(),
        );
        ranges.push((p, from, to));
        offsets.extend(log.cell_offsets(cell, p, from, to));
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        assert!(
            pair[0].0 != pair[1].0 || pair[0].2 <= pair[1].1,
            "overlapping ranges {pair:?}: {lineage}"
        );
    }
    let view = Arc::clone(config.view("card_minute").unwrap());
    let events: Vec<Event> = offsets
        .iter()
        .map(|&(p, o)| log.event(p, o).unwrap().clone())
        .collect();
    let folded = ViewState::recompute(Arc::clone(&view), &events);
    let (_, states) = folded.cells().next().expect("the cell has events");
    let expected: serde_json::Map<String, Json> = view
        .metrics
        .iter()
        .zip(states.iter())
        .map(|(m, s)| (m.name.clone(), s.finalize(&m.expr)))
        .collect();
    if let Err(difference) = same(&lineage["value"], &Json::Object(expected.clone()), "value") {
        panic!("{difference}\nfolded {expected:?}\nlineage {lineage}");
    }
    lineage
}

/// `count` events of the cell's card in its bucket, spread over the partitions.
fn cell_events(cell: &Cell, count: usize, tag: &str) -> Vec<braid_testkit::Produced> {
    (0..count)
        .map(|i| braid_testkit::Produced {
            partition: (i % PARTITIONS as usize) as i32,
            payload: format!(
                r#"{{"tx_id":"{tag}{i}","card_id":"{}","merchant_id":"m{i}","country":"DE","amount":{}.25,"ts":{}}}"#,
                cell.card,
                10 + i,
                cell.bucket + (i as i64 * 997) % MINUTE
            )
            .into_bytes(),
        })
        .collect()
}

/// Waits until compaction retired files in some partition's archive manifest.
fn wait_compacted(dir: &std::path::Path, topic: &str) {
    wait_for("the archive compacted", Duration::from_secs(30), || {
        (0..PARTITIONS).any(|p| {
            std::fs::read(dir.join(format!("archive/_manifest/{topic}/{p}.json")))
                .ok()
                .is_some_and(|bytes| {
                    serde_json::from_slice::<Json>(&bytes).unwrap()["retired"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty())
                })
        })
    });
}

/// Waits until every partition's archive manifest ends where the log does, so a batch run
/// covers every event produced so far (rounded down to the segment grid).
fn wait_archived(dir: &std::path::Path, topic: &str, log: &Log) {
    wait_for("every event archived", Duration::from_secs(60), || {
        (0..PARTITIONS).all(|p| {
            std::fs::read(dir.join(format!("archive/_manifest/{topic}/{p}.json")))
                .ok()
                .is_some_and(|bytes| {
                    let manifest = serde_json::from_slice::<Json>(&bytes).unwrap();
                    manifest["entries"]
                        .as_array()
                        .and_then(|entries| entries.last())
                        .and_then(|last| last["to"].as_i64())
                        == Some(log.partitions[p as usize].len() as i64)
                })
        })
    });
}

fn run_batch(base: &str) -> String {
    let (status, body) = post(&format!("{base}/v1/batch/runs"), "");
    assert_eq!(status, 202, "{body}");
    let run = body["run_id"].as_str().unwrap().to_owned();
    wait_for("the batch run", Duration::from_secs(60), || {
        get(&format!("{base}/v1/batch/runs/{run}")).1["state"] == "succeeded"
    });
    run
}

/// Waits until the merged answers hold every produced offset.
fn wait_consumed(base: &str, topic: &str, log: &Log) {
    wait_for("every event consumed", Duration::from_secs(60), || {
        let (_, answer) = get(&format!(
            "{base}/v1/views/card_minute?from=0&to=now%2B3650d&group_by=&limit=1"
        ));
        (0..PARTITIONS).all(|p| {
            answer["provenance"]["offsets"][format!("{topic}/{p}")].as_i64()
                == Some(log.partitions[p as usize].len() as i64)
        })
    });
}

#[test]
fn lineage_refolds_to_the_cell_from_speed_batch_and_both_across_swaps_and_compaction() {
    let world = fixture(PARTITIONS, "");
    let (bootstrap, topic, dir) = (world.cluster.bootstrap_servers(), &world.topic, &world.dir);
    let (path, config) = (&world.path, &world.config);
    let producer = producer(&bootstrap);
    let braid = Braid::start(path, free_port());
    let base = braid.base.clone();
    let mut log = Log::new();

    // Produced in chunks a flush apart, so the archive writes several small ranges per
    // partition, which compaction merges later.
    let messages = payments(4242, 2_400, PARTITIONS);
    for chunk in messages.chunks(400) {
        braid_testkit::produce(&producer, topic, chunk);
        log.push(config, chunk);
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_consumed(&base, topic, &log);

    // The busiest cell of the stream's early offsets, which the first batch run covers.
    let view = Arc::clone(config.view("card_minute").unwrap());
    let all: Vec<Event> = log
        .partitions
        .iter()
        .flat_map(|p| p.iter().take(400))
        .flatten()
        .cloned()
        .collect();
    let reference = ViewState::recompute(Arc::clone(&view), &all);
    let tx = view.metrics.iter().position(|m| m.name == "tx").unwrap();
    let (key, _) = reference
        .cells()
        .max_by_key(|(key, states)| {
            (
                states[tx].finalize(&view.metrics[tx].expr).as_i64(),
                key.bucket_ms,
            )
        })
        .unwrap();
    let slot = config.source("payments").unwrap().slot("card_id").unwrap();
    let Value::Str(card) = &key.group.0[0] else {
        panic!("card_id is a string")
    };
    let cell = Cell {
        card: card.to_string(),
        bucket: key.bucket_ms,
        slot,
    };

    // Speed only: no snapshot yet.
    let lineage = check(&base, dir.path(), config, &log, &cell);
    assert!(lineage["batch"].is_null(), "{lineage}");
    assert_eq!(lineage["speed"]["ranges"].as_array().unwrap().len(), 3);

    // Batch (almost) only: a run covers the archive, rounded down to the segment grid.
    wait_archived(dir.path(), topic, &log);
    let first = run_batch(&base);
    wait_for("the snapshot swapped in", Duration::from_secs(30), || {
        get(&cell.url(&base)).1["batch"]["run_id"] == first.as_str()
    });
    let lineage = check(&base, dir.path(), config, &log, &cell);
    let layers = lineage["batch"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{lineage}");
    assert!(
        !layers[0]["files"].as_array().unwrap().is_empty(),
        "{lineage}"
    );

    // Both: more events of the cell arrive after the run, then a second run adds a layer
    // (a snapshot swap), and still more arrive after it.
    let more = cell_events(&cell, 12, "late-a");
    braid_testkit::produce(&producer, topic, &more);
    log.push(config, &more);
    wait_consumed(&base, topic, &log);
    let lineage = check(&base, dir.path(), config, &log, &cell);
    assert!(
        lineage["speed"]["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["to"].as_i64() > r["from"].as_i64()),
        "{lineage}"
    );
    // Flushes apart, so the archive's small ranges reach the compaction threshold.
    for round in 0..4 {
        let chunk = cell_events(&cell, 3, &format!("late-b{round}-"));
        braid_testkit::produce(&producer, topic, &chunk);
        log.push(config, &chunk);
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_consumed(&base, topic, &log);
    wait_archived(dir.path(), topic, &log);
    let second = run_batch(&base);
    wait_for(
        "the second snapshot swapped in",
        Duration::from_secs(30),
        || get(&cell.url(&base)).1["batch"]["run_id"] == second.as_str(),
    );
    let lineage = check(&base, dir.path(), config, &log, &cell);
    assert_eq!(
        lineage["batch"]["layers"].as_array().unwrap().len(),
        2,
        "{lineage}"
    );

    // After compaction the lineage names the merged files, and still folds to the value.
    wait_compacted(dir.path(), topic);
    check(&base, dir.path(), config, &log, &cell);
    braid.stop();
}

#[test]
fn lineage_refuses_bad_cells_naming_the_parameter() {
    let world = fixture(1, "");
    let path = &world.path;
    let braid = Braid::start(path, free_port());
    let base = &braid.base;
    let long = "x".repeat(6_000);
    let cases: [(&str, u16, &str); 8] = [
        ("card_id=c1", 400, "bucket"),
        ("bucket=1789999980000", 400, "card_id"),
        ("bucket=1789999980001&card_id=c1", 400, "bucket"),
        ("bucket=yesterday&card_id=c1", 400, "bucket"),
        ("bucket=1789999980000&card_id=c1&limit=3", 400, "limit"),
        ("bucket=1789999980000&card_id=c1&country=DE", 400, "country"),
        ("bucket=1789999980000&card_id=%00%1b%5B31m", 404, "no event"),
        ("bucket=1789999980000&card_id=c1", 404, "no event"),
    ];
    for (query, status, mentions) in cases {
        let (got, body) = get(&format!("{base}/v1/lineage/card_minute?{query}"));
        assert_eq!(got, status, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{query}: {message}");
    }
    let (got, body) = get(&format!(
        "{base}/v1/lineage/card_minute?bucket=0&card_id={long}"
    ));
    assert_eq!(got, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().len() < 1_000);
    let (got, body) = get(&format!("{base}/v1/lineage/{long}?bucket=0"));
    assert_eq!(got, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().len() < 1_000);
    braid.stop();
}

/// Files under `dir`, recursively, with their sizes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), entry.metadata().map_or(0, |m| m.len())));
            }
        }
    }
    out.sort();
    out
}

fn sql(base: &str, query: &str) -> (u16, Json) {
    post(
        &format!("{base}/v1/sql"),
        &serde_json::json!({ "sql": query }).to_string(),
    )
}

#[test]
fn sql_answers_equal_the_reference_and_refuses_all_but_one_read_only_query() {
    let world = fixture(PARTITIONS, "");
    let (bootstrap, topic, dir) = (world.cluster.bootstrap_servers(), &world.topic, &world.dir);
    let (path, config) = (&world.path, &world.config);
    let text = std::fs::read_to_string(path).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nsql_timeout = \"1s\"\nmax_rows = 5000",
    );
    std::fs::write(path, text).unwrap();
    let braid = Braid::start(path, free_port());
    let base = braid.base.clone();
    let messages = payments(99, 3_000, PARTITIONS);
    braid_testkit::produce(&producer(&bootstrap), topic, &messages);
    let mut log = Log::new();
    log.push(config, &messages);
    wait_consumed(&base, topic, &log);
    run_batch(&base);

    // The archive, as SQL sees it, ends where the topic does.
    wait_for(
        "the archive holds every event",
        Duration::from_secs(30),
        || {
            let (status, answer) = sql(
                &base,
                "SELECT _partition, max(_offset) + 1 AS next FROM events_payments GROUP BY 1 ORDER BY 1",
            );
            status == 200
                && answer["rows"].as_array().unwrap().iter().all(|row| {
                    row[1].as_i64()
                        == Some(log.partitions[row[0].as_i64().unwrap() as usize].len() as i64)
                })
                && answer["rows"].as_array().unwrap().len() == PARTITIONS as usize
        },
    );
    let valid: Vec<&Event> = log.partitions.iter().flatten().flatten().collect();
    let amount = config.source("payments").unwrap().slot("amount").unwrap();
    let total: f64 = valid.iter().filter_map(|e| e.values[amount].as_f64()).sum();
    let (status, answer) = sql(
        &base,
        "SELECT count(*) AS n, sum(amount::DOUBLE) AS amount, min(_event_time) AS first FROM events_payments",
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["columns"][0],
        serde_json::json!({"name": "n", "type": "BIGINT"})
    );
    assert_eq!(answer["columns"][2]["type"], "TIMESTAMP");
    assert_eq!(
        answer["rows"][0][0].as_u64(),
        Some(valid.len() as u64),
        "{answer}"
    );
    let got = answer["rows"][0][1].as_f64().unwrap();
    assert!(
        (got - total).abs() <= 1e-9 * total.abs(),
        "{got} != {total}"
    );
    assert_eq!(answer["truncated"], false);
    assert!(answer["elapsed_ms"].is_u64());

    // view_<name> holds the merged cells: the same numbers as GET /v1/views.
    let (status, answer) = sql(
        &base,
        "SELECT card_id, sum(tx) AS tx, sum(amount) AS amount, max(high) AS high FROM view_card_minute GROUP BY card_id ORDER BY card_id",
    );
    assert_eq!(status, 200, "{answer}");
    let (_, rows) = get(&format!(
        "{base}/v1/views/card_minute?from=0&to=now%2B3650d&order_by=tx&limit=5000"
    ));
    let mut by_card: std::collections::BTreeMap<String, &Json> = std::collections::BTreeMap::new();
    for row in rows["rows"].as_array().unwrap() {
        by_card.insert(row["card_id"].as_str().unwrap().to_owned(), row);
    }
    let got = answer["rows"].as_array().unwrap();
    assert_eq!(got.len(), by_card.len(), "{answer}");
    for row in got {
        let expected = by_card[row[0].as_str().unwrap()];
        assert_eq!(row[1], expected["tx"], "{row:?} vs {expected}");
        same(&row[2], &expected["amount"], "amount").unwrap();
        same(&row[3], &expected["high"], "high").unwrap();
    }

    // rejected_<source>: every malformed message once.
    let rejected = log
        .partitions
        .iter()
        .flatten()
        .filter(|e| e.is_none())
        .count();
    wait_for("every rejection listed", Duration::from_secs(10), || {
        let (_, answer) = sql(
            &base,
            "SELECT count(*), count(DISTINCT (partition, \"offset\")) FROM rejected_payments",
        );
        answer["rows"][0][0].as_u64() == Some(rejected as u64)
            && answer["rows"][0][1].as_u64() == Some(rejected as u64)
    });

    // Results beyond serve.max_rows are cut, in the query's own order.
    let (status, answer) = sql(&base, "SELECT range AS i FROM range(20000) ORDER BY i DESC");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["truncated"], true);
    assert_eq!(answer["rows"].as_array().unwrap().len(), 5000);
    assert_eq!(answer["rows"][0][0], 19999);
    assert_eq!(answer["rows"][4999][0], 15000);
    let (_, answer) = sql(&base, "WITH t AS (SELECT 1 AS x) SELECT x FROM t; ");
    assert_eq!(answer["rows"], serde_json::json!([[1]]), "{answer}");

    // Nothing but one read-only query over Braid's tables; nothing written anywhere.
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("out.csv");
    let before = files_under(dir.path());
    let refused = [
        "INSERT INTO view_card_minute SELECT * FROM view_card_minute".to_owned(),
        "UPDATE view_card_minute SET tx = 0".to_owned(),
        "DELETE FROM view_card_minute".to_owned(),
        "CREATE TABLE t AS SELECT 1".to_owned(),
        "DROP TABLE view_card_minute".to_owned(),
        format!("COPY (SELECT 1) TO '{}'", target.display()),
        format!(
            "COPY view_card_minute TO '{}' (FORMAT parquet)",
            target.display()
        ),
        format!("EXPORT DATABASE '{}'", scratch.path().display()),
        format!(
            "ATTACH '{}' AS other",
            scratch.path().join("x.db").display()
        ),
        "INSTALL httpfs".to_owned(),
        "LOAD httpfs".to_owned(),
        "SET threads = 1".to_owned(),
        "SET enable_external_access = true".to_owned(),
        "PRAGMA database_list".to_owned(),
        "CALL pragma_version()".to_owned(),
        "SELECT 1; SELECT 2".to_owned(),
        "SELECT 1; DROP TABLE view_card_minute".to_owned(),
        "SELECT * FROM read_csv('/etc/passwd')".to_owned(),
        "SELECT * FROM read_text('/etc/hostname')".to_owned(),
        "SELECT * FROM read_parquet('archive/**/*.parquet')".to_owned(),
        "SELECT * FROM '/etc/passwd'".to_owned(),
        "SELECT * FROM 'https://example.com/data.parquet'".to_owned(),
        "SELECT * FROM glob('/*')".to_owned(),
        "SELECT getenv('HOME')".to_owned(),
        "SELECT current_setting('allowed_directories')".to_owned(),
        "SELECT * FROM duckdb_settings()".to_owned(),
        "SELECT * FROM information_schema.tables".to_owned(),
        "SELECT * FROM events_nosuch".to_owned(),
    ];
    for statement in &refused {
        let (status, answer) = sql(&base, statement);
        assert_eq!(status, 400, "{statement}: {answer}");
        assert_eq!(
            answer["error"]["code"], "sql_refused",
            "{statement}: {answer}"
        );
    }
    assert!(!target.exists());
    assert!(files_under(scratch.path()).is_empty());
    // The layers keep writing their own files; nothing else appears in the storage dir.
    let layers = ["archive", "batch", "speed"].map(|d| dir.path().join(d));
    for (path, _) in files_under(dir.path()) {
        assert!(
            before.iter().any(|(b, _)| *b == path) || layers.iter().any(|l| path.starts_with(l)),
            "new file {}",
            path.display()
        );
    }

    // Bad bodies and failing queries: 400 naming the problem, never the storage path.
    let root = dir.path().to_string_lossy().into_owned();
    let bad: [(&str, u16, &str); 7] = [
        ("not json", 400, "body"),
        ("{}", 400, "sql"),
        (r#"{"sql": "SELECT 1", "extra": 1}"#, 400, "extra"),
        (r#"{"sql": "   "}"#, 400, "empty"),
        (r#"{"sql": 42}"#, 400, "body"),
        (
            r#"{"sql": "SELECT nope FROM view_card_minute"}"#,
            400,
            "nope",
        ),
        (r#"{"sql": "SELECT \u0000\u001b[31m"}"#, 400, ""),
    ];
    for (body, status, mentions) in bad {
        let (got, answer) = post(&format!("{base}/v1/sql"), body);
        assert_eq!(got, status, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{body}: {message}");
        assert!(!message.contains(&root), "{body}: {message}");
    }
    let long = format!("SELECT '{}'", "x".repeat(20_000));
    let (got, answer) = sql(&base, &long);
    assert_eq!(got, 400, "{answer}");
    let (got, _) = sql(&base, &format!("SELECT '{}'", "x".repeat(100_000)));
    assert_eq!(got, 413);

    // A query past serve.sql_timeout (1s) is interrupted: 408 well within the time limit, and
    // the engine answers the next query.
    let started = std::time::Instant::now();
    let (status, answer) = sql(
        &base,
        "SELECT sum(a.range * b.range) FROM range(200000) a, range(200000) b",
    );
    assert_eq!(status, 408, "{answer}");
    assert_eq!(answer["error"]["code"], "sql_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    wait_for(
        "the SQL slot is free again",
        Duration::from_secs(10),
        || sql(&base, "SELECT 42").1["rows"] == serde_json::json!([[42]]),
    );
    braid.stop();
}

/// Records where each produced message landed, from the producer's delivery reports.
struct Reports(std::sync::Mutex<Vec<(i32, i64, Vec<u8>)>>);

impl rdkafka::ClientContext for Reports {}

impl rdkafka::producer::ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, report: &rdkafka::message::DeliveryResult<'_>, (): ()) {
        use rdkafka::Message as _;
        let message = report.as_ref().expect("delivered");
        self.0.lock().unwrap().push((
            message.partition(),
            message.offset(),
            message.payload().unwrap_or_default().to_vec(),
        ));
    }
}

/// Every page of `/v1/events` from the start: (partition, offset, archived) in listed order.
fn all_pages(base: &str, limit: usize) -> Vec<(i32, i64, bool)> {
    filtered_pages(base, "", limit)
}

/// Every page of `/v1/events` with extra parameters `filter` (`&field=value...`).
fn filtered_pages(base: &str, filter: &str, limit: usize) -> Vec<(i32, i64, bool)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = format!(
            "{base}/v1/events/payments?from=0&to=now%2B3650d{filter}&limit={limit}{}",
            cursor
                .as_ref()
                .map(|c| format!("&cursor={c}"))
                .unwrap_or_default()
        );
        let (status, page) = get(&url);
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= limit);
        for event in events {
            out.push((
                partition_of(event["partition"].as_str().unwrap()),
                event["offset"].as_i64().unwrap(),
                event["archived"].as_bool().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(events.is_empty(), "{page}");
                return out;
            }
        }
    }
}

#[test]
fn event_pages_list_each_delivered_event_once_while_the_archiver_flushes_and_compacts() {
    use rdkafka::producer::{BaseRecord, Producer as _};
    let world = fixture(PARTITIONS, "");
    let (bootstrap, topic, dir) = (world.cluster.bootstrap_servers(), &world.topic, &world.dir);
    let (path, config) = (&world.path, &world.config);
    let braid = Braid::start(path, free_port());
    let base = braid.base.clone();
    let producer: rdkafka::producer::BaseProducer<Reports> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create_with_context(Reports(std::sync::Mutex::new(Vec::new())))
        .unwrap();
    let reports = producer.context();
    let messages = payments(7, 3_000, PARTITIONS);
    let decoder = braid_shared::Decoder::new(config.source("payments").unwrap());
    let delivered_events = |reports: &Reports| -> BTreeSet<(i32, i64)> {
        reports
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, payload)| decoder.decode(payload).is_ok())
            .map(|(p, o, _)| (*p, *o))
            .collect()
    };
    let check_pass = |pass: &[(i32, i64, bool)]| {
        for pair in pass.windows(2) {
            assert!(
                (pair[0].0, pair[0].1) < (pair[1].0, pair[1].1),
                "out of order or repeated: {pair:?}"
            );
        }
    };
    let mut passes = 0;
    let mut both = false;
    for chunk in messages.chunks(250) {
        for message in chunk {
            producer
                .send(
                    BaseRecord::<(), [u8], ()>::to(topic)
                        .partition(message.partition)
                        .payload(&message.payload),
                )
                .unwrap();
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        // A full pass while events keep arriving: every event delivered before it began is
        // listed, once, in order.
        let before = delivered_events(reports);
        let pass = all_pages(&base, 97);
        check_pass(&pass);
        let listed: BTreeSet<(i32, i64)> = pass.iter().map(|(p, o, _)| (*p, *o)).collect();
        assert!(
            before.is_subset(&listed),
            "missing {:?}",
            before.difference(&listed).take(5).collect::<Vec<_>>()
        );
        both |= pass.iter().any(|e| e.2) && pass.iter().any(|e| !e.2);
        passes += 1;
    }
    assert!(passes >= 12);
    assert!(both, "no pass mixed archived and not-yet-archived events");
    // Once the archive has everything and compacted, a pass lists exactly the delivered events,
    // all from the archive.
    wait_compacted(dir.path(), topic);
    let delivered = delivered_events(reports);
    wait_for("every event archived", Duration::from_secs(30), || {
        let pass = all_pages(&base, 500);
        check_pass(&pass);
        let listed: BTreeSet<(i32, i64)> = pass.iter().map(|(p, o, _)| (*p, *o)).collect();
        assert_eq!(listed.len(), pass.len());
        assert_eq!(listed, delivered);
        pass.iter().all(|e| e.2)
    });

    // Filters and nasty parameters.
    let card = "card-7";
    let (status, page) = get(&format!(
        "{base}/v1/events/payments?from=0&to=now%2B3650d&card_id={card}&limit=1000"
    ));
    assert_eq!(status, 200, "{page}");
    let expected = reports
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, payload)| {
            decoder.decode(payload).is_ok_and(|e| {
                e.values[config.source("payments").unwrap().slot("card_id").unwrap()]
                    == Value::Str(card.into())
            })
        })
        .count();
    assert_eq!(page["events"].as_array().unwrap().len(), expected);
    assert!(
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["event"]["card_id"] == card)
    );
    // The same events in pages of 3: a key's events are sparse, so each page reads the
    // archive in growing windows of offsets.
    let small = filtered_pages(&base, &format!("&card_id={card}"), 3);
    let first: Vec<(i32, i64, bool)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                partition_of(e["partition"].as_str().unwrap()),
                e["offset"].as_i64().unwrap(),
                e["archived"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(first.len() > 6, "{} events of {card}", first.len());
    assert_eq!(small, first);
    let long = "y".repeat(6_000);
    for (query, status, mentions) in [
        ("to=now".to_owned(), 400, "from"),
        ("from=0&to=now&nosuch=1".to_owned(), 400, "nosuch"),
        ("from=0&to=now&limit=0".to_owned(), 400, "limit"),
        ("from=0&to=now&limit=100000000".to_owned(), 400, "limit"),
        ("from=0&to=now&cursor=zz".to_owned(), 400, "cursor"),
        (
            format!("from=0&to=now&cursor={}", hex_of("rejected.v1:0:5")),
            400,
            "cursor",
        ),
        ("from=5&to=1".to_owned(), 400, "before"),
        (format!("from=0&to=now&card_id={long}%00%1b"), 200, ""),
    ] {
        let (got, body) = get(&format!("{base}/v1/events/payments?{query}"));
        assert_eq!(got, status, "{query}: {body}");
        if status == 400 {
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(mentions),
                "{query}: {body}"
            );
        }
    }
    let (got, _) = get(&format!("{base}/v1/events/{long}?from=0&to=now"));
    assert_eq!(got, 404);
    braid.stop();
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn as_of_answers_equal_the_remembered_ones_after_more_events_and_two_batch_runs() {
    let world = fixture(PARTITIONS, "");
    let (bootstrap, topic) = (world.cluster.bootstrap_servers(), &world.topic);
    let (path, config) = (&world.path, &world.config);
    let braid = Braid::start(path, free_port());
    let base = braid.base.clone();
    let producer = producer(&bootstrap);
    let messages = payments(31, 4_000, PARTITIONS);
    let (early, late) = messages.split_at(2_000);
    braid_testkit::produce(&producer, topic, early);
    let mut log = Log::new();
    log.push(config, early);
    wait_consumed(&base, topic, &log);

    // Answers a dashboard showed, remembered with their provenance.
    let range = "from=1789990000000&to=1790010000000";
    let queries = [
        format!("card_minute?{range}&step=10m&card_id=card-7"),
        format!("card_minute?{range}&group_by="),
        format!("card_minute?{range}&order_by=amount&limit=5"),
        format!("country_hour?{range}&step=1h"),
    ];
    let remembered: Vec<(String, Json)> = queries
        .iter()
        .map(|q| {
            let (status, answer) = get(&format!("{base}/v1/views/{q}"));
            assert_eq!(status, 200, "{answer}");
            assert!(
                !answer["rows"].as_array().unwrap().is_empty(),
                "{q}: {answer}"
            );
            (q.clone(), answer)
        })
        .collect();
    let as_of = |answer: &Json| -> String {
        answer["provenance"]["offsets"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(tp, o)| format!("{tp}:{o}"))
            .collect::<Vec<_>>()
            .join(",")
    };

    // Past the archive's end: 409 naming the partition.
    let (status, body) = get(&format!(
        "{base}/v1/views/{}&as_of={topic}/1:99999999",
        queries[0]
    ));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_archived");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{topic}/1"))
    );

    // More events and two batch runs later ...
    braid_testkit::produce(&producer, topic, late);
    log.push(config, late);
    wait_consumed(&base, topic, &log);
    run_batch(&base);
    run_batch(&base);
    for (query, answer) in &remembered {
        let url = format!("{base}/v1/views/{query}&as_of={}", as_of(answer));
        let mut again = Json::Null;
        wait_for(
            "the archive reached the remembered offsets",
            Duration::from_secs(30),
            || {
                let (status, body) = get(&url);
                assert!(status == 200 || status == 409, "{status}: {body}");
                again = body;
                status == 200
            },
        );
        // ... the remembered answer, row for row.
        if let Err(difference) = same(&again["rows"], &answer["rows"], "rows") {
            panic!(
                "{query}: {difference}\n now   {}\n then  {}",
                again["rows"], answer["rows"]
            );
        }
        assert_eq!(again["total_rows"], answer["total_rows"]);
        assert_eq!(
            again["provenance"]["offsets"],
            answer["provenance"]["offsets"]
        );
        // And the live answer has moved on.
        let (_, live) = get(&format!("{base}/v1/views/{query}"));
        assert_ne!(
            live["provenance"]["offsets"],
            answer["provenance"]["offsets"]
        );
    }

    for bad in [
        "",
        "nonsense",
        "other/0:5",
        &format!("{topic}/x:5"),
        &format!("{topic}/0:-1"),
        &format!("{topic}/0:1,{topic}/0:2"),
    ] {
        let (status, body) = get(&format!("{base}/v1/views/{}&as_of={bad}", queries[0]));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("as_of"),
            "{body}"
        );
    }
    braid.stop();
}
