//! The audit trail, end to end with `braid run` on librdkafka's mock cluster: a cell's lineage
//! names exactly the archive files and offset ranges (and the speed layer's ranges) whose events
//! fold into its value, whether the cell is fed by the speed layer only, by the batch layer only
//! or by both, across a snapshot swap and after the archive compacted the files it names.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use braid_shared::{Config, Event, Value, ViewState};
use braid_testkit::{by_partition, cluster, payments, producer, unique, wait_for};
use common::{Braid, free_port, get, post, same};
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
    let cluster = cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique("payments");
    cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, config) =
        braid_testkit::config(&bootstrap, &topic, &unique("group"), dir.path(), "");
    let producer = producer(&bootstrap);
    let braid = Braid::start(&path, free_port());
    let base = braid.base.clone();
    let mut log = Log::new();

    // Produced in chunks a flush apart, so the archive writes several small ranges per
    // partition, which compaction merges later.
    let messages = payments(4242, 2_400, PARTITIONS);
    for chunk in messages.chunks(400) {
        braid_testkit::produce(&producer, &topic, chunk);
        log.push(&config, chunk);
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_consumed(&base, &topic, &log);

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
    let lineage = check(&base, dir.path(), &config, &log, &cell);
    assert!(lineage["batch"].is_null(), "{lineage}");
    assert_eq!(lineage["speed"]["ranges"].as_array().unwrap().len(), 3);

    // Batch (almost) only: a run covers the archive, rounded down to the segment grid.
    let first = run_batch(&base);
    wait_for("the snapshot swapped in", Duration::from_secs(30), || {
        get(&cell.url(&base)).1["batch"]["run_id"] == first.as_str()
    });
    let lineage = check(&base, dir.path(), &config, &log, &cell);
    let layers = lineage["batch"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{lineage}");
    assert!(
        !layers[0]["files"].as_array().unwrap().is_empty(),
        "{lineage}"
    );

    // Both: more events of the cell arrive after the run, then a second run adds a layer
    // (a snapshot swap), and still more arrive after it.
    let more = cell_events(&cell, 12, "late-a");
    braid_testkit::produce(&producer, &topic, &more);
    log.push(&config, &more);
    wait_consumed(&base, &topic, &log);
    let lineage = check(&base, dir.path(), &config, &log, &cell);
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
        braid_testkit::produce(&producer, &topic, &chunk);
        log.push(&config, &chunk);
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_consumed(&base, &topic, &log);
    let second = run_batch(&base);
    wait_for(
        "the second snapshot swapped in",
        Duration::from_secs(30),
        || get(&cell.url(&base)).1["batch"]["run_id"] == second.as_str(),
    );
    let lineage = check(&base, dir.path(), &config, &log, &cell);
    assert_eq!(
        lineage["batch"]["layers"].as_array().unwrap().len(),
        2,
        "{lineage}"
    );

    // After compaction the lineage names the merged files, and still folds to the value.
    let compacted = || {
        (0..PARTITIONS).any(|p| {
            let manifest = dir
                .path()
                .join(format!("archive/_manifest/{topic}/{p}.json"));
            std::fs::read(manifest).ok().is_some_and(|bytes| {
                let manifest: Json = serde_json::from_slice(&bytes).unwrap();
                manifest["retired"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            })
        })
    };
    wait_for("the archive compacted", Duration::from_secs(30), compacted);
    check(&base, dir.path(), &config, &log, &cell);
    braid.stop();
}

#[test]
fn lineage_refuses_bad_cells_naming_the_parameter() {
    let cluster = cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique("payments");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = braid_testkit::config(&bootstrap, &topic, &unique("group"), dir.path(), "");
    let braid = Braid::start(&path, free_port());
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
