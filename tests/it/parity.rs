//! The golden parity suite: fixture events in (tests/fixtures/parity), expected view rows out,
//! through the batch path (archiver + Polars recompute + snapshot), the speed path, the merged
//! HTTP path (`GET /v1/views/{view}` over batch ⊕ speed) and the shared reference, all equal to
//! the golden rows. Late, out-of-order, malformed, null-keyed
//! and pre-1970 events are in the fixture. `BRAID_UPDATE_GOLDEN=1` rewrites the golden file
//! from the reference (review the diff before committing it).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use braid_batch::{Archiver, BatchRunner, RunState, Trigger};
use braid_shared::{
    CellQuery, Config, Coverage, Decoder, PartitionStatus, SpeedReader, TopicPartition, ViewState,
};
use braid_speed::SpeedLayer;
use braid_store::LocalStorage;
use braid_store::manifest::SnapshotManifest;
use braid_store::pointer::read_pointer;
use braid_testkit::{Produced, cluster, produce, producer, unique, wait_for};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

const FIXTURE: &str = "tests/fixtures/parity";
const PARTITIONS: i32 = 2;

/// Rows as JSON, ordered by bucket and group.
fn rows(state: &ViewState) -> Json {
    serde_json::to_value(state.rows()).unwrap()
}

/// Equal, numbers to 1e-9 relative.
fn close(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
            }
        },
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

fn assert_rows(path: &str, view: &str, got: &Json, golden: &Json) {
    assert!(
        close(got, golden),
        "{path} rows of {view} differ from the golden rows:\n got: {}\nwant: {}",
        serde_json::to_string_pretty(got).unwrap(),
        serde_json::to_string_pretty(golden).unwrap()
    );
}

#[test]
fn batch_speed_and_reference_equal_the_golden_rows() {
    let cluster = cluster(1);
    let topic = unique("parity");
    cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::fs::read_to_string(Path::new(FIXTURE).join("braid.toml")).unwrap();
    let text = format!(
        "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\n[kafka.config]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n\n[storage]\ndir = \"{}\"\n\n[serve]\nlisten = \"127.0.0.1:0\"\n\n{}",
        cluster.bootstrap_servers(),
        unique("group"),
        dir.path().display(),
        fixture.replace("topic = \"parity\"", &format!("topic = \"{topic}\""))
    );
    let config = Config::from_toml(&text).unwrap();

    let lines = std::fs::read_to_string(Path::new(FIXTURE).join("events.jsonl")).unwrap();
    let messages: Vec<Produced> = lines
        .lines()
        .enumerate()
        .map(|(i, line)| Produced {
            partition: i as i32 % PARTITIONS,
            payload: line.as_bytes().to_vec(),
        })
        .collect();
    produce(&producer(&cluster.bootstrap_servers()), &topic, &messages);
    let counts: Vec<i64> = (0..PARTITIONS)
        .map(|p| messages.iter().filter(|m| m.partition == p).count() as i64)
        .collect();
    let caught_up = |positions: &std::collections::BTreeMap<TopicPartition, i64>| {
        counts.iter().enumerate().all(|(p, &n)| {
            positions
                .get(&TopicPartition::new(topic.clone(), p as i32))
                .copied()
                .unwrap_or(-1)
                >= n
        })
    };

    let cancel = CancellationToken::new();
    let speed = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let archiver = Archiver::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_for(
        "speed and archive to catch up",
        Duration::from_secs(60),
        || caught_up(&speed.handle().positions()) && caught_up(&archiver.handle().archived()),
    );
    // Read the speed layer before publishing a snapshot: it drops what a snapshot covers.
    let speed_rows: Vec<Json> = config
        .views
        .iter()
        .map(|view| {
            rows(
                &speed
                    .handle()
                    .read(&view.name, &CellQuery::all(), &Coverage::default())
                    .unwrap()
                    .state,
            )
        })
        .collect();
    for (view, speed_rows) in config.views.iter().zip(&speed_rows) {
        for (how, got) in through_speed_endpoint(&config, speed.handle(), &view.name) {
            assert_rows(how, &view.name, &got, speed_rows);
        }
    }
    let record = BatchRunner::new(&config, braid_store::open(&config.storage).unwrap())
        .unwrap()
        .run(Trigger::Command, true, &CancellationToken::new())
        .unwrap();
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    let storage = LocalStorage::new(dir.path());
    let pointer = read_pointer(&storage).unwrap().unwrap();
    assert!(
        caught_up(&pointer.coverage.0),
        "the snapshot covers every event: {:?}",
        pointer.coverage
    );
    let manifest = SnapshotManifest::read(&storage, &pointer.manifest).unwrap();

    let decoder = Decoder::new(&config.sources[0]);
    let events: Vec<_> = messages
        .iter()
        .filter_map(|m| decoder.decode(&m.payload).ok())
        .collect();
    let golden_path = Path::new(FIXTURE).join("expected.json");
    let mut golden: serde_json::Map<String, Json> =
        if std::env::var_os("BRAID_UPDATE_GOLDEN").is_some() {
            serde_json::Map::new()
        } else {
            serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap()
        };
    let update = golden.is_empty();
    let merged_rows = merged_http_rows(&config, speed.handle());
    for (view, speed_rows) in config.views.iter().zip(&speed_rows) {
        let reference = rows(&ViewState::recompute(Arc::clone(view), &events));
        if update {
            golden.insert(view.name.clone(), reference.clone());
        }
        let want = &golden[&view.name];
        assert!(
            want.as_array().is_some_and(|r| r.len() > 1),
            "{} has golden rows",
            view.name
        );
        assert_rows("reference", &view.name, &reference, want);

        let source = config.source(&view.source).unwrap();
        let batch = braid_columnar::snapshot::read_view(&storage, &manifest, view, source)
            .unwrap()
            .unwrap();
        assert_rows("batch", &view.name, &rows(&batch), want);
        assert_rows("speed", &view.name, speed_rows, want);
        assert_rows(
            "merged HTTP",
            &view.name,
            &merged_rows[&view.name],
            &as_http_rows(want),
        );
    }
    if update {
        std::fs::write(
            &golden_path,
            serde_json::to_string_pretty(&golden).unwrap() + "\n",
        )
        .unwrap();
    }
    cancel.cancel();
    speed.join().unwrap();
    archiver.join().unwrap();
}

/// The speed layer's cells of `view` above no coverage, served on a speed endpoint and read by
/// a serving tier's reader (`serve.speed_peers`) each way it can be: awaited on the caller's
/// runtime, and blocking from a thread outside any runtime and from inside one.
fn through_speed_endpoint(
    config: &Config,
    speed: braid_speed::SpeedHandle,
    view: &str,
) -> Vec<(&'static str, Json)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let listen = "127.0.0.1:0".parse().unwrap();
    let held = speed.status();
    let (addr, server) = runtime
        .block_on(braid_speed::serve_endpoint(
            listen,
            config,
            speed,
            cancel.clone(),
        ))
        .unwrap();
    let mut serving = config.clone();
    serving.serve.speed_peers = vec![addr.to_string()];
    let remote = braid_speed::RemoteSpeed::new(Arc::new(serving));
    let (all, none) = (CellQuery::all(), Coverage::default());
    let complete = |cells: braid_shared::coverage::SpeedCells, how: &'static str| {
        assert!(
            cells.missing.is_empty(),
            "{how}: {:?} missing",
            cells.missing
        );
        assert_eq!(cells.partitions.len(), PARTITIONS as usize, "{how}");
        (how, rows(&cells.state))
    };
    let awaited = runtime.block_on(async {
        remote
            .read_async(view, &all, &none)
            .expect("a remote reader reads asynchronously")
            .await
            .unwrap()
    });
    let outside = remote.read(view, &all, &none).unwrap();
    let positions = |statuses: &std::collections::BTreeMap<TopicPartition, PartitionStatus>| {
        statuses
            .iter()
            .map(|(tp, s)| (tp.clone(), s.position))
            .collect::<Vec<_>>()
    };
    assert_eq!(positions(&remote.status()), positions(&held));
    assert_eq!(held.len(), PARTITIONS as usize);
    let inside = runtime.block_on(async { remote.read(view, &all, &none).unwrap() });
    // A serving tier whose source reads another topic (a peer list naming another
    // deployment's speed instance, whose views have the same names) merges none of its cells.
    let mut elsewhere = config.clone();
    elsewhere.serve.speed_peers = vec![addr.to_string()];
    for source in &mut elsewhere.sources {
        Arc::make_mut(source).topic = unique("another-topic");
    }
    let foreign = braid_speed::RemoteSpeed::new(Arc::new(elsewhere))
        .read(view, &all, &none)
        .unwrap();
    assert!(foreign.partitions.is_empty(), "{:?}", foreign.partitions);
    assert_eq!(
        foreign.state.cells().count(),
        0,
        "cells of another topic were merged"
    );
    // A client that stalls halfway through a request (a serving instance paused mid-send) does
    // not keep the endpoint from stopping: requests in flight get a few seconds.
    let mut idle = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut idle, b"POST /cells HTTP/1.1\r\nhost: x\r\n").unwrap();
    cancel.cancel();
    let stopped =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), server).await });
    assert!(
        stopped.is_ok(),
        "the speed endpoint did not stop with an idle connection open"
    );
    stopped.unwrap().unwrap().unwrap();
    drop(idle);
    vec![
        complete(awaited, "speed endpoint, awaited"),
        complete(outside, "speed endpoint, blocking outside a runtime"),
        complete(inside, "speed endpoint, blocking inside a runtime"),
    ]
}

/// Every view's rows as the API answers them over all time, one bucket per row, from a server
/// merging the published snapshot with the speed layer.
fn merged_http_rows(
    config: &Config,
    speed: braid_speed::SpeedHandle,
) -> std::collections::BTreeMap<String, Json> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let backends = braid_serving::Backends {
        speed: Some(Arc::new(speed)),
        ..Default::default()
    };
    let storage = braid_store::open(&config.storage).unwrap();
    let server = runtime
        .block_on(async {
            let listener = braid_serving::bind(config.serve.listen).await?;
            let config = Arc::new(config.clone());
            braid_serving::Server::start(config, storage, backends, listener, cancel.clone()).await
        })
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut merged = std::collections::BTreeMap::new();
    for view in &config.views {
        let step = view.granularity_ms / 1000;
        let url = format!(
            "http://{}/v1/views/{}?from=-10000000000000&to=10000000000000&step={step}s",
            server.addr(),
            view.name
        );
        let answer: Json = agent
            .get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        assert!(
            answer["provenance"]["batch"]["run_id"].is_string(),
            "{answer}"
        );
        merged.insert(view.name.clone(), answer["rows"].clone());
    }
    cancel.cancel();
    runtime.block_on(server.join()).unwrap();
    merged
}

/// Golden rows (`{bucket_ms, group: [[name, {"Str": v}]], metrics: [[name, v]]}`) in the API's
/// shape (`{bucket, <field>: v, <metric>: v}`).
fn as_http_rows(golden: &Json) -> Json {
    let rows = golden.as_array().unwrap().iter().map(|row| {
        let mut out = serde_json::Map::new();
        let bucket = chrono::DateTime::from_timestamp_millis(row["bucket_ms"].as_i64().unwrap())
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        out.insert("bucket".into(), bucket.into());
        for pair in row["group"].as_array().unwrap() {
            let value = match &pair[1] {
                Json::Object(tagged) => tagged.values().next().cloned().unwrap_or(Json::Null),
                _ => Json::Null,
            };
            out.insert(pair[0].as_str().unwrap().to_owned(), value);
        }
        for pair in row["metrics"].as_array().unwrap() {
            out.insert(pair[0].as_str().unwrap().to_owned(), pair[1].clone());
        }
        Json::Object(out)
    });
    Json::Array(rows.collect())
}
